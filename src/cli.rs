//! Command-line definitions (clap derive). Secrets may come from the environment;
//! their values are never shown in `--help` (`hide_env_values`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::Secret;
use crate::settings::parse_secret;
pub use crate::settings::{
    check_label, parse_duration, parse_duration_or_zero, parse_label, TargetArgs,
};

/// hubprobe: why does this device drop off its IoT hub? Probes DNS, TCP, TLS and
/// MQTT against every hub endpoint, times each phase and explains each failure.
#[derive(Debug, Parser)]
#[command(
    name = "hubprobe",
    version,
    about,
    long_about,
    propagate_version = true
)]
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
    /// Print the shell completion script for bash, zsh, fish, elvish or PowerShell.
    ///
    /// The Debian package installs the bash, zsh and fish scripts where those shells
    /// look for them. By hand, e.g. for bash: hubprobe completions bash >
    /// ~/.local/share/bash-completion/completions/hubprobe
    Completions(CompletionsArgs),
    /// Write the manual pages (hubprobe.1 and one per subcommand) into a directory.
    Man(ManArgs),
}

/// Report format on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable lines.
    Text,
    /// The JSON report (hubprobe.report/1).
    Json,
    /// Prometheus text exposition (metrics.md in /usr/share/doc/hubprobe), as node_exporter's textfile collector reads it.
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

/// `hubprobe check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The hub and how to reach it.
    #[command(flatten)]
    pub target: TargetArgs,

    /// Deadline of the whole check: a duration like 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    pub deadline: Duration,

    /// PINGREQ round trips after an accepted CONNACK.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub pings: u32,

    /// Probe the path MTU on every TLS endpoint (TCP + TLS re-run with a clamped
    /// MSS), not only after a TLS handshake timed out.
    #[arg(long)]
    pub mtu_probe: bool,

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

    /// DPS: register the device (the MQTT registration flow) and check the hub DPS
    /// assigns, with the same key or certificate, in the same report. CHANGES DPS
    /// STATE: a registration is recorded, and under some reprovisioning policies it
    /// moves the device to another hub. Without it a DPS check is side-effect free.
    #[arg(long)]
    pub register: bool,

    /// DPS: also check this hub (the one the device was last assigned), when DPS
    /// assigns none in this run; side-effect free without --register.
    #[arg(long, value_name = "HOST")]
    pub assigned_hub: Option<String>,

    /// DPS: the profile of the assigned hub (default azure-iot-hub).
    #[arg(long, value_name = "PROFILE")]
    pub hub_profile: Option<String>,

    /// DPS: check only these endpoints of the assigned hub (comma-separated).
    #[arg(
        long = "hub-endpoint",
        value_name = "NAME[,NAME]",
        value_delimiter = ','
    )]
    pub hub_endpoints: Vec<String>,

    /// DPS: override a port of the assigned hub, e.g. --hub-port mqtt-tls=18883.
    #[arg(long = "hub-port", value_name = "ENDPOINT=PORT", value_delimiter = ',')]
    pub hub_ports: Vec<String>,
}

