//! Turns the command line (and environment, which clap folds in) plus the profile
//! into a [`CheckPlan`]. Every problem is one clear [`ConfigError`] whose message
//! names the option and never contains a secret; `main` maps it to exit code 3.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::sas::{device_id_of, host_of, parse_sas_token, SasError};
use crate::auth::{ConnectionString, ConnectionStringError, Credentials, Secret};
use crate::check::CheckPlan;
use crate::probe::tls::{ClientIdentity, TlsSetupError, TrustStore};
use crate::profile::{Profile, ProfileError};
use crate::settings::TargetArgs;
pub use crate::settings::{in_config_file_terms, Setting};

/// Why a check could not be set up. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The proxy setting is unusable (names the setting, never the password).
    #[error("{setting}: {message}")]
    Proxy {
        /// `--proxy` / `[proxy] url`, or the password file's setting.
        setting: Setting,
        /// What is wrong.
        message: String,
    },
    /// The proxy from the environment is unusable (names the variable, never the password).
    #[error("{0}")]
    ProxyEnvironment(String),
    /// An `--ntp-server` is not `HOST[:PORT]`.
    #[error("{}: {}", Setting::NtpServer, .0)]
    NtpServer(String),
    /// The profile could not be loaded.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The connection string is malformed (the message names the part, never the key).
    #[error(transparent)]
    ConnectionString(#[from] ConnectionStringError),
    /// The SAS token is malformed.
    #[error("{}: {}", Setting::SasToken, .0)]
    SasToken(SasError),
    /// No host given and none derivable.
    #[error(
        "no hub host: give {}, or a connection string (IOTHUB_DEVICE_CONNECTION_STRING)",
        Setting::Host
    )]
    NoHost,
    /// An endpoint name not in the profile.
    #[error("{option}: no endpoint {name:?} in profile {profile} (it has: {known})")]
    UnknownEndpoint {
        /// The option.
        option: Setting,
        /// The name given.
        name: String,
        /// The profile.
        profile: String,
        /// Its endpoints.
        known: String,
    },
    /// A malformed `--port` value.
    #[error("{} {:?}: expected ENDPOINT=PORT with PORT in 1-65535, e.g. mqtt-tls=18883", Setting::Ports, .0)]
    BadPort(String),
    /// A malformed `--dns-server`.
    #[error("{} {:?}: expected an IP address, optionally with :PORT (e.g. 127.0.0.1:5353 or [::1]:53)", Setting::DnsServer, .0)]
    BadDnsServer(String),
    /// A malformed `--source-ip`.
    #[error("{} {:?}: expected an IP address", Setting::SourceIp, .0)]
    BadSourceIp(String),
    /// An unusable host name.
    #[error("host {0:?} is not a valid host name or IP address")]
    BadHost(String),
    /// Trust store or client identity setup failed.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// Two credential sources at once.
    #[error(
        "give only one of: a connection string, {}, {} (the device has one identity)",
        Setting::SasToken,
        Setting::Username
    )]
    ConflictingCredentials,
    /// A file could not be read.
    #[error("cannot read {what} {} ({option}): {problem}", path.display())]
    Read {
        /// What the file is.
        what: &'static str,
        /// The setting that named it.
        option: Setting,
        /// The file.
        path: PathBuf,
        /// Why (an OS message, not a regular file, too large; never content).
        problem: crate::fsio::InputFileError,
    },
    /// The connection string says `x509=true` but no certificate was given.
    #[error(
        "the connection string says x509=true: give the device certificate with {} and {}",
        Setting::Cert,
        Setting::Key
    )]
    X509WithoutCertificate,
    /// No device id could be derived.
    #[error("no device id: {}; give {}", .0, Setting::DeviceId)]
    NoDeviceId(&'static str),
    /// `--device-id` without any credential.
    #[error(
        "{} goes with a credential (connection string, {}, {}/{} or {})",
        Setting::DeviceId,
        Setting::SasToken,
        Setting::Cert,
        Setting::Key,
        Setting::Username
    )]
    DeviceIdWithoutCredentials,
    /// A keep-alive below one second.
    #[error(
        "{} must be at least 1s (MQTT counts whole seconds; 0 turns keep-alive off)",
        Setting::Keepalive
    )]
    KeepAliveTooShort,
    /// A duration or time beyond what hubprobe accepts.
    #[error("{option} {value}: at most {max}")]
    OutOfRange {
        /// The option.
        option: Setting,
        /// What was given.
        value: String,
        /// The limit.
        max: String,
    },
    /// The network interface does not exist.
    #[error("{} {:?}: no such network interface", Setting::Interface, .0)]
    NoInterface(String),
    /// A keep-alive MQTT cannot express.
    #[error("{} {} s is above MQTT's limit of 65535 s", Setting::Keepalive, .0)]
    KeepAliveTooLong(u64),
    /// A DPS identity setting is missing.
    #[error("{what}: give {option}{env}")]
    DpsMissing {
        /// What is missing.
        what: &'static str,
        /// The option that gives it.
        option: Setting,
        /// The environment variable that gives it (with its wording), or empty.
        env: &'static str,
    },
    /// A malformed id scope or registration id.
    #[error("{option}: {error}")]
    DpsId {
        /// The option.
        option: Setting,
        /// What is wrong (quotes the value, which is not secret).
        error: crate::auth::dps::DpsIdError,
    },
    /// The DPS symmetric key is not base64 (the message never quotes it).
    #[error(
        "the DPS symmetric key ({}, or PROVISIONING_SYMMETRIC_KEY) is not valid base64",
        Setting::SymmetricKeyFile
    )]
    DpsKeyNotBase64,
    /// A hub credential given together with a DPS identity.
    #[error(
        "{} is a DPS identity: give its key with {} or PROVISIONING_SYMMETRIC_KEY (or {}/{}), not a connection string, {} or {}",
        Setting::IdScope,
        Setting::SymmetricKeyFile,
        Setting::Cert,
        Setting::Key,
        Setting::SasToken,
        Setting::Username
    )]
    DpsConflictingCredentials,
    /// `--enrollment-group` without a key to derive from.
    #[error("{} says the key is an enrollment group's, but no key is given ({} or PROVISIONING_SYMMETRIC_KEY)", Setting::EnrollmentGroup, Setting::SymmetricKeyFile)]
    GroupWithoutKey,
    /// A string the MQTT CONNECT would carry is longer than MQTT's 16-bit length
    /// prefix can say. The message names the string and its length, never its value.
    #[error("{what} is {len} bytes: an MQTT string is at most 65535 bytes (its length is a 16-bit number){hint}")]
    MqttStringTooLong {
        /// Which string (`the device id`, `the MQTT password`, ...).
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// A hint for the usual identities (may be empty).
        hint: &'static str,
    },
}

