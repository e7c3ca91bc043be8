//! The agent's configuration file (TOML, unknown keys refused) and how it becomes a
//! check plan. Errors name the file, the `[section] key` and the line; they never
//! contain a secret (secrets are only ever read from files or the environment).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::check::CheckPlan;
use crate::config::{plan_target, EnvCredentials};
use crate::probe::tls::TrustSource;
use crate::settings::{check_label, TargetArgs};

/// Why the configuration cannot be used. One line, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    /// The file could not be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (an OS message, not a regular file, too large; never content).
        source: crate::fsio::InputFileError,
    },
    /// TOML syntax or a value of the wrong type / an unknown key.
    #[error("config {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// `[section] key (line N): what is wrong`.
        message: String,
    },
    /// A value that parses but cannot be used.
    #[error("config {}: {key}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// `[section] key`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Which hub and how to reach it.
    pub hub: HubSection,
    /// As whom.
    #[serde(default)]
    pub identity: IdentitySection,
    /// When.
    #[serde(default)]
    pub schedule: ScheduleSection,
    /// The long-lived session.
    #[serde(default)]
    pub canary: CanarySection,
    /// Where reports are kept.
    #[serde(default)]
    pub spool: SpoolSection,
    /// One report per line for log shippers.
    #[serde(default)]
    pub ndjson: NdjsonSection,
    /// node_exporter textfile.
    #[serde(default)]
    pub prometheus: PrometheusSection,
    /// Store-and-forward upload.
    #[serde(default)]
    pub upload: UploadSection,
    /// The proxy the canary, the checks and the upload go through.
    #[serde(default)]
    pub proxy: ProxySection,
    /// Free labels copied into every report.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `[hub]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// Host name of the hub.
    pub host: String,
    /// Profile name or file.
    pub profile: Option<String>,
    /// Endpoints to check.
    pub endpoints: Option<Vec<String>>,
    /// Port overrides by endpoint.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// DNS server instead of the system's.
    pub dns_server: Option<String>,
    /// Interface to bind to.
    pub interface: Option<String>,
    /// Source address.
    pub source_ip: Option<String>,
    /// Trust store.
    #[serde(default, deserialize_with = "de_trust")]
    pub trust: Option<TrustSource>,
    /// Extra trust anchors (one path or a list).
    #[serde(default, deserialize_with = "de_paths")]
    pub ca_file: Vec<PathBuf>,
    /// Per-phase timeout.
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// The device's keep-alive.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub keepalive: Option<Duration>,
    /// SNTP servers of the clock check (`["none"]` disables; default: the
    /// profile's, or the `HUBPROBE_NTP_SERVER` environment variable).
    #[serde(default)]
    pub ntp_servers: Option<Vec<String>>,
    /// Timeout of the SNTP query.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub ntp_timeout: Option<Duration>,
    /// The MQTT version the probe and the canary speak: "3.1.1" or "5" (default: the profile's).
    #[serde(default, deserialize_with = "de_opt_mqtt_version")]
    pub mqtt_version: Option<crate::model::MqttVersion>,
}

fn de_opt_mqtt_version<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<crate::model::MqttVersion>, D::Error> {
    let s: Option<String> = Deserialize::deserialize(d)?;
    s.map(|s| s.parse().map_err(serde::de::Error::custom))
        .transpose()
}

/// `[identity]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// File holding the device connection string.
    pub connection_string_file: Option<PathBuf>,
    /// File holding a ready SAS token.
    pub sas_token_file: Option<PathBuf>,
    /// Device id when it cannot be derived.
    pub device_id: Option<String>,
    /// Lifetime of generated SAS tokens.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub sas_ttl: Option<Duration>,
    /// X.509 certificate.
    pub cert: Option<PathBuf>,
    /// X.509 key.
    pub key: Option<PathBuf>,
    /// MQTT user name (generic brokers).
    pub username: Option<String>,
    /// File holding the MQTT password.
    pub password_file: Option<PathBuf>,
}