/// `hubprobe agent`. The flags and HUBPROBE_* variables override the file.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The configuration file. The Debian package installs a commented one at
    /// /etc/hubprobe/config.toml (a copy: /usr/share/doc/hubprobe/examples/config.toml).
    #[arg(
        long,
        env = "HUBPROBE_CONFIG",
        hide_env_values = true,
        value_name = "FILE",
        default_value = "/etc/hubprobe/config.toml"
    )]
    pub config: PathBuf,

    /// State directory: canary history, and the spool unless [spool] dir is set
    /// [default: $STATE_DIRECTORY (systemd), else /var/lib/hubprobe].
    #[arg(
        long,
        env = "HUBPROBE_STATE_DIR",
        hide_env_values = true,
        value_name = "DIR"
    )]
    pub state_dir: Option<PathBuf>,

    /// Spool directory (overrides [spool] dir).
    #[arg(
        long,
        env = "HUBPROBE_SPOOL_DIR",
        hide_env_values = true,
        value_name = "DIR"
    )]
    pub spool_dir: Option<PathBuf>,

    /// Time between checks: a duration like 30s, 5m, 1h (overrides [schedule] interval).
    #[arg(
        long,
        env = "HUBPROBE_INTERVAL",
        hide_env_values = true,
        value_name = "DURATION",
        value_parser = parse_duration
    )]
    pub interval: Option<Duration>,

    /// Random spread around the interval: a duration like 30s, 5m, 1h, or 0s for none (overrides [schedule]
    /// spread).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_or_zero)]
    pub spread: Option<Duration>,

    /// Prometheus textfile (overrides [prometheus] textfile).
    #[arg(
        long,
        env = "HUBPROBE_TEXTFILE",
        hide_env_values = true,
        value_name = "FILE"
    )]
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

    /// How long the final upload of --once / --cycles may take: a duration like 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
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

    /// Mean time between RTT samples (exponentially distributed: Poisson sampling):
    /// a duration like 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1s")]
    pub sample_interval: Duration,

    /// Shortest idle time tried in discovery: a duration like 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    pub min_idle: Duration,

    /// Longest idle time tried: a duration like 30s, 5m, 1h (default: a little above the profile's
    /// keep-alive cap; a path timeout above the cap cannot change the answer).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_idle: Option<Duration>,

    /// Most connections the reflector ladder opens at once.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(2..=1024))]
    pub max_connections: u32,

    /// Notice a dead connection within this time (shortens the keep-alive): a duration like 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub detect_within: Option<Duration>,

    /// Never ping more often than this (e.g. a carrier rule: 5m); conflicts are reported.
    /// A duration like 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
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

    /// More detail in text output (-v: certificates, addresses).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// No colour (also when NO_COLOR is set or stdout is not a terminal).
    #[arg(long)]
    pub no_color: bool,
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

    /// Longest idle time a client may ask for: a duration like 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "2h")]
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

    /// Lifetime from now: a duration like 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1h")]
    pub ttl: Duration,

    /// Print the Device Provisioning Service token of --id-scope / --registration-id
    /// (resource {idScope}/registrations/{registrationId}, skn=registration) instead
    /// of an IoT Hub token; the key from --symmetric-key-file or PROVISIONING_SYMMETRIC_KEY.
    #[arg(long, conflicts_with_all = ["connection_string", "connection_string_file"])]
    pub dps: bool,

    /// The DPS identity (with --dps).
    #[command(flatten)]
    pub dps_identity: crate::settings::DpsArgs,
}

/// `hubprobe completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `hubprobe man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing; existing pages are replaced).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,

    /// Date printed in the pages' footer (YYYY-MM-DD) [default: from SOURCE_DATE_EPOCH,
    /// else today].
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_man_date)]
    pub date: Option<String>,
}

/// `hubprobe profiles`.
#[derive(Debug, Args)]
pub struct ProfilesArgs {
    /// Print this profile's TOML (a built-in name or a file).
    pub name: Option<String>,
}

/// The completion script of `shell` for the whole command tree, as
/// `hubprobe completions SHELL` prints it.
pub fn completion_script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "hubprobe", &mut out);
    out
}