/// The longest string MQTT 3.1.1 can carry (its length prefix is 16 bits).
pub const MQTT_MAX_STRING: usize = u16::MAX as usize;

const IOT_HUB_ID_HINT: &str = "; IoT Hub device and module ids are at most 128 characters";

/// Refuses a plan whose MQTT CONNECT would carry a string MQTT cannot express:
/// the identity as given (device id, module id, user name, password or SAS
/// token), then the strings the profile's templates build from it with the hub
/// host (client id, user name) and the password the CONNECT sends (a generated
/// SAS token grows with the device id).
fn check_mqtt_strings(plan: &CheckPlan) -> Result<(), ConfigError> {
    let too_long = |what, len: usize, hint| {
        if len > MQTT_MAX_STRING {
            Err(ConfigError::MqttStringTooLong { what, len, hint })
        } else {
            Ok(())
        }
    };
    let creds = &plan.credentials;
    too_long(
        "the device id",
        creds.device_id().map_or(0, str::len),
        IOT_HUB_ID_HINT,
    )?;
    too_long(
        "the module id",
        creds.module_id().map_or(0, str::len),
        IOT_HUB_ID_HINT,
    )?;
    match creds {
        Credentials::Password {
            username, password, ..
        } => {
            too_long("the --username", username.len(), "")?;
            too_long("the MQTT password", password.expose().len(), "")?;
        }
        Credentials::SasToken { token, .. } => {
            too_long("the SAS token", token.expose().len(), "")?;
        }
        _ => {}
    }
    let opts = crate::check::session_options(plan, plan.keep_alive, plan.timeout);
    too_long(
        "the MQTT client id (from the profile's client_id template)",
        opts.client_id.len(),
        IOT_HUB_ID_HINT,
    )?;
    too_long(
        "the MQTT user name (from the profile's username template and the hub host)",
        opts.username.as_deref().map_or(0, str::len),
        IOT_HUB_ID_HINT,
    )?;
    too_long(
        "the MQTT password (the SAS token generated for this device)",
        opts.password.as_ref().map_or(0, |p| p.expose().len()),
        IOT_HUB_ID_HINT,
    )?;
    Ok(())
}