/// `[schedule]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    /// Time between checks.
    #[serde(default = "default_interval", deserialize_with = "de_duration")]
    pub interval: Duration,
    /// Random spread (±) around the interval.
    #[serde(default = "default_spread", deserialize_with = "de_duration_zero")]
    pub spread: Duration,
    /// Deadline of one check.
    #[serde(default = "default_deadline", deserialize_with = "de_duration")]
    pub deadline: Duration,
    /// Time between tune runs (off when absent).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub tune_interval: Option<Duration>,
    /// RTT samples per tune run.
    #[serde(default = "default_tune_samples")]
    pub tune_samples: u32,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        ScheduleSection {
            interval: default_interval(),
            spread: default_spread(),
            deadline: default_deadline(),
            tune_interval: None,
            tune_samples: default_tune_samples(),
        }
    }
}

/// `[canary]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanarySection {
    /// Whether the canary session runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Endpoint (default: the profile's first MQTT endpoint among the checked ones).
    pub endpoint: Option<String>,
    /// PINGRESP timeout.
    #[serde(default = "default_ping_timeout", deserialize_with = "de_duration")]
    pub ping_timeout: Duration,
    /// First reconnect delay.
    #[serde(default = "default_reconnect_min", deserialize_with = "de_duration")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    #[serde(default = "default_reconnect_max", deserialize_with = "de_duration")]
    pub reconnect_max: Duration,
    /// Disconnects kept in the history.
    #[serde(default = "default_history")]
    pub history: usize,
    /// How long a session must live before its end resets the reconnect back-off:
    /// a session the server drops sooner (right after CONNACK, a take-over fight)
    /// counts as a failed attempt.
    #[serde(default = "default_stable_after", deserialize_with = "de_duration")]
    pub stable_after: Duration,
}

impl Default for CanarySection {
    fn default() -> Self {
        CanarySection {
            enabled: true,
            endpoint: None,
            ping_timeout: default_ping_timeout(),
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
            history: default_history(),
            stable_after: default_stable_after(),
        }
    }
}

/// `[spool]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolSection {
    /// Directory (default: `spool` under the state directory).
    pub dir: Option<PathBuf>,
    /// Most reports kept.
    #[serde(default = "default_max_reports")]
    pub max_reports: usize,
    /// Oldest report kept.
    #[serde(default = "default_max_age", deserialize_with = "de_duration")]
    pub max_age: Duration,
    /// Most bytes kept.
    #[serde(default = "default_max_bytes", deserialize_with = "de_bytes")]
    pub max_bytes: u64,
}

impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection {
            dir: None,
            max_reports: default_max_reports(),
            max_age: default_max_age(),
            max_bytes: default_max_bytes(),
        }
    }
}

/// `[ndjson]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NdjsonSection {
    /// The file (off when absent).
    pub path: Option<PathBuf>,
    /// Size at which it is rotated.
    #[serde(default = "default_ndjson_bytes", deserialize_with = "de_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept.
    #[serde(default = "default_keep")]
    pub keep: u32,
}

impl Default for NdjsonSection {
    fn default() -> Self {
        NdjsonSection {
            path: None,
            max_bytes: default_ndjson_bytes(),
            keep: default_keep(),
        }
    }
}

/// `[prometheus]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSection {
    /// The textfile (off when absent).
    pub textfile: Option<PathBuf>,
}

/// Where uploads go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UploadTo {
    /// IoT Hub device-to-cloud messages.
    Hub,
    /// A topic on the broker.
    Topic,
}

/// `[proxy]`: like `--proxy`, `--proxy-password-file` and `--noproxy`. Without
/// `url` the agent reads the environment as `hubprobe check` does (`HTTPS_PROXY`
/// …); `url = "none"` goes direct.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// `http://[user@]host:port`, `socks5://…`, `socks5h://…` or `none`.
    pub url: Option<String>,
    /// The proxy password, first line of this file.
    pub password_file: Option<PathBuf>,
    /// Hosts that go direct (like `NO_PROXY`).
    pub no_proxy: Option<String>,
}

