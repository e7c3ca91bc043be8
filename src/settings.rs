//! The settings of a check target and their names: as the command line names them
//! (`--port`) and as the agent's config file does (`[hub] ports`). Errors name a
//! setting through [`Setting`], so the same error reads right wherever the value
//! came from, without rewriting its text.
//!
//! [`TargetArgs`] is the one settings type of a check target: clap fills it from the
//! command line and the environment (`check`, `tune`), the agent from its config
//! file's `[hub]` and `[identity]` sections; `config::plan_target` validates it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::auth::Secret;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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
    /// The proxy URL.
    Proxy,
    /// The proxy password file.
    ProxyPasswordFile,
    /// The SNTP servers.
    NtpServer,
    /// The DPS id scope.
    IdScope,
    /// The DPS registration id.
    RegistrationId,
    /// The DPS symmetric key file.
    SymmetricKeyFile,
    /// The key is an enrollment group's.
    EnrollmentGroup,
}

impl Setting {
    /// The command-line name.
    pub fn flag(self) -> &'static str {
        match self {
            Setting::NtpServer => "--ntp-server",
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
            Setting::Proxy => "--proxy",
            Setting::ProxyPasswordFile => "--proxy-password-file",
            Setting::IdScope => "--id-scope",
            Setting::RegistrationId => "--registration-id",
            Setting::SymmetricKeyFile => "--symmetric-key-file",
            Setting::EnrollmentGroup => "--enrollment-group",
        }
    }

    /// The agent config file's name (`[section] key`).
    pub fn config_key(self) -> &'static str {
        match self {
            Setting::NtpServer => "[hub] ntp_servers",
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
            Setting::Proxy => "[proxy] url",
            Setting::ProxyPasswordFile => "[proxy] password_file",
            Setting::IdScope => "[identity] id_scope",
            Setting::RegistrationId => "[identity] registration_id",
            Setting::SymmetricKeyFile => "[identity] symmetric_key_file",
            Setting::EnrollmentGroup => "[identity] enrollment_group",
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

/// Which hub, how to reach it and as whom: shared by `check` and `tune`.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Hub host name (default: HostName, or GatewayHostName, of the connection string).
    pub host: Option<String>,

    /// Hub profile: a built-in name (azure-iot-hub, aws-iot-core, mqtt-broker, azure-dps) or a .toml file.
    /// Default: from the host name (…azure-devices.net → azure-iot-hub, …amazonaws.com →
    /// aws-iot-core; with a connection string azure-iot-hub; with --id-scope azure-dps), else mqtt-broker.
    #[arg(long, env = "HUBPROBE_PROFILE", hide_env_values = true)]
    pub profile: Option<String>,

    /// Probe only these endpoints (comma-separated names from the profile).
    #[arg(long = "endpoint", value_name = "NAME[,NAME]", value_delimiter = ',')]
    pub endpoints: Vec<String>,

    /// Override an endpoint's port, e.g. --port mqtt-tls=18883 (repeatable, or comma-separated).
    #[arg(long = "port", value_name = "ENDPOINT=PORT", value_delimiter = ',')]
    pub ports: Vec<String>,

    /// Ask this DNS server instead of the system's (IP or IP:PORT).
    #[arg(long, value_name = "IP[:PORT]")]
    pub dns_server: Option<String>,

    /// Bind connections to this network interface (SO_BINDTODEVICE).
    #[arg(long, value_name = "IFACE")]
    pub interface: Option<String>,

    /// Bind connections to this local address.
    #[arg(long, value_name = "IP")]
    pub source_ip: Option<String>,

    /// Timeout of each phase: a duration like 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,

    /// Trust store for the hub's certificate.
    #[arg(long, value_enum, default_value = "system")]
    pub trust: TrustSource,

    /// Add trust anchors from a PEM file (repeatable).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Vec<PathBuf>,

    /// X.509 device certificate (PEM; with --key).
    #[arg(long, value_name = "PEM", requires = "key")]
    pub cert: Option<PathBuf>,

    /// Private key of the device certificate (PEM).
    #[arg(long, value_name = "PEM", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Device connection string (HostName=…;DeviceId=…;SharedAccessKey=…) [env:
    /// IOTHUB_DEVICE_CONNECTION_STRING, used when no credential option is given]. Prefer the
    /// environment or --connection-string-file: command lines are visible to other users.
    #[arg(long, value_parser = parse_secret, conflicts_with = "connection_string_file")]
    pub connection_string: Option<Secret>,

    /// Read the device connection string from this file.
    #[arg(long, value_name = "FILE")]
    pub connection_string_file: Option<PathBuf>,

    /// A ready SAS token (SharedAccessSignature sr=…&sig=…&se=…) [env: HUBPROBE_SAS_TOKEN,
    /// used when no credential option is given].
    #[arg(long, value_parser = parse_secret)]
    pub sas_token: Option<Secret>,

    /// Device id (with --sas-token, --cert or --username when it cannot be derived).
    #[arg(long)]
    pub device_id: Option<String>,

    /// MQTT user name for generic brokers (password from --password-file or HUBPROBE_MQTT_PASSWORD).
    #[arg(long)]
    pub username: Option<String>,

    /// Read the MQTT password from this file.
    #[arg(long, value_name = "FILE", requires = "username")]
    pub password_file: Option<PathBuf>,

    /// Lifetime of the SAS token generated from the connection string's key: a duration like 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1h")]
    pub sas_ttl: Duration,

    /// Pin the generated token's expiry (Unix seconds) instead of now + --sas-ttl.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub sas_expiry: Option<u64>,

    /// Keep-alive announced in MQTT CONNECT: a duration like 30s, 5m, 1h (default: the profile's).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keepalive: Option<Duration>,

    /// MQTT version of the CONNECT: 3.1.1 or 5 (default: the profile's).
    #[arg(long, value_name = "3.1.1|5")]
    pub mqtt_version: Option<crate::model::MqttVersion>,

    /// A label for fleet grouping, put in the report (repeatable): site=berlin-3.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// Go through this proxy: http://[USER@]HOST:PORT (HTTP CONNECT), socks5://… (the device
    /// resolves the hub) or socks5h://… (the proxy does); `none` goes direct and ignores the
    /// environment. Default: https_proxy, HTTPS_PROXY, all_proxy, ALL_PROXY as curl reads them,
    /// with NO_PROXY/no_proxy exceptions. The password: in the URL, --proxy-password-file or
    /// HUBPROBE_PROXY_PASSWORD.
    #[arg(long, value_name = "URL|none")]
    pub proxy: Option<String>,

    /// Read the proxy password (for the URL's user) from this file.
    #[arg(long, value_name = "FILE")]
    pub proxy_password_file: Option<PathBuf>,

    /// Hosts that go direct, like NO_PROXY (comma-separated names, suffixes, IPs, CIDRs;
    /// `*` for all); replaces NO_PROXY/no_proxy.
    #[arg(long = "noproxy", value_name = "LIST")]
    pub no_proxy: Option<String>,

    /// Where `proxy` came from when it is not the command line (the agent's `[proxy] url`).
    #[arg(skip)]
    pub proxy_source: Option<String>,
    /// Check the device clock against this SNTP server (UDP, default port 123; repeatable,
    /// or comma-separated); `none` disables it. Default: the profile's (Azure:
    /// time.windows.com, others: pool.ntp.org).
    #[arg(
        long = "ntp-server",
        value_name = "HOST[:PORT]",
        value_delimiter = ',',
        env = "HUBPROBE_NTP_SERVER",
        hide_env_values = true
    )]
    pub ntp_servers: Vec<String>,

    /// Timeout of the SNTP query (it runs beside the endpoints): a duration like 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "3s")]
    pub ntp_timeout: Duration,
    /// The Device Provisioning Service identity (profile azure-dps).
    #[command(flatten)]
    pub dps: DpsArgs,
}