/// Credentials found in the environment. They apply only when no credential
/// option is on the command line (the command line wins over the environment).
#[derive(Default)]
pub struct EnvCredentials {
    /// `IOTHUB_DEVICE_CONNECTION_STRING`.
    pub connection_string: Option<Secret>,
    /// `HUBPROBE_SAS_TOKEN`.
    pub sas_token: Option<Secret>,
    /// `HUBPROBE_MQTT_PASSWORD`.
    pub mqtt_password: Option<Secret>,
    /// The proxy variables that are set (`HTTPS_PROXY`, `NO_PROXY`, `HUBPROBE_PROXY_PASSWORD` …).
    pub proxy_vars: Vec<(String, Secret)>,
    /// `PROVISIONING_SYMMETRIC_KEY` (the DPS samples' name): the device's DPS key.
    pub dps_symmetric_key: Option<Secret>,
}

impl EnvCredentials {
    /// Reads the process environment (empty values count as unset).
    pub fn from_process() -> Self {
        let get = |k: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(Secret::new)
        };
        let proxy_vars = crate::net::proxy::PROXY_VARS
            .iter()
            .chain(crate::net::proxy::NO_PROXY_VARS.iter())
            .chain(std::iter::once(&crate::net::proxy::PASSWORD_VAR))
            .filter_map(|k| {
                std::env::var(k)
                    .ok()
                    .map(|v| (k.to_string(), Secret::new(v)))
            })
            .collect();
        EnvCredentials {
            proxy_vars,
            connection_string: get("IOTHUB_DEVICE_CONNECTION_STRING"),
            sas_token: get("HUBPROBE_SAS_TOKEN"),
            mqtt_password: get("HUBPROBE_MQTT_PASSWORD"),
            dps_symmetric_key: get("PROVISIONING_SYMMETRIC_KEY"),
        }
    }
}

/// The SNTP servers of a check: `--ntp-server` (`none` disables), else the
/// profile's default. Each must be `HOST[:PORT]`.
pub fn ntp_servers_for(given: &[String], profile: &Profile) -> Result<Vec<String>, ConfigError> {
    let list: Vec<String> = given
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if list.iter().any(|s| s.eq_ignore_ascii_case("none")) {
        return Ok(vec![]);
    }
    let list = if list.is_empty() {
        profile.ntp_servers.clone()
    } else {
        list
    };
    for s in &list {
        crate::probe::ntp::parse_server(s).map_err(ConfigError::NtpServer)?;
    }
    if list.len() > 8 {
        return Err(ConfigError::NtpServer(format!(
            "{} servers given; at most 8",
            list.len()
        )));
    }
    Ok(list)
}

/// Longest accepted `--deadline`.
pub const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);
/// Longest accepted `--timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest accepted `--sas-ttl` (ten years).
pub const MAX_SAS_TTL: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Latest expiry RFC 3339 can express (9999-12-31T23:59:59Z).
pub const MAX_UNIX_SECONDS: u64 = 253_402_300_799;

/// Builds the check plan of any command that targets a hub (`check`, `tune`, the
/// agent). Reads files (CA, certificates, connection string) and validates
/// everything before any packet is sent.
pub fn plan_target(
    args: &TargetArgs,
    deadline: Duration,
    pings: u32,
    env: EnvCredentials,
) -> Result<CheckPlan, ConfigError> {
    if deadline > MAX_DEADLINE {
        return Err(ConfigError::OutOfRange {
            option: Setting::Deadline,
            value: humantime::format_duration(deadline).to_string(),
            max: humantime::format_duration(MAX_DEADLINE).to_string(),
        });
    }
    let mut plan = plan_check_with(args, env)?;
    plan.deadline = deadline;
    plan.pings = pings;
    Ok(plan)
}