/// `[upload]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadSection {
    /// Whether reports are uploaded.
    #[serde(default)]
    pub enabled: bool,
    /// Where to.
    #[serde(default = "default_upload_to")]
    pub to: UploadTo,
    /// Topic template for `to = "topic"`.
    pub topic: Option<String>,
    /// Reports per second at most.
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// Compact wire reports: chains delivered before go as references
    /// (`agent::wire`); `false` uploads the full reports as spooled.
    #[serde(default = "yes")]
    pub compact: bool,
    /// `identity` (JSON, the default) or `gzip`.
    #[serde(default)]
    pub encoding: super::wire::Encoding,
}

impl UploadSection {
    /// The topic reports are published to.
    pub(crate) fn topic(&self, plan: &CheckPlan) -> String {
        let upload = self;
        let device = plan
            .credentials
            .device_id()
            .map(str::to_string)
            .unwrap_or_else(crate::model::hostname);
        match upload.to {
            UploadTo::Hub => {
                let base = match plan.credentials.module_id() {
                    Some(m) => format!("devices/{device}/modules/{m}/messages/events/"),
                    None => format!("devices/{device}/messages/events/"),
                };
                // IoT Hub system and application properties in the topic: JSON, UTF-8,
                // and marks that say this is a hubprobe report.
                // gzip bodies say so in `$.ce` (IoT Hub routing queries then cannot
                // read the body: docs/agent.md, "What monitoring costs").
                let ce = match upload.encoding {
                    super::wire::Encoding::Identity => "utf-8",
                    super::wire::Encoding::Gzip => "gzip",
                };
                format!(
                    "{base}$.ct=application%2Fjson&$.ce={ce}&hubprobe=report&schema=hubprobe.report%2F1"
                )
            }
            UploadTo::Topic => upload
                .topic
                .clone()
                .unwrap_or_default()
                .replace("{device_id}", &device)
                .replace("{host}", &crate::model::hostname()),
        }
    }
}

impl Default for UploadSection {
    fn default() -> Self {
        UploadSection {
            enabled: false,
            to: default_upload_to(),
            topic: None,
            rate: default_rate(),
            compact: true,
            encoding: super::wire::Encoding::Identity,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_spread() -> Duration {
    Duration::from_secs(30)
}
fn default_deadline() -> Duration {
    Duration::from_secs(60)
}
fn default_tune_samples() -> u32 {
    30
}
fn default_ping_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_reconnect_min() -> Duration {
    Duration::from_secs(1)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(300)
}
fn default_history() -> usize {
    1000
}
fn default_stable_after() -> Duration {
    Duration::from_secs(60)
}
fn default_max_reports() -> usize {
    5000
}
fn default_max_age() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_max_bytes() -> u64 {
    64 << 20
}
fn default_ndjson_bytes() -> u64 {
    16 << 20
}
fn default_keep() -> u32 {
    3
}
fn default_upload_to() -> UploadTo {
    UploadTo::Hub
}
fn default_rate() -> f64 {
    5.0
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    crate::settings::parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_duration_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim() == "0" || s.trim() == "0s" {
        return Ok(Duration::ZERO);
    }
    crate::settings::parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_trust<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TrustSource>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<TrustSource>()
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn de_paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    })
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Number(n) => Ok(n),
        Size::Text(s) => parse_bytes(&s).map_err(serde::de::Error::custom),
    }
}

/// Parses a size: a number of bytes, optionally with a unit (`KiB`, `MiB`, `GiB`,
/// `kB`, `MB`, `GB`, `B`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 64MiB or 1000000"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1000,
        "KiB" | "K" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" | "M" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" | "G" => 1 << 30,
        other => {
            return Err(format!(
                "{s:?}: unknown size unit {other:?} (use B, KiB, MiB, GiB, kB, MB, GB)"
            ))
        }
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 / 2.0 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(v as u64)
}