/// A Device Provisioning Service identity: id scope, registration id and the key
/// (an individual enrollment's, or an enrollment group's with `--enrollment-group`),
/// or an X.509 certificate (`--cert`/`--key`). The environment variables are the ones
/// the Azure IoT SDK provisioning samples use.
#[derive(Debug, Clone, Default, Args)]
pub struct DpsArgs {
    /// DPS id scope (e.g. 0ne00000001); selects the azure-dps profile when --profile is not given.
    #[arg(
        long,
        value_name = "SCOPE",
        env = "PROVISIONING_IDSCOPE",
        hide_env_values = true
    )]
    pub id_scope: Option<String>,

    /// DPS registration id (the device's; the MQTT client id towards DPS).
    #[arg(
        long,
        value_name = "ID",
        env = "PROVISIONING_REGISTRATION_ID",
        hide_env_values = true
    )]
    pub registration_id: Option<String>,

    /// Read the symmetric key (base64) from this file [else env: PROVISIONING_SYMMETRIC_KEY].
    #[arg(long, value_name = "FILE")]
    pub symmetric_key_file: Option<PathBuf>,

    /// The symmetric key is the enrollment group's: derive the device key from it
    /// (HMAC-SHA256 of the registration id) as the SDKs do.
    #[arg(long)]
    pub enrollment_group: bool,
}