/// The run's proxy: `--proxy` (or the agent's `[proxy] url`), else the
/// environment's; `none` goes direct. `NO_PROXY` (or `--noproxy`) applies as in curl.
fn plan_proxy(
    args: &TargetArgs,
    host: &str,
    vars: &[(String, Secret)],
) -> Result<Option<crate::net::proxy::ProxyPlan>, ConfigError> {
    use crate::net::proxy::{select, ProxyChoice};
    let choice = match args.proxy.as_deref().map(str::trim) {
        None => ProxyChoice::FromEnvironment,
        Some(u) if u.eq_ignore_ascii_case("none") || u.is_empty() => ProxyChoice::Direct,
        Some(u) => ProxyChoice::Url {
            url: u.to_string(),
            source: args
                .proxy_source
                .clone()
                .unwrap_or_else(|| Setting::Proxy.flag().to_string()),
        },
    };
    if let Some(f) = &args.proxy_password_file {
        crate::fsio::check_input_file(f, crate::fsio::InputKind::Secret).map_err(|e| {
            ConfigError::Proxy {
                setting: Setting::ProxyPasswordFile,
                message: e.to_string(),
            }
        })?;
    }
    let env = |k: &str| {
        vars.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.expose().to_string())
            .filter(|v| !v.trim().is_empty())
    };
    select(
        &choice,
        args.no_proxy.as_deref(),
        host,
        args.proxy_password_file.as_deref(),
        &env,
    )
    .map_err(|e| match (&choice, &e) {
        (_, crate::net::proxy::ProxyConfigError::PasswordFile { .. }) => ConfigError::Proxy {
            setting: Setting::ProxyPasswordFile,
            message: e.to_string(),
        },
        (ProxyChoice::Url { .. }, _) => ConfigError::Proxy {
            setting: Setting::Proxy,
            message: e.to_string(),
        },
        _ => ConfigError::ProxyEnvironment(e.to_string()),
    })
}

