//! Command-line definitions (clap derive). Secrets may come from the environment;
//! their values are never shown in `--help` (`hide_env_values`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::Secret;

/// hubprobe: why does this device drop off its IoT hub? Probes DNS, TCP, TLS and
/// MQTT against every hub endpoint, times each phase and explains each failure.
#[derive(Debug, Parser)]
#[command(name = "hubprobe", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe every endpoint of a hub: DNS → TCP → TLS → MQTT/AMQP/HTTPS, timed and classified.
    Check(Box<CheckArgs>),
    /// Measure the network's stability and the path's idle timeout; recommend a keep-alive.
    Tune(Box<TuneArgs>),
    /// Run periodically: checks on a jittered schedule, a canary MQTT session, spool,
    /// Prometheus textfile, store-and-forward upload (configured by a TOML file).
    Agent(AgentArgs),
    /// Serve the tuner's reflector: fast, parallel idle-timeout discovery near the hub.
    Reflect(ReflectArgs),
    /// Print an IoT Hub SAS token for a device connection string (prints a secret, on purpose).
    SasToken(SasTokenArgs),
    /// Print the JSON Schema of the report (hubprobe.report/1).
    Schema,
    /// List the built-in hub profiles, or print one.
    Profiles(ProfilesArgs),
    /// Print the failure-class catalogue (class, meaning, hint, IoT Hub error) as Markdown.
    Classes,
    /// Aggregate reports from many devices; tell a hub-side incident from device-side trouble.
    #[command(subcommand)]
    Fleet(FleetCommand),
}

/// Report format on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable lines.
    Text,
    /// The JSON report (hubprobe.report/1).
    Json,
    /// Prometheus text exposition (docs/metrics.md), as node_exporter's textfile collector reads it.
    Prometheus,
}

/// Summary format on stdout (`fleet summarize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummaryFormat {
    /// Human-readable sections.
    Text,
    /// The summary document (hubprobe.fleet/1).
    Json,
}

/// Which trust anchors verify the hub's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrustArg {
    /// The operating system's store (what most device stacks use).
    System,
    /// The Mozilla roots compiled into hubprobe.
    Bundled,
    /// Only the --ca-file anchors (reproduces a device with a minimal store).
    None,
}

/// Which hub, how to reach it and as whom: shared by `check` and `tune`.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Hub host name (default: HostName, or GatewayHostName, of the connection string).
    pub host: Option<String>,

    /// Hub profile: a built-in name (azure-iot-hub, aws-iot-core, mqtt-broker) or a .toml file.
    /// Default: from the host name (…azure-devices.net → azure-iot-hub, …amazonaws.com →
    /// aws-iot-core; with a connection string azure-iot-hub), else mqtt-broker.
    #[arg(long, env = "HUBPROBE_PROFILE")]
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

    /// Timeout of each phase.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,

    /// Trust store for the hub's certificate.
    #[arg(long, value_enum, default_value = "system")]
    pub trust: TrustArg,

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

    /// Lifetime of the SAS token generated from the connection string's key.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    pub sas_ttl: Duration,

    /// Pin the generated token's expiry (Unix seconds) instead of now + --sas-ttl.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub sas_expiry: Option<u64>,

    /// Keep-alive announced in MQTT CONNECT (default: the profile's).
    #[arg(long, value_parser = parse_duration)]
    pub keepalive: Option<Duration>,

    /// A label for fleet grouping, put in the report (repeatable): site=berlin-3.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

/// `hubprobe check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The hub and how to reach it.
    #[command(flatten)]
    pub target: TargetArgs,

    /// Deadline of the whole check.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub deadline: Duration,

    /// PINGREQ round trips after an accepted CONNACK.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub pings: u32,

    /// Output format on stdout.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputFormat,

    /// Also write the JSON report to this file (atomically: written whole or not at all).
    #[arg(long, value_name = "FILE")]
    pub report_file: Option<PathBuf>,

    /// More detail in text output (-v: certificates, addresses; -vv: all evidence).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// No colour (also when NO_COLOR is set or stdout is not a terminal).
    #[arg(long)]
    pub no_color: bool,
}