/// The manual pages of the command tree: `(file name, roff text)` for `hubprobe.1`
/// and one page per subcommand at every level (`hubprobe-check.1`,
/// `hubprobe-fleet-summarize.1`, …), each dated `date` (YYYY-MM-DD) and ending in a
/// SEE ALSO section that links the pages to each other.
pub fn man_pages(date: &str) -> Vec<(String, Vec<u8>)> {
    use clap_mangen::roff::{bold, italic, roman, Roff};

    fn collect(cmd: &clap::Command, out: &mut Vec<clap::Command>) {
        out.push(cmd.clone());
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            collect(sub, out);
        }
    }
    let mut root = <Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    // Builds the tree: subcommands get their display names (hubprobe-check).
    root.build();
    let mut commands = Vec::new();
    collect(&root, &mut commands);
    let name_of = |c: &clap::Command| {
        c.get_display_name()
            .unwrap_or_else(|| c.get_name())
            .to_string()
    };
    let names: Vec<String> = commands.iter().map(name_of).collect();
    commands
        .into_iter()
        .map(|cmd| {
            let name = name_of(&cmd);
            let man = clap_mangen::Man::new(cmd)
                .title(name.to_uppercase())
                .source(concat!("hubprobe ", env!("CARGO_PKG_VERSION")))
                .date(date)
                .manual("hubprobe manual");
            let file = man.get_filename();
            let mut rendered = Vec::new();
            // Writing into a Vec cannot fail.
            let _ = man.render(&mut rendered);
            // clap_mangen separates an option's help from its "Possible values:" list
            // with a break, an empty line and a break; an empty line is a paragraph
            // break that mandoc -T lint warns about. One vertical space says the same.
            let mut text = String::from_utf8_lossy(&rendered)
                .replace("\n.br\n\n.br\n", "\n.sp\n")
                .into_bytes();
            let mut see_also = Roff::new();
            see_also.control("SH", ["EXIT STATUS"]);
            see_also.text([roman(
                "0 on success, 3 (UNKNOWN) on a usage error, an invalid configuration or an \
                 internal error. The commands that judge the network (check, tune, agent \
                 --once) exit with their verdict:",
            )]);
            for (code, meaning) in EXIT_STATUS {
                see_also.control("TP", []);
                see_also.text([bold(code.to_string())]);
                see_also.text([roman(meaning)]);
            }
            if name == "hubprobe" {
                see_also.control("SH", ["ENVIRONMENT"]);
                for (var, meaning) in environment(&root) {
                    see_also.control("TP", []);
                    see_also.text([bold(var)]);
                    see_also.text([roman(meaning)]);
                }
                see_also.control("SH", ["FILES"]);
                for (path, meaning) in FILES {
                    see_also.control("TP", []);
                    see_also.text([italic(path)]);
                    see_also.text([roman(meaning)]);
                }
            }
            see_also.control("SH", ["SEE ALSO"]);
            let others: Vec<&String> = names.iter().filter(|n| **n != name).collect();
            for (i, other) in others.iter().enumerate() {
                let sep = if i + 1 < others.len() { "," } else { "" };
                see_also.text([bold(other.as_str()), roman(format!("(1){sep}"))]);
            }
            see_also.control("PP", []);
            see_also.text([roman(
                "/usr/share/doc/hubprobe/ (README.md, failure-classes.md, metrics.md, agent.md)",
            )]);
            // Apostrophes become \*(Aq, defined by the preamble the page already has.
            let extra = see_also.render();
            let extra = extra.find(".SH").map_or("", |at| &extra[at..]);
            text.extend_from_slice(extra.as_bytes());
            (file, text)
        })
        .collect()
}

/// The exit codes of every subcommand, for the manual pages (src/exit.rs).
const EXIT_STATUS: [(u8, &str); 4] = [
    (
        0,
        "OK: every probed endpoint works and no finding is worse than info.",
    ),
    (
        1,
        "WARNING: some endpoints fail while another works, or a warning finding.",
    ),
    (2, "CRITICAL: the device cannot connect to the hub."),
    (
        3,
        "UNKNOWN: a usage error, an invalid configuration or an internal error.",
    ),
];

/// Files of a packaged install, for hubprobe(1).
const FILES: [(&str, &str); 4] = [
    (
        "/etc/hubprobe/config.toml",
        "The agent's configuration (every key documented in it).",
    ),
    (
        "/etc/hubprobe/connection-string",
        "The device identity the packaged configuration reads (root:hubprobe, mode 0640).",
    ),
    (
        "/var/lib/hubprobe",
        "The agent's state: spool, canary history, the Prometheus textfile hubprobe.prom.",
    ),
    (
        "/usr/share/hubprobe/prometheus/hubprobe.rules.yml",
        "Alert and recording rules for Prometheus.",
    ),
];