/// [`plan_target`] without the deadline and pings, the environment passed in.
fn plan_check_with(args: &TargetArgs, env: EnvCredentials) -> Result<CheckPlan, ConfigError> {
    check_ranges(args)?;
    // A DPS identity: the hub credentials of the environment do not apply to it,
    // and hub credentials on the command line contradict it.
    let dps_identity = args.dps.id_scope.is_some();
    if !dps_identity
        && (args.dps.registration_id.is_some()
            || args.dps.symmetric_key_file.is_some()
            || args.dps.enrollment_group)
    {
        return Err(ConfigError::DpsMissing {
            what: "no DPS id scope",
            option: Setting::IdScope,
            env: " or PROVISIONING_IDSCOPE",
        });
    }
    if dps_identity
        && (args.connection_string.is_some()
            || args.connection_string_file.is_some()
            || args.sas_token.is_some()
            || args.username.is_some())
    {
        return Err(ConfigError::DpsConflictingCredentials);
    }
    let mut env = env;
    let dps_env_key = env.dps_symmetric_key.take();
    if dps_identity {
        env.connection_string = None;
        env.sas_token = None;
    }
    let cli_credentials = args.connection_string.is_some()
        || args.connection_string_file.is_some()
        || args.sas_token.is_some()
        || args.username.is_some();
    let (cs_value, token_value) = if cli_credentials {
        (args.connection_string.as_ref(), args.sas_token.as_ref())
    } else {
        if env.connection_string.is_some() && env.sas_token.is_some() {
            return Err(ConfigError::ConflictingCredentials);
        }
        (env.connection_string.as_ref(), env.sas_token.as_ref())
    };
    let password_env = env.mqtt_password.map(|p| p.expose().to_string());
    let proxy_vars = env.proxy_vars;
    let connection_string = load_connection_string(
        cs_value.map(Secret::expose),
        args.connection_string_file.as_deref(),
    )?;
    let sas_token = token_value
        .map(Secret::expose)
        .filter(|t| !t.trim().is_empty());
    let given = [
        connection_string.is_some(),
        sas_token.is_some(),
        args.username.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ConfigError::ConflictingCredentials);
    }

    // Host: explicit, else the connection string's gateway or hub, else the token's resource.
    let parsed_token = sas_token
        .map(parse_sas_token)
        .transpose()
        .map_err(ConfigError::SasToken)?;
    let cs_host = connection_string.as_ref().map(|cs| {
        cs.gateway_host_name
            .clone()
            .unwrap_or_else(|| cs.host_name.clone())
    });
    let token_host = parsed_token
        .as_ref()
        .and_then(|t| host_of(&t.resource))
        .map(str::to_string);
    // A profile with a default host (DPS's global endpoint) supplies it.
    let default_host = || -> Result<Option<String>, ConfigError> {
        let spec = match &args.profile {
            Some(spec) => spec.as_str(),
            None if dps_identity => "azure-dps",
            None => return Ok(None),
        };
        Ok(Profile::load(spec)?.default_host)
    };
    let host = match args.host.clone().or(cs_host).or(token_host.clone()) {
        Some(h) => h,
        None => default_host()?.ok_or(ConfigError::NoHost)?,
    };
    let host = normalize_host(&host)?;
    let hub_host = connection_string
        .as_ref()
        .map(|cs| cs.host_name.clone())
        .or(token_host)
        .unwrap_or_else(|| host.clone());

    let mut profile = match &args.profile {
        Some(spec) => Profile::load(spec)?,
        None if connection_string.is_some() => Profile::load("azure-iot-hub")?,
        None if dps_identity => Profile::load("azure-dps")?,
        None => Profile::for_host(&hub_host),
    };

    // Port overrides, then endpoint selection.
    for spec in &args.ports {
        let (name, port) = spec
            .split_once('=')
            .ok_or_else(|| ConfigError::BadPort(spec.clone()))?;
        let port: u16 = port
            .trim()
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| ConfigError::BadPort(spec.clone()))?;
        let known = endpoint_names(&profile);
        let profile_name = profile.name.clone();
        let ep = profile
            .endpoints
            .iter_mut()
            .find(|e| e.name == name.trim())
            .ok_or_else(|| ConfigError::UnknownEndpoint {
                option: Setting::Ports,
                name: name.trim().to_string(),
                profile: profile_name,
                known,
            })?;
        ep.port = port;
    }
    let endpoints = if args.endpoints.is_empty() {
        profile.endpoints.clone()
    } else {
        let mut chosen = Vec::new();
        for name in &args.endpoints {
            let name = name.trim();
            let ep = profile
                .endpoint(name)
                .ok_or_else(|| ConfigError::UnknownEndpoint {
                    option: Setting::Endpoints,
                    name: name.to_string(),
                    profile: profile.name.clone(),
                    known: endpoint_names(&profile),
                })?;
            if !chosen
                .iter()
                .any(|e: &crate::profile::Endpoint| e.name == ep.name)
            {
                chosen.push(ep.clone());
            }
        }
        chosen
    };

    let dns_server = args
        .dns_server
        .as_deref()
        .map(parse_dns_server)
        .transpose()?;
    let source_ip = args
        .source_ip
        .as_deref()
        .map(|s| {
            s.trim()
                .parse::<IpAddr>()
                .map_err(|_| ConfigError::BadSourceIp(s.to_string()))
        })
        .transpose()?;

    let trust_source = args.trust;
    let trust = Arc::new(TrustStore::load(trust_source, &args.ca_file)?);
    let client_identity = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => Some(Arc::new(ClientIdentity::load(c, k)?)),
        _ => None,
    };

    let credentials = if let Some(id_scope) = &args.dps.id_scope {
        dps_credentials(args, id_scope, dps_env_key, client_identity.as_deref())?
    } else if let Some(cs) = connection_string {
        match cs.shared_access_key {
            Some(key) => Credentials::DeviceKey {
                device_id: cs.device_id,
                module_id: cs.module_id,
                key,
                ttl: args.sas_ttl,
                expiry: args.sas_expiry,
            },
            None if client_identity.is_none() => return Err(ConfigError::X509WithoutCertificate),
            None => Credentials::X509 {
                device_id: cs.device_id,
            },
        }
    } else if let (Some(token), Some(parsed)) = (sas_token, parsed_token.as_ref()) {
        let device_id = args
            .device_id
            .clone()
            .or_else(|| device_id_of(&parsed.resource).map(str::to_string))
            .ok_or(ConfigError::NoDeviceId(
                "the SAS token's resource names no device",
            ))?;
        Credentials::SasToken {
            device_id,
            token: Secret::new(token.trim()),
        }
    } else if let Some(username) = &args.username {
        let password = match &args.password_file {
            Some(path) => Some(read_secret_file(
                path,
                "password file",
                Setting::PasswordFile,
            )?),
            None => password_env,
        };
        Credentials::Password {
            device_id: args.device_id.clone(),
            username: username.clone(),
            password: Secret::new(password.unwrap_or_default()),
        }
    } else if let Some(identity) = &client_identity {
        let device_id = args
            .device_id
            .clone()
            .or_else(|| common_name(identity.subject()))
            .ok_or(ConfigError::NoDeviceId(
                "the device certificate's subject has no CN",
            ))?;
        Credentials::X509 { device_id }
    } else {
        if args.device_id.is_some() {
            return Err(ConfigError::DeviceIdWithoutCredentials);
        }
        Credentials::None
    };

    if let Some(v) = args.mqtt_version {
        profile.mqtt.version = v;
    }
    let keep_alive = args.keepalive.unwrap_or(profile.mqtt.keepalive);
    if keep_alive < Duration::from_secs(1) {
        // MQTT counts whole seconds; 0 would switch keep-alive off.
        return Err(ConfigError::KeepAliveTooShort);
    }
    if let Some(iface) = &args.interface {
        check_interface(iface)?;
    }
    if keep_alive.as_secs() > u16::MAX as u64 {
        return Err(ConfigError::KeepAliveTooLong(keep_alive.as_secs()));
    }
    let proxy = plan_proxy(args, &host, &proxy_vars)?;

    let ntp_servers = ntp_servers_for(&args.ntp_servers, &profile)?;
    let plan = CheckPlan {
        profile,
        host,
        hub_host,
        endpoints,
        dns_server,
        interface: args.interface.clone(),
        source_ip,
        trust,
        client_identity,
        credentials,
        keep_alive,
        pings: 0,
        timeout: args.timeout,
        deadline: MAX_DEADLINE,
        labels: args.labels.iter().cloned().collect(),
        identity_share: None,
        mtu_probe: false,
        proxy,
        ntp_servers,
        ntp_timeout: args.ntp_timeout,
    };
    check_mqtt_strings(&plan)?;
    Ok(plan)
}

