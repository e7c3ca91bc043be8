//! The settings of a check target and their names: as the command line names them
//! (`--port`) and as the agent's config file does (`[hub] ports`). Errors name a
//! setting through [`Setting`], so the same error reads right wherever the value
//! came from, without rewriting its text.

/// A setting of the check target, as the command line names it (`--port`) or as
/// the agent's config file does (`[hub] ports`). Errors name settings through it, so
/// one error reads right wherever the value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// The hub host.
    Host,
    /// The endpoints to probe.
    Endpoints,
    /// Port overrides.
    Ports,
    /// The DNS server.
    DnsServer,
    /// The source address.
    SourceIp,
    /// The network interface.
    Interface,
    /// The per-phase timeout.
    Timeout,
    /// The whole run's deadline.
    Deadline,
    /// The MQTT keep-alive.
    Keepalive,
    /// A ready SAS token.
    SasToken,
    /// The generated tokens' lifetime.
    SasTtl,
    /// A pinned token expiry.
    SasExpiry,
    /// The device id.
    DeviceId,
    /// The MQTT user name.
    Username,
    /// The MQTT password file.
    PasswordFile,
    /// The device certificate.
    Cert,
    /// The device certificate's key.
    Key,
    /// The connection string.
    ConnectionString,
    /// The connection string file.
    ConnectionStringFile,
    /// Extra trust anchors.
    CaFile,
    /// The hub profile.
    Profile,
}

impl Setting {
    /// The command-line name.
    pub fn flag(self) -> &'static str {
        match self {
            Setting::Host => "HOST",
            Setting::Endpoints => "--endpoint",
            Setting::Ports => "--port",
            Setting::DnsServer => "--dns-server",
            Setting::SourceIp => "--source-ip",
            Setting::Interface => "--interface",
            Setting::Timeout => "--timeout",
            Setting::Deadline => "--deadline",
            Setting::Keepalive => "--keepalive",
            Setting::SasToken => "--sas-token",
            Setting::SasTtl => "--sas-ttl",
            Setting::SasExpiry => "--sas-expiry",
            Setting::DeviceId => "--device-id",
            Setting::Username => "--username",
            Setting::PasswordFile => "--password-file",
            Setting::Cert => "--cert",
            Setting::Key => "--key",
            Setting::ConnectionString => "--connection-string",
            Setting::ConnectionStringFile => "--connection-string-file",
            Setting::CaFile => "--ca-file",
            Setting::Profile => "--profile",
        }
    }

    /// The agent config file's name (`[section] key`).
    pub fn config_key(self) -> &'static str {
        match self {
            Setting::Host => "[hub] host",
            Setting::Endpoints => "[hub] endpoints",
            Setting::Ports => "[hub] ports",
            Setting::DnsServer => "[hub] dns_server",
            Setting::SourceIp => "[hub] source_ip",
            Setting::Interface => "[hub] interface",
            Setting::Timeout => "[hub] timeout",
            Setting::Deadline => "[schedule] deadline",
            Setting::Keepalive => "[hub] keepalive",
            Setting::SasToken => "[identity] sas_token_file",
            Setting::SasTtl => "[identity] sas_ttl",
            Setting::SasExpiry => "[identity] sas_expiry",
            Setting::DeviceId => "[identity] device_id",
            Setting::Username => "[identity] username",
            Setting::PasswordFile => "[identity] password_file",
            Setting::Cert => "[identity] cert",
            Setting::Key => "[identity] key",
            Setting::ConnectionString | Setting::ConnectionStringFile => {
                "[identity] connection_string_file"
            }
            Setting::CaFile => "[hub] ca_file",
            Setting::Profile => "[hub] profile",
        }
    }
}

thread_local! {
    static CONFIG_FILE_NAMES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if CONFIG_FILE_NAMES.with(|c| c.get()) {
            f.write_str(self.config_key())
        } else {
            f.write_str(self.flag())
        }
    }
}

/// Renders `e` naming every setting as the agent's config file does.
pub fn in_config_file_terms(e: &dyn std::fmt::Display) -> String {
    CONFIG_FILE_NAMES.with(|c| c.set(true));
    let text = e.to_string();
    CONFIG_FILE_NAMES.with(|c| c.set(false));
    text
}