/// Wraps a secret argument so that it cannot be printed by accident.
pub fn parse_secret(s: &str) -> Result<Secret, String> {
    Ok(Secret::new(s))
}

/// Parses `KEY=VALUE` for `--label`: the key is 1–64 characters of `[A-Za-z0-9_.-]`,
/// the value at most 256 characters without control characters.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    check_label(k, v)?;
    Ok((k.to_string(), v.to_string()))
}

/// Checks a label key and value (see [`parse_label`]).
pub fn check_label(k: &str, v: &str) -> Result<(), String> {
    if k.is_empty()
        || k.len() > 64
        || !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(format!(
            "label key {k:?}: use 1-64 characters of letters, digits, '_', '.', '-'"
        ));
    }
    if v.len() > 256 || v.chars().any(char::is_control) {
        return Err(format!(
            "label {k}: the value must be at most 256 characters, without control characters"
        ));
    }
    Ok(())
}

/// [`parse_duration`], also accepting zero (`0`, `0s`).
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    match s.trim() {
        "0" | "0s" => Ok(Duration::ZERO),
        _ => parse_duration(s),
    }
}

/// Parses a humantime duration ("30s", "5m", "1h 30m").
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 30s, 5m or 1h ({e})"))?;
    if d.is_zero() {
        return Err(format!("{s:?}: the duration must be above zero"));
    }
    Ok(d)
}

/// Where the base set of trust anchors comes from (`--ca-file`s are added on top).
/// One type for the command line (`--trust`), the agent's config (`[hub] trust`)
/// and the report (`target.trust.source`).
///
/// `system` is what the device's own software trusts, so problems found with it are
/// the device's problems; `bundled` is a known-good reference to compare the device's
/// store against; `none` reproduces a device with a minimal store (private hubs and
/// brokers, with their CA given by `--ca-file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TrustSource {
    /// The operating system's store (what most device stacks use).
    System,
    /// The Mozilla roots compiled into hubprobe.
    #[serde(alias = "mozilla", alias = "webpki")]
    #[value(alias = "mozilla", alias = "webpki")]
    Bundled,
    /// Only the --ca-file anchors (reproduces a device with a minimal store).
    None,
}

impl TrustSource {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            TrustSource::System => "system",
            TrustSource::Bundled => "bundled",
            TrustSource::None => "none",
        }
    }
}

impl fmt::Display for TrustSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TrustSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "system" => Ok(TrustSource::System),
            "bundled" | "mozilla" | "webpki" => Ok(TrustSource::Bundled),
            "none" => Ok(TrustSource::None),
            other => Err(format!(
                "unknown trust source {other:?} (expected system, bundled or none)"
            )),
        }
    }
}