/// The DPS credentials of `--id-scope` and its companions: the registration id
/// (given, or the device certificate's CN), and the key from the file or the
/// environment (derived from the group's key with `--enrollment-group`), or the
/// certificate when there is no key.
fn dps_credentials(
    args: &TargetArgs,
    id_scope: &str,
    env_key: Option<Secret>,
    identity: Option<&ClientIdentity>,
) -> Result<Credentials, ConfigError> {
    use crate::auth::dps;
    let id_scope = id_scope.trim();
    dps::check_id_scope(id_scope).map_err(|error| ConfigError::DpsId {
        option: Setting::IdScope,
        error,
    })?;
    let registration_id = match &args.dps.registration_id {
        Some(r) => r.trim().to_string(),
        None => identity
            .and_then(|i| common_name(i.subject()))
            .ok_or(ConfigError::DpsMissing {
                what: "no DPS registration id",
                option: Setting::RegistrationId,
                env: " or PROVISIONING_REGISTRATION_ID (with a certificate: its CN)",
            })?,
    };
    dps::check_registration_id(&registration_id).map_err(|error| ConfigError::DpsId {
        option: Setting::RegistrationId,
        error,
    })?;
    let key = match &args.dps.symmetric_key_file {
        Some(path) => Some(Secret::new(read_secret_file(
            path,
            "symmetric key file",
            Setting::SymmetricKeyFile,
        )?)),
        None if identity.is_some() => None,
        None => env_key,
    };
    let key = match key {
        Some(k) => {
            let k = Secret::new(k.expose().trim());
            // Validate now, so the run never fails on it (and no error quotes it).
            let device_key = if args.dps.enrollment_group {
                dps::derive_device_key(&k, &registration_id)
                    .map_err(|_| ConfigError::DpsKeyNotBase64)?
            } else {
                k
            };
            dps::generate_dps_sas_token(id_scope, &registration_id, &device_key, 0)
                .map_err(|_| ConfigError::DpsKeyNotBase64)?;
            Some(device_key)
        }
        None if args.dps.enrollment_group => return Err(ConfigError::GroupWithoutKey),
        None if identity.is_some() => None,
        None => {
            return Err(ConfigError::DpsMissing {
                what: "no DPS credential",
                option: Setting::SymmetricKeyFile,
                env: ", PROVISIONING_SYMMETRIC_KEY, or a device certificate (--cert/--key)",
            })
        }
    };
    Ok(Credentials::Dps {
        id_scope: id_scope.to_string(),
        registration_id,
        key,
        group: args.dps.enrollment_group,
        ttl: args.sas_ttl,
        expiry: args.sas_expiry,
    })
}