/// `hubprobe agent`. The flags and HUBPROBE_* variables override the file.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The configuration file (see packaging/config.example.toml).
    #[arg(
        long,
        env = "HUBPROBE_CONFIG",
        default_value = "/etc/hubprobe/config.toml"
    )]
    pub config: PathBuf,

    /// State directory: canary history, and the spool unless [spool] dir is set
    /// [default: $STATE_DIRECTORY (systemd), else /var/lib/hubprobe].
    #[arg(long, env = "HUBPROBE_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Spool directory (overrides [spool] dir).
    #[arg(long, env = "HUBPROBE_SPOOL_DIR", value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Time between checks (overrides [schedule] interval).
    #[arg(long, env = "HUBPROBE_INTERVAL", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    /// Random spread around the interval (overrides [schedule] spread; 0s for none).
    #[arg(long, value_parser = parse_duration_or_zero)]
    pub spread: Option<Duration>,

    /// Prometheus textfile (overrides [prometheus] textfile).
    #[arg(long, env = "HUBPROBE_TEXTFILE", value_name = "FILE")]
    pub textfile: Option<PathBuf>,

    /// A label for every report (repeatable; over the file's [labels]).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// One cycle (check, spool, textfile, upload), then exit with the check's exit
    /// code: for a systemd timer. No canary.
    #[arg(long, conflicts_with = "cycles")]
    pub once: bool,

    /// Stop after this many checks (uploads are drained first).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub cycles: Option<u64>,

    /// How long the final upload of --once / --cycles may take.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub drain_timeout: Duration,

    /// Validate the configuration (file, identity, profile) and exit: 0 valid, 3 not.
    #[arg(long)]
    pub check_config: bool,
}

/// `hubprobe tune`.
#[derive(Debug, Args)]
pub struct TuneArgs {
    /// The hub and how to reach it.
    #[command(flatten)]
    pub target: TargetArgs,

    /// A `hubprobe reflect` server near the hub (HOST:PORT): fast, parallel idle-timeout
    /// discovery. Without it the hub itself is used, one MQTT session at a time (slower).
    #[arg(long, value_name = "HOST:PORT")]
    pub reflector: Option<String>,

    /// Speak TLS to the reflector (verified with --trust/--ca-file against its host name).
    #[arg(long, requires = "reflector")]
    pub reflector_tls: bool,

    /// RTT samples for the stability figures.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub samples: u32,

    /// Mean time between RTT samples (exponentially distributed: Poisson sampling).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub sample_interval: Duration,

    /// Shortest idle time tried in discovery.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub min_idle: Duration,

    /// Longest idle time tried (default: a little above the profile's keep-alive cap;
    /// a path timeout above the cap cannot change the answer).
    #[arg(long, value_parser = parse_duration)]
    pub max_idle: Option<Duration>,

    /// Most connections the reflector ladder opens at once.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(2..=1024))]
    pub max_connections: u32,

    /// Notice a dead connection within this time (shortens the keep-alive).
    #[arg(long, value_parser = parse_duration)]
    pub detect_within: Option<Duration>,

    /// Never ping more often than this (e.g. a carrier rule: 5m); conflicts are reported.
    #[arg(long, value_parser = parse_duration)]
    pub operator_floor: Option<Duration>,

    /// Skip idle-timeout discovery (stability sampling only).
    #[arg(long)]
    pub no_discovery: bool,

    /// Output format on stdout.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputFormat,

    /// Also write the JSON report to this file (atomically).
    #[arg(long, value_name = "FILE")]
    pub report_file: Option<PathBuf>,

    /// No progress display on stderr (it is only shown on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

/// `hubprobe reflect`.
#[derive(Debug, Args)]
pub struct ReflectArgs {
    /// Address to listen on, e.g. 0.0.0.0:7883 or [::]:7883.
    #[arg(long, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,

    /// Serve TLS with this certificate chain (PEM; with --key).
    #[arg(long, value_name = "PEM", requires = "key")]
    pub cert: Option<PathBuf>,