impl AgentConfig {
    /// Reads and validates the file. Nothing else is touched.
    pub fn load(path: &Path) -> Result<AgentConfig, AgentConfigError> {
        let text = crate::fsio::read_bounded_text(path, crate::fsio::InputKind::Config).map_err(
            |source| AgentConfigError::Read {
                path: path.to_path_buf(),
                source,
            },
        )?;
        let cfg = Self::parse(&text, path)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Parses the text (for tests and `load`).
    pub fn parse(text: &str, path: &Path) -> Result<AgentConfig, AgentConfigError> {
        toml::from_str(text).map_err(|e| AgentConfigError::Parse {
            path: path.to_path_buf(),
            message: describe_toml_error(text, &e),
        })
    }

    /// Range and consistency checks that serde cannot express.
    pub fn validate(&self, path: &Path) -> Result<(), AgentConfigError> {
        let bad = |key: &str, message: String| AgentConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        if self.hub.host.trim().is_empty() {
            return Err(bad("[hub] host", "must not be empty".into()));
        }
        let s = &self.schedule;
        if s.interval < Duration::from_millis(100) {
            return Err(bad("[schedule] interval", "must be at least 100ms".into()));
        }
        if s.spread > s.interval / 2 {
            return Err(bad(
                "[schedule] spread",
                format!(
                    "{} is more than half the interval ({})",
                    humantime::format_duration(s.spread),
                    humantime::format_duration(s.interval)
                ),
            ));
        }
        if s.deadline > crate::config::MAX_DEADLINE {
            return Err(bad("[schedule] deadline", "at most 24h".into()));
        }
        if let Some(t) = s.tune_interval {
            if t < s.interval {
                return Err(bad(
                    "[schedule] tune_interval",
                    "must not be shorter than the check interval".into(),
                ));
            }
        }
        if !(1..=10_000).contains(&s.tune_samples) {
            return Err(bad("[schedule] tune_samples", "must be 1-10000".into()));
        }
        let c = &self.canary;
        if c.reconnect_min > c.reconnect_max {
            return Err(bad(
                "[canary] reconnect_min",
                "must not exceed reconnect_max".into(),
            ));
        }
        if c.reconnect_max > Duration::from_secs(24 * 3600) {
            return Err(bad("[canary] reconnect_max", "at most 24h".into()));
        }
        if c.ping_timeout > Duration::from_secs(3600) {
            return Err(bad("[canary] ping_timeout", "at most 1h".into()));
        }
        if c.stable_after > Duration::from_secs(24 * 3600) {
            return Err(bad("[canary] stable_after", "at most 24h".into()));
        }
        if !(1..=100_000).contains(&c.history) {
            return Err(bad("[canary] history", "must be 1-100000".into()));
        }
        let sp = &self.spool;
        if sp.max_reports == 0 {
            return Err(bad("[spool] max_reports", "must be at least 1".into()));
        }
        if sp.max_bytes < 64 * 1024 {
            return Err(bad("[spool] max_bytes", "must be at least 64KiB".into()));
        }
        if self.ndjson.max_bytes < 64 * 1024 {
            return Err(bad("[ndjson] max_bytes", "must be at least 64KiB".into()));
        }
        if self.ndjson.keep > 100 {
            return Err(bad("[ndjson] keep", "at most 100".into()));
        }
        let u = &self.upload;
        if !(u.rate.is_finite() && u.rate > 0.0 && u.rate <= 1000.0) {
            return Err(bad(
                "[upload] rate",
                "must be above 0 and at most 1000 per second".into(),
            ));
        }
        if u.enabled && u.to == UploadTo::Topic {
            match &u.topic {
                None => return Err(bad("[upload] topic", "required with to = \"topic\"".into())),
                Some(t) if t.is_empty() || t.contains(['#', '+']) => {
                    return Err(bad(
                        "[upload] topic",
                        "must be a non-empty topic name without wildcards".into(),
                    ))
                }
                _ => {}
            }
        }
        for (k, v) in &self.labels {
            check_label(k, v).map_err(|m| bad("[labels]", m))?;
        }
        Ok(())
    }

    /// The check plan, validated the way `hubprobe check` validates its options;
    /// option names in errors are replaced by the config keys.
    pub fn plan(&self, path: &Path, env: EnvCredentials) -> Result<CheckPlan, AgentConfigError> {
        let h = &self.hub;
        let id = &self.identity;
        let args = TargetArgs {
            host: Some(h.host.clone()),
            profile: h.profile.clone(),
            endpoints: h.endpoints.clone().unwrap_or_default(),
            ports: h.ports.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            dns_server: h.dns_server.clone(),
            interface: h.interface.clone(),
            source_ip: h.source_ip.clone(),
            timeout: h.timeout,
            trust: h.trust.unwrap_or(TrustSource::System),
            ca_file: h.ca_file.clone(),
            cert: id.cert.clone(),
            key: id.key.clone(),
            connection_string: None,
            connection_string_file: id.connection_string_file.clone(),
            sas_token: match &id.sas_token_file {
                None => None,
                Some(p) => Some(crate::auth::Secret::new(
                    crate::fsio::read_bounded_text(p, crate::fsio::InputKind::Secret)
                        .map_err(|e| AgentConfigError::Invalid {
                            path: path.to_path_buf(),
                            key: "[identity] sas_token_file".into(),
                            message: format!("cannot read {}: {e}", p.display()),
                        })?
                        .trim(),
                )),
            },
            device_id: id.device_id.clone(),
            username: id.username.clone(),
            password_file: id.password_file.clone(),
            sas_ttl: id.sas_ttl.unwrap_or(Duration::from_secs(3600)),
            sas_expiry: None,
            keepalive: h.keepalive,
            mqtt_version: h.mqtt_version,
            labels: self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            proxy: self.proxy.url.clone(),
            proxy_password_file: self.proxy.password_file.clone(),
            no_proxy: self.proxy.no_proxy.clone(),
            proxy_source: Some(crate::settings::Setting::Proxy.config_key().to_string()),
            ntp_servers: match &h.ntp_servers {
                Some(list) => list.clone(),
                None => std::env::var("HUBPROBE_NTP_SERVER")
                    .map(|v| v.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
            },
            ntp_timeout: h.ntp_timeout.unwrap_or(Duration::from_secs(3)),
            dps: Default::default(),
        };
        let mut plan = plan_target(&args, self.schedule.deadline, 0, env).map_err(|e| {
            AgentConfigError::Parse {
                path: path.to_path_buf(),
                message: crate::config::in_config_file_terms(&e),
            }
        })?;
        plan.deadline = self.schedule.deadline;
        if let Some(ep) = &self.canary.endpoint {
            let known = plan.endpoints.iter().any(|e| &e.name == ep);
            if !known {
                return Err(AgentConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: "[canary] endpoint".into(),
                    message: format!(
                        "{ep:?} is not among the checked endpoints ({})",
                        plan.endpoints
                            .iter()
                            .map(|e| e.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        Ok(plan)
    }
}

/// One line from a TOML error: `[section] key (line N): message`.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return msg;
    };
    let before = &text[..span.start.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    let section = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['))
        .unwrap_or("");
    match (section, key) {
        ("", "") => format!("line {line_no}: {msg}"),
        (s, "") => format!("{s} (line {line_no}): {msg}"),
        ("", k) => format!("{k} (line {line_no}): {msg}"),
        (s, k) => format!("{s} {k} (line {line_no}): {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<AgentConfig, AgentConfigError> {
        let p = Path::new("test.toml");
        let c = AgentConfig::parse(s, p)?;
        c.validate(p)?;
        Ok(c)
    }

    #[test]
    fn the_shipped_example_parses_and_validates() {
        let c = parse(include_str!("../../packaging/config.example.toml")).unwrap();
        assert_eq!(c.hub.host, "my-hub.azure-devices.net");
        assert_eq!(c.schedule.interval, Duration::from_secs(300));
        assert_eq!(c.spool.max_bytes, 64 << 20);
        assert!(c.canary.enabled && c.upload.enabled);
        assert_eq!(c.upload.to, UploadTo::Hub);
    }

    fn fifo(dir: &Path, name: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: c is a valid NUL-terminated path for the duration of the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        p
    }

    #[test]
    fn a_fifo_as_config_or_token_file_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let e = AgentConfig::load(&fifo(dir.path(), "config.toml")).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("config.toml") && m.contains("regular file"),
            "{m}"
        );
        let token = fifo(dir.path(), "token");
        let c = parse(&format!(
            "[hub]\nhost = \"h.example\"\n[identity]\nsas_token_file = \"{}\"\n",
            token.display()
        ))
        .unwrap();
        let m = c
            .plan(Path::new("test.toml"), EnvCredentials::default())
            .err()
            .unwrap()
            .to_string();
        assert!(m.contains("[identity] sas_token_file"), "{m}");
        assert!(m.contains("regular file"), "{m}");
    }

    #[test]
    fn mqtt_version_reaches_the_plan_and_a_bad_one_is_named() {
        let base = "[hub]\nhost = \"h.example\"\nprofile = \"mqtt-broker\"\n";
        let plan = parse(&format!("{base}mqtt_version = \"5\"\n"))
            .unwrap()
            .plan(Path::new("c.toml"), EnvCredentials::default())
            .unwrap();
        assert_eq!(plan.profile.mqtt.version, crate::model::MqttVersion::V5);
        let plan = parse(base)
            .unwrap()
            .plan(Path::new("c.toml"), EnvCredentials::default())
            .unwrap();
        assert_eq!(plan.profile.mqtt.version, crate::model::MqttVersion::V311);
        let m = parse(&format!("{base}mqtt_version = \"6\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("mqtt_version") && m.contains("3.1.1 or 5"),
            "{m}"
        );
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let c = parse("[hub]\nhost = \"h.example\"\n").unwrap();
        assert_eq!(c.schedule.spread, Duration::from_secs(30));
        assert!(c.canary.enabled);
        assert!(!c.upload.enabled);
        assert_eq!(c.spool.max_reports, 5000);
    }

    #[test]
    fn unknown_key_is_named_with_section_and_line() {
        let e = parse("[hub]\nhost = \"h\"\n[schedule]\nintervall = \"5m\"\n").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("[schedule] intervall (line 4)"), "{m}");
        assert!(m.contains("unknown field"), "{m}");
        assert!(!m.contains('\n'), "one line: {m}");
    }

    #[test]
    fn bad_duration_is_named() {
        let e = parse("[hub]\nhost = \"h\"\ntimeout = \"5 parsecs\"\n").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("[hub] timeout (line 3)"), "{m}");
        assert!(m.contains("not a duration"), "{m}");
    }

    #[test]
    fn range_errors_name_the_key() {
        let cases = [
            (
                "[schedule]\ninterval = \"10s\"\nspread = \"8s\"",
                "[schedule] spread",
            ),
            (
                "[canary]\nreconnect_min = \"10m\"\nreconnect_max = \"1m\"",
                "[canary] reconnect_min",
            ),
            ("[spool]\nmax_bytes = 100", "[spool] max_bytes"),
            ("[upload]\nenabled = true\nto = \"topic\"", "[upload] topic"),
            ("[upload]\nrate = 0", "[upload] rate"),
            ("[labels]\n\"bad key\" = \"x\"", "[labels]"),
        ];
        for (body, key) in cases {
            let e = parse(&format!("[hub]\nhost = \"h\"\n{body}\n")).unwrap_err();
            assert!(e.to_string().contains(key), "{body}: {e}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1.5 KiB").unwrap(), 1536);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert_eq!(parse_bytes("2GB").unwrap(), 2_000_000_000);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
    }

    #[test]
    fn plan_errors_use_config_keys() {
        let c = parse(
            "[hub]\nhost = \"h.example\"\nendpoints = [\"nope\"]\nprofile = \"mqtt-broker\"\n",
        )
        .unwrap();
        let e = c
            .plan(Path::new("c.toml"), EnvCredentials::default())
            .err()
            .unwrap();
        let m = e.to_string();
        assert!(m.contains("[hub] endpoints") && m.contains("nope"), "{m}");
    }
}