fn check_ranges(args: &TargetArgs) -> Result<(), ConfigError> {
    let too_long = |option: Setting, value: Duration, max: Duration| {
        (value > max).then(|| ConfigError::OutOfRange {
            option,
            value: humantime::format_duration(value).to_string(),
            max: humantime::format_duration(max).to_string(),
        })
    };
    if let Some(e) = too_long(Setting::Timeout, args.timeout, MAX_TIMEOUT)
        .or_else(|| too_long(Setting::SasTtl, args.sas_ttl, MAX_SAS_TTL))
    {
        return Err(e);
    }
    if let Some(e) = args.sas_expiry.filter(|e| *e > MAX_UNIX_SECONDS) {
        return Err(ConfigError::OutOfRange {
            option: Setting::SasExpiry,
            value: e.to_string(),
            max: format!("{MAX_UNIX_SECONDS} (9999-12-31)"),
        });
    }
    Ok(())
}

fn check_interface(name: &str) -> Result<(), ConfigError> {
    let c = std::ffi::CString::new(name).map_err(|_| ConfigError::NoInterface(name.to_string()))?;
    // SAFETY: c is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(ConfigError::NoInterface(name.to_string()));
    }
    Ok(())
}

/// Reads the connection string from the option/environment or a file.
pub fn load_connection_string(
    value: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<ConnectionString>, ConfigError> {
    let text = match (value, file) {
        (_, Some(path)) => Some(read_secret_file(
            path,
            "connection string file",
            Setting::ConnectionStringFile,
        )?),
        (Some(v), None) if !v.trim().is_empty() => Some(v.to_string()),
        _ => None,
    };
    text.map(|t| t.parse::<ConnectionString>().map_err(ConfigError::from))
        .transpose()
}

fn read_secret_file(
    path: &Path,
    what: &'static str,
    option: Setting,
) -> Result<String, ConfigError> {
    crate::fsio::read_bounded_text(path, crate::fsio::InputKind::Secret)
        .map(|s| s.trim().to_string())
        .map_err(|problem| ConfigError::Read {
            what,
            option,
            path: path.to_path_buf(),
            problem,
        })
}

fn endpoint_names(p: &Profile) -> String {
    p.endpoints
        .iter()
        .map(|e| e.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn normalize_host(host: &str) -> Result<String, ConfigError> {
    let h = host
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.');
    if h.parse::<IpAddr>().is_ok() {
        return Ok(h.to_string());
    }
    let valid = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !valid {
        return Err(ConfigError::BadHost(host.to_string()));
    }
    Ok(h.to_ascii_lowercase())
}

/// Parses `IP`, `IP:PORT` or `[IPv6]:PORT` (port 53 by default).
pub fn parse_dns_server(s: &str) -> Result<SocketAddr, ConfigError> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| ConfigError::BadDnsServer(s.to_string()))
}

fn common_name(subject: &str) -> Option<String> {
    subject
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("CN="))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_server_forms() {
        assert_eq!(
            parse_dns_server("127.0.0.1").unwrap(),
            "127.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_dns_server("127.0.0.1:5353").unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(
            parse_dns_server("::1").unwrap(),
            "[::1]:53".parse().unwrap()
        );
        assert_eq!(
            parse_dns_server("[::1]:5353").unwrap(),
            "[::1]:5353".parse().unwrap()
        );
        assert!(parse_dns_server("dns.example").is_err());
    }

    #[test]
    fn hosts() {
        assert_eq!(
            normalize_host("MyHub.Azure-Devices.net.").unwrap(),
            "myhub.azure-devices.net"
        );
        assert_eq!(normalize_host("[::1]").unwrap(), "::1");
        assert!(normalize_host("bad host").is_err());
        assert!(normalize_host("a..b").is_err());
        assert!(normalize_host("https://x").is_err());
    }

    #[test]
    fn common_name_from_subject() {
        assert_eq!(common_name("CN=dev1, O=Contoso").as_deref(), Some("dev1"));
        assert_eq!(common_name("O=Contoso"), None);
    }
}