    /// Private key for --cert (PEM).
    #[arg(long, value_name = "PEM", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Most connections served at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,

    /// Most connections served at once from one source address (one IPv6 /64), so
    /// that one client holding long idles cannot lock the others out; one more is
    /// answered "ERR busy". A `tune --max-connections` above it needs it raised.
    #[arg(long, default_value_t = crate::tune::reflector::DEFAULT_MAX_PER_ADDRESS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_per_address: u64,

    /// Longest idle time a client may ask for.
    #[arg(long, value_parser = parse_duration, default_value = "2h")]
    pub max_idle: Duration,
}

/// `hubprobe sas-token`.
#[derive(Debug, Args)]
pub struct SasTokenArgs {
    /// Device connection string [env: IOTHUB_DEVICE_CONNECTION_STRING].
    #[arg(long, value_parser = parse_secret)]
    pub connection_string: Option<Secret>,

    /// Read the connection string from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "connection_string")]
    pub connection_string_file: Option<PathBuf>,

    /// Expiry as Unix seconds.
    #[arg(long, value_name = "UNIX_SECONDS", conflicts_with = "ttl")]
    pub expiry: Option<u64>,

    /// Lifetime from now.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    pub ttl: Duration,
}

/// `hubprobe profiles`.
#[derive(Debug, Args)]
pub struct ProfilesArgs {
    /// Print this profile's TOML (a built-in name or a file).
    pub name: Option<String>,
}

/// Wraps a secret argument so that it cannot be printed by accident.
fn parse_secret(s: &str) -> Result<Secret, String> {
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

/// `hubprobe fleet …`.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Summarize reports: files, NDJSON (.gz too), directories (recursively) or - for stdin.
    Summarize(FleetSummarizeArgs),
    /// Generate a realistic fleet of reports as NDJSON (for tests and benchmarks).
    Synth(FleetSynthArgs),
}

/// `hubprobe fleet summarize`.
#[derive(Debug, Args)]
pub struct FleetSummarizeArgs {
    /// Report files, NDJSON files, directories, or - for stdin.
    #[arg(required = true, value_name = "PATH")]
    pub inputs: Vec<String>,

    /// Output format on stdout.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: SummaryFormat,

    /// Also summarize per value of this label (label.site, label.firmware, …).
    #[arg(long, value_name = "LABEL")]
    pub by: Option<String>,

    /// Also write a self-contained HTML page with charts to this file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// The label naming a device's network (incident view).
    #[arg(long, value_name = "LABEL", default_value = "network")]
    pub network_label: String,

    /// The label naming a device's site.
    #[arg(long, value_name = "LABEL", default_value = "site")]
    pub site_label: String,

    /// Width of the incident view's time buckets.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub bucket: Duration,

    /// Devices failing the same way in one bucket that make it an incident
    /// (default: 2 % of the devices seen, at least 5).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub incident_min_devices: Option<u64>,

    /// Distinct networks that make an incident hub-side.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..))]
    pub incident_min_networks: u64,

    /// Parser threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub threads: u32,
}

/// `hubprobe fleet synth`.
#[derive(Debug, Args)]
pub struct FleetSynthArgs {
    /// Devices.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub devices: u32,

    /// Sites.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub sites: u32,

    /// Period covered.
    #[arg(long, value_parser = parse_duration, default_value = "12h")]
    pub duration: Duration,

    /// Check period of every device.
    #[arg(long, value_parser = parse_duration, default_value = "15m")]
    pub interval: Duration,

    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Inject every failure pattern (firewall on 8883 at site-02, devices missing the
    /// root CA, a hub incident, a NAT dropping idle flows after 240 s on cell-b).
    #[arg(long)]
    pub patterns: bool,

    /// Share of reports written twice (store-and-forward repeats), 0–1.
    #[arg(long, default_value_t = 0.0)]
    pub repeat_share: f64,

    /// Write here instead of stdout (gzip-compressed when it ends in .gz).
    #[arg(long, short = 'O', value_name = "FILE")]
    pub out: Option<PathBuf>,
}