/// The environment variables hubprobe reads, for hubprobe(1): those behind options
/// (from the clap tree, with the options' names) and the credentials and switches
/// read directly.
fn environment(root: &clap::Command) -> Vec<(String, String)> {
    fn walk(cmd: &clap::Command, path: &str, out: &mut BTreeMap<String, Vec<String>>) {
        for arg in cmd.get_arguments() {
            if let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) {
                out.entry(env.to_string_lossy().into_owned())
                    .or_default()
                    .push(format!("{path} --{long}"));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }
    use std::collections::BTreeMap;
    let mut options = BTreeMap::new();
    walk(root, "hubprobe", &mut options);
    let mut out: Vec<(String, String)> = [
        (
            "IOTHUB_DEVICE_CONNECTION_STRING",
            "The device connection string, when no credential option is given. Never printed.",
        ),
        (
            "HUBPROBE_SAS_TOKEN",
            "A ready SAS token, when no credential option is given. Never printed.",
        ),
        (
            "HUBPROBE_MQTT_PASSWORD",
            "The MQTT password for --username. Never printed.",
        ),
        (
            "RUST_LOG",
            "Log filter for stderr (off by default; the agent logs at info).",
        ),
        ("NO_COLOR", "No colour in text output."),
        (
            "SOURCE_DATE_EPOCH",
            "The date hubprobe man writes into the pages.",
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (var, opts) in options {
        out.push((var, format!("Default of {}.", opts.join(", "))));
    }
    out
}

/// Checks a `--date` for `hubprobe man`: YYYY-MM-DD.
fn parse_man_date(s: &str) -> Result<String, String> {
    let ok = s.len() == 10
        && s.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        })
        && humantime::parse_rfc3339_weak(&format!("{s} 00:00:00")).is_ok();
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a date like 2026-01-31"))
    }
}

/// `hubprobe fleet …`.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Summarize reports: files, NDJSON (.gz too), directories (recursively) or - for stdin.
    Summarize(FleetSummarizeArgs),
    /// Generate a realistic fleet of reports as NDJSON (for tests and benchmarks).
    Synth(FleetSynthArgs),
    /// Print the JSON Schema of the fleet summary (hubprobe.fleet/1).
    Schema,
    /// Name the cause of every disconnect in IoT Hub's Connections resource logs
    /// (storage, Event Hubs, Log Analytics JSON or CSV; .gz, directories, - for stdin).
    Explain(FleetExplainArgs),
}

/// Output of `fleet explain` on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExplainFormat {
    /// Human-readable sections.
    Text,
    /// The explanation document (hubprobe.explain/1).
    Json,
}

/// `hubprobe fleet explain`.
#[derive(Debug, Args)]
pub struct FleetExplainArgs {
    /// Connections log files, directories, or - for stdin.
    #[arg(required = true, value_name = "PATH")]
    pub inputs: Vec<String>,

    /// The devices' hubprobe reports (NDJSON, report files, spool, routing JSON or
    /// Avro; .gz, directories) to join: the precise cause of each disconnect.
    #[arg(long, value_name = "PATH")]
    pub reports: Vec<String>,

    /// Output format on stdout.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: ExplainFormat,

    /// Also write a self-contained HTML page to this file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Width of the many-devices window's buckets: a duration like 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub bucket: Duration,

    /// Devices disconnecting in one bucket that make a window (default: 2 % of the
    /// devices seen, at least 5).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub min_devices: Option<u64>,

    /// Distinct masked IP prefixes that make a window hub-side.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..))]
    pub min_prefixes: u64,

    /// Largest clock difference between the hub's and a device's record of one
    /// disconnect: a duration like 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "2m")]
    pub clock_tolerance: Duration,
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

    /// Width of the incident view's time buckets: a duration like 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
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

    /// No progress display on stderr (it is only shown on a terminal anyway).
    #[arg(short = 'q', long)]
    pub quiet: bool,
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

    /// Period covered: a duration like 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "12h")]
    pub duration: Duration,

    /// Check period of every device: a duration like 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "15m")]
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
