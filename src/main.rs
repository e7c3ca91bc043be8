//! The `hubprobe` binary: parse the command line, run, map the verdict to the exit
//! code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN). `anyhow` lives only here.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::Parser;

use hubprobe::auth::sas::{generate_sas_token, resource_uri};
use hubprobe::cli::{
    AgentArgs, CheckArgs, Cli, Command, ManArgs, OutputFormat, ProfilesArgs, ReflectArgs,
    SasTokenArgs, TuneArgs,
};
use hubprobe::exit::ExitCode;
use hubprobe::profile::{builtin_names, Profile, BUILTIN};
use hubprobe::report::{self, text};

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::Ok,
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ExitCode::Unknown,
                _ => ExitCode::Unknown,
            };
            let _ = e.print();
            return code.into();
        }
    };
    // The agent logs what it does by default (to the journal under systemd).
    let default_filter = match cli.command {
        Command::Agent(_) => "hubprobe=info",
        _ => "off",
    };
    init_logging(default_filter);
    match run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("hubprobe: error: {}", error_line(&e));
            ExitCode::Unknown.into()
        }
    }
}

/// The error and its causes on one line, `: `-separated, each cause once: a
/// cause whose text the line already holds (a message that embeds its source,
/// a transparent wrapper) is not repeated.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Logs go to stderr, filtered by RUST_LOG (off by default). No log line carries a
/// secret: credentials are wrapped in `Secret`, whose Debug is redacted, and the
/// WebSocket library's frame dumps (debug/trace, which would show the MQTT CONNECT
/// with its SAS token) are dropped whatever RUST_LOG asks for.
fn init_logging(default_filter: &str) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;

    // Nothing to log and nothing asked for: no subscriber at all (the filter's
    // parser and the formatter would only cost start-up time and memory).
    let asked = std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty());
    if default_filter == "off" && !asked {
        return;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let no_payload_dumps = tracing_subscriber::filter::filter_fn(|meta| {
        let payload_dumper = meta.target().starts_with("tungstenite")
            || meta.target().starts_with("tokio_tungstenite");
        !(payload_dumper && *meta.level() > tracing::Level::INFO)
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_filter(no_payload_dumps)
        .with_filter(filter);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(args) => check(&args),
        Command::Tune(args) => tune(&args),
        Command::Agent(args) => agent(&args),
        Command::Reflect(args) => reflect(&args),
        Command::SasToken(args) => sas_token(&args),
        Command::Schema => {
            print_stdout(report::JSON_SCHEMA)?;
            Ok(ExitCode::Ok)
        }
        Command::Profiles(args) => profiles(&args),
        Command::Fleet(cmd) => fleet(&cmd),
        Command::Classes => {
            print_stdout(&hubprobe::model::catalogue_markdown())?;
            Ok(ExitCode::Ok)
        }
        Command::Completions(args) => {
            let script = hubprobe::cli::completion_script(args.shell);
            let mut out = std::io::stdout().lock();
            out.write_all(&script)
                .and_then(|_| out.flush())
                .context("cannot write to stdout")?;
            Ok(ExitCode::Ok)
        }
        Command::Man(args) => man(&args),
    }
}

/// `hubprobe man`: every page written atomically into `--out-dir`.
fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    let date = match &args.date {
        Some(d) => d.clone(),
        None => man_date()?,
    };
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    for (name, text) in hubprobe::cli::man_pages(&date) {
        let path = args.out_dir.join(&name);
        hubprobe::fsio::write_atomic(&path, &text)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::Ok)
}

/// The pages' date: SOURCE_DATE_EPOCH (reproducible builds) if set, else today (UTC).
fn man_date() -> anyhow::Result<String> {
    let when = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => {
            let secs: u64 = v
                .trim()
                .parse()
                .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not Unix seconds"))?;
            UNIX_EPOCH + std::time::Duration::from_secs(secs)
        }
        Err(_) => SystemTime::now(),
    };
    Ok(humantime::format_rfc3339_seconds(when).to_string()[..10].to_string())
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let mut plan = hubprobe::config::plan_target(
        &args.target,
        args.deadline,
        args.pings,
        hubprobe::config::EnvCredentials::from_process(),
    )?;
    plan.mtu_probe = args.mtu_probe;
    // Find out now, not after the probes, whether the report can be written.
    let pending = pending_report(args.report_file.as_deref())?;

    let provision = hubprobe::dps::ProvisionOptions {
        register: args.register,
        assigned_hub: args.assigned_hub.clone(),
        hub: hubprobe::dps::HubTarget::new(
            args.hub_profile.as_deref(),
            &args.hub_endpoints,
            &args.hub_ports,
        )?,
    };
    provision.validate(&plan)?;

    let runtime = runtime()?;
    let report = runtime.block_on(hubprobe::dps::run(&plan, &provision));
    drop(runtime);

    emit(&report, args.output, args.verbose, args.no_color, pending)
}

/// The report file, created now so an unwritable one fails before the probes run.
fn pending_report(path: Option<&std::path::Path>) -> anyhow::Result<Option<PendingFile>> {
    path.map(PendingFile::create).transpose()
}

/// The single-threaded runtime a check or a tune runs on: the probes are I/O-bound
/// and few, so one thread starts faster and uses less memory than a pool.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Prints the report in the asked format and commits the report file. Both are
/// attempted; either failing makes the run UNKNOWN (exit 3). The exit code is the
/// verdict's otherwise.
fn emit(
    report: &hubprobe::model::Report,
    output: OutputFormat,
    verbose: u8,
    no_color: bool,
    pending: Option<PendingFile>,
) -> anyhow::Result<ExitCode> {
    let json = serde_json::to_string_pretty(report).context("cannot serialize the report")?;
    let printed = match output {
        OutputFormat::Json => print_stdout(&format!("{json}\n")),
        OutputFormat::Prometheus => print_stdout(&report::prometheus::render(report, None)),
        OutputFormat::Text => {
            let color = !no_color
                && std::env::var_os("NO_COLOR").is_none()
                && std::io::stdout().is_terminal();
            print_stdout(&text::render(report, text::TextOptions { color, verbose }))
        }
    };
    let written = match pending {
        Some(file) => file.commit(json.as_bytes()),
        None => Ok(()),
    };
    printed?;
    written?;
    Ok(report.verdict.exit_code())
}

fn tune(args: &TuneArgs) -> anyhow::Result<ExitCode> {
    use hubprobe::tune::run::{Mode, TuneSettings};
    let plan = hubprobe::config::plan_target(
        &args.target,
        hubprobe::config::MAX_DEADLINE,
        0,
        hubprobe::config::EnvCredentials::from_process(),
    )?;
    if hubprobe::tune::run::mqtt_endpoint(&plan).is_none() {
        bail!("the selected endpoints include no MQTT endpoint to tune");
    }
    let pending = pending_report(args.report_file.as_deref())?;
    let runtime = runtime()?;
    let mode = match &args.reflector {
        None => Mode::Hub,
        Some(spec) => {
            let target = runtime.block_on(reflector_target(spec, args.reflector_tls, &plan))?;
            Mode::Reflector {
                target,
                name: spec.clone(),
            }
        }
    };
    let cap = plan.profile.mqtt.keepalive_max;
    // A little above the cap (a timeout above it cannot change the answer), but no
    // more than RFC 5382's 2 h 4 min for profiles without a real cap.
    let max_idle = args
        .max_idle
        .unwrap_or_else(|| cap.mul_f64(1.1).min(std::time::Duration::from_secs(7440)));
    if args.min_idle >= max_idle {
        bail!(
            "--min-idle must be below --max-idle ({})",
            humantime::format_duration(max_idle)
        );
    }
    let settings = TuneSettings {
        mode,
        samples: args.samples,
        sample_interval: args.sample_interval,
        min_idle: args.min_idle,
        max_idle,
        max_connections: args.max_connections as usize,
        detect_within: args.detect_within,
        operator_floor: args.operator_floor,
        discovery: !args.no_discovery,
    };
    let show = !args.no_progress && std::io::stderr().is_terminal();
    let bar = ProgressBar { show };
    let report = runtime.block_on(hubprobe::tune::run::tune(&plan, &settings, &bar));
    bar.clear();
    drop(runtime);
    emit(&report, args.output, args.verbose, args.no_color, pending)
}

/// Resolves `HOST:PORT` of the reflector (DNS like the hub's) and sets up TLS.
async fn reflector_target(
    spec: &str,
    tls: bool,
    plan: &hubprobe::check::CheckPlan,
) -> anyhow::Result<hubprobe::tune::reflector::ReflectorTarget> {
    use hubprobe::tune::reflector::ReflectorTarget;
    let (host, port) = spec
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>().ok()?,
            ))
        })
        .filter(|(h, p)| !h.is_empty() && *p > 0)
        .with_context(|| format!("--reflector {spec:?}: expected HOST:PORT"))?;
    let opts = hubprobe::probe::dns::DnsOptions {
        server: plan.dns_server,
        timeout: plan.timeout,
    };
    let out = hubprobe::probe::dns::resolve(host, &opts).await;
    let Some(addr) = out
        .addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or(out.addresses.first())
    else {
        bail!(
            "--reflector {spec}: cannot resolve {host}: {}",
            out.result.message.as_deref().unwrap_or("no address")
        );
    };
    let addr = std::net::SocketAddr::new(*addr, port);
    let proxy = plan.active_proxy().cloned();
    if !tls {
        return Ok(ReflectorTarget::plain(addr).with_proxy(proxy));
    }
    let mut options = hubprobe::probe::tls::TlsOptions::new(host);
    options.timeout = plan.timeout;
    Ok(ReflectorTarget::tls(addr, options, plan.trust.clone()).with_proxy(proxy))
}

fn agent(args: &AgentArgs) -> anyhow::Result<ExitCode> {
    use hubprobe::agent::run::{default_state_dir, load, run, AgentOptions};
    let opts = AgentOptions {
        config: args.config.clone(),
        state_dir: args.state_dir.clone().unwrap_or_else(default_state_dir),
        spool_dir: args.spool_dir.clone(),
        interval: args.interval,
        spread: args.spread,
        textfile: args.textfile.clone(),
        labels: args.labels.clone(),
        once: args.once,
        cycles: args.cycles,
        drain_timeout: args.drain_timeout,
    };
    // The configuration file is refused up front when it is not a regular file
    // (a FIFO would block the read) or is too large.
    hubprobe::fsio::check_input_file(&opts.config, hubprobe::fsio::InputKind::Config).map_err(
        |problem| {
            anyhow::anyhow!(
                "cannot read config {} (--config): {problem}",
                opts.config.display()
            )
        },
    )?;
    let cfg = load(&opts)?;
    if args.check_config {
        // The identity, profile, trust store and files too, as a start would.
        let plan = cfg.plan(
            &opts.config,
            hubprobe::config::EnvCredentials::from_process(),
        )?;
        println!("{}: valid", opts.config.display());
        // What this configuration will cost a metered link per day.
        let spool_dir = cfg
            .spool
            .dir
            .clone()
            .unwrap_or_else(|| opts.state_dir.join("spool"));
        let inputs = hubprobe::agent::bill::inputs_for(&cfg, &plan, &spool_dir);
        print!(
            "{}",
            hubprobe::agent::bill::render(&hubprobe::agent::bill::estimate(&inputs))
        );
        return Ok(ExitCode::Ok);
    }
    let runtime = runtime()?;
    Ok(runtime.block_on(run(opts, cfg))?)
}

fn reflect(args: &ReflectArgs) -> anyhow::Result<ExitCode> {
    use hubprobe::tune::reflector::{serve, server_tls_config, ReflectorConfig};
    let tls = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => Some(server_tls_config(c, k)?),
        _ => None,
    };
    let cfg = ReflectorConfig {
        max_connections: args.max_connections,
        max_per_address: usize::try_from(args.max_per_address).unwrap_or(usize::MAX),
        max_idle: args.max_idle,
        ..ReflectorConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let local = listener.local_addr().ok();
        eprintln!(
            "hubprobe reflect: listening on {} ({})",
            local.map(|a| a.to_string()).unwrap_or_default(),
            if tls.is_some() { "TLS" } else { "plain TCP" }
        );
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            }
        };
        serve(listener, tls, cfg, shutdown).await.context("reflector")?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::Ok)
}

/// A one-line progress display on stderr (only on a terminal).
struct ProgressBar {
    show: bool,
}

impl ProgressBar {
    fn clear(&self) {
        if self.show {
            eprint!("\r\x1b[2K");
        }
    }
}

impl hubprobe::tune::run::Progress for ProgressBar {
    fn update(&self, stage: &str, done: u64, total: u64, note: &str) {
        if !self.show {
            return;
        }
        let width = 30usize;
        let filled = if total == 0 {
            0
        } else {
            (done.min(total) as usize * width) / total as usize
        };
        eprint!(
            "\r\x1b[2K{stage:<10} [{}{}] {done}/{total} {note}",
            "#".repeat(filled),
            "-".repeat(width - filled)
        );
    }
}

/// `fleet summarize` progress on stderr (only on a terminal): bytes read of the
/// total and reports per second, redrawn in place; a last line stays.
struct FleetProgress {
    show: bool,
}

impl hubprobe::fleet::Progress for FleetProgress {
    fn update(&self, p: &hubprobe::fleet::ProgressState, done: bool) {
        if !self.show {
            return;
        }
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let secs = p.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            p.reports as f64 / secs
        } else {
            0.0
        };
        let of = match p.bytes_total {
            Some(t) if t > 0 => format!(
                " of {:.1} MiB ({:.0} %)",
                mib(t),
                (p.bytes_read.min(t) as f64 * 100.0) / t as f64
            ),
            _ => String::new(),
        };
        eprint!(
            "\r\x1b[2Kfleet summarize: read {:.1} MiB{of}, {} reports, {:.0} reports/s{}",
            mib(p.bytes_read),
            p.reports,
            rate,
            if done {
                format!(" in {secs:.1} s\n")
            } else {
                String::new()
            }
        );
    }
}

fn sas_token(args: &SasTokenArgs) -> anyhow::Result<ExitCode> {
    let env = hubprobe::config::EnvCredentials::from_process();
    if args.dps {
        return dps_sas_token(args, env);
    }
    let d = &args.dps_identity;
    if d.symmetric_key_file.is_some() || d.enrollment_group {
        bail!("--symmetric-key-file and --enrollment-group make a DPS token: add --dps");
    }
    let value = args
        .connection_string
        .as_ref()
        .or(env.connection_string.as_ref());
    let Some(cs) = hubprobe::config::load_connection_string(
        value.map(hubprobe::auth::Secret::expose),
        args.connection_string_file.as_deref(),
    )?
    else {
        bail!("no connection string: set IOTHUB_DEVICE_CONNECTION_STRING, or give --connection-string or --connection-string-file");
    };
    let Some(key) = &cs.shared_access_key else {
        bail!("the connection string has no SharedAccessKey (x509=true devices do not use SAS tokens)");
    };
    let expiry = match args.expiry {
        Some(e) => e,
        None => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            now.saturating_add(args.ttl.as_secs())
        }
    };
    if expiry > hubprobe::config::MAX_UNIX_SECONDS {
        bail!(
            "the expiry {expiry} is past 9999-12-31 ({}): choose a shorter --ttl or an earlier --expiry",
            hubprobe::config::MAX_UNIX_SECONDS
        );
    }
    let resource = resource_uri(&cs.host_name, &cs.device_id, cs.module_id.as_deref());
    let token = generate_sas_token(&resource, key, expiry)?;
    // The one place hubprobe prints a secret, on purpose, to stdout only.
    print_stdout(&format!("{}\n", token.token.expose()))?;
    Ok(ExitCode::Ok)
}

/// `sas-token --dps`: the DPS token of the registration, from its key (derived from
/// the enrollment group's with --enrollment-group).
fn dps_sas_token(
    args: &SasTokenArgs,
    env: hubprobe::config::EnvCredentials,
) -> anyhow::Result<ExitCode> {
    use hubprobe::auth::dps;
    let d = &args.dps_identity;
    let Some(scope) = d.id_scope.as_deref().map(str::trim) else {
        bail!("no DPS id scope: give --id-scope or PROVISIONING_IDSCOPE");
    };
    let Some(reg) = d.registration_id.as_deref().map(str::trim) else {
        bail!("no DPS registration id: give --registration-id or PROVISIONING_REGISTRATION_ID");
    };
    dps::check_id_scope(scope).context("--id-scope")?;
    dps::check_registration_id(reg).context("--registration-id")?;
    let key = match &d.symmetric_key_file {
        Some(path) => hubprobe::auth::Secret::new(
            hubprobe::fsio::read_bounded_text(path, hubprobe::fsio::InputKind::Secret)
                .with_context(|| {
                    format!(
                        "cannot read symmetric key file {} (--symmetric-key-file)",
                        path.display()
                    )
                })?
                .trim(),
        ),
        None => match env.dps_symmetric_key {
            Some(k) => k,
            None => {
                bail!("no DPS key: give --symmetric-key-file or set PROVISIONING_SYMMETRIC_KEY")
            }
        },
    };
    let not_base64 = "the DPS symmetric key (--symmetric-key-file or PROVISIONING_SYMMETRIC_KEY) is not valid base64";
    let key = if d.enrollment_group {
        dps::derive_device_key(&key, reg).map_err(|_| anyhow::anyhow!(not_base64))?
    } else {
        key
    };
    let expiry = match args.expiry {
        Some(e) => e,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .saturating_add(args.ttl.as_secs()),
    };
    if expiry > hubprobe::config::MAX_UNIX_SECONDS {
        bail!(
            "the expiry {expiry} is past 9999-12-31 ({}): choose a shorter --ttl or an earlier --expiry",
            hubprobe::config::MAX_UNIX_SECONDS
        );
    }
    let token = dps::generate_dps_sas_token(scope, reg, &key, expiry)
        .map_err(|_| anyhow::anyhow!(not_base64))?;
    // The one place hubprobe prints a secret, on purpose, to stdout only.
    print_stdout(&format!("{}\n", token.token.expose()))?;
    Ok(ExitCode::Ok)
}

fn profiles(args: &ProfilesArgs) -> anyhow::Result<ExitCode> {
    match &args.name {
        None => {
            let mut out = String::new();
            for name in builtin_names() {
                let p = Profile::load(name)?;
                let eps: Vec<String> = p
                    .endpoints
                    .iter()
                    .map(|e| format!("{}:{}", e.name, e.port))
                    .collect();
                out.push_str(&format!(
                    "{:<14} {} ({})\n",
                    p.name,
                    p.description,
                    eps.join(", ")
                ));
            }
            print_stdout(&out)?;
        }
        Some(name) => {
            let p = Profile::load(name)?; // validates a file, too
            let text = match BUILTIN.iter().find(|(n, _)| *n == name) {
                Some((_, t)) => t.to_string(),
                None => toml::to_string_pretty(&p).context("cannot render the profile")?,
            };
            print_stdout(&text)?;
        }
    }
    Ok(ExitCode::Ok)
}

fn print_stdout(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|_| out.flush())
        .context("cannot write to stdout")
}

/// A report file written atomically: a temporary file beside the target is
/// created up front (so an unwritable directory is reported before probing),
/// then filled, synced and renamed over the target. A failure leaves no partial file.
struct PendingFile {
    tmp: PathBuf,
    target: PathBuf,
    file: std::fs::File,
}

impl PendingFile {
    fn create(target: &Path) -> anyhow::Result<PendingFile> {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        target
            .file_name()
            .with_context(|| format!("--report-file {}: not a file name", target.display()))?;
        let tmp = hubprobe::fsio::temp_path(target);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("cannot write the report in {}", dir.display()))?;
        Ok(PendingFile {
            tmp,
            target: target.to_path_buf(),
            file,
        })
    }

    fn commit(mut self, data: &[u8]) -> anyhow::Result<()> {
        let result = self
            .file
            .write_all(data)
            .and_then(|_| self.file.write_all(b"\n"))
            .and_then(|_| self.file.sync_all())
            .and_then(|_| std::fs::rename(&self.tmp, &self.target))
            .and_then(|_| hubprobe::fsio::sync_dir(self.target.parent().unwrap_or(Path::new("."))));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(e)
                .with_context(|| format!("cannot write the report to {}", self.target.display()));
        }
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        // After a successful rename the temp path no longer exists; otherwise clean up.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// `hubprobe fleet explain`.
fn fleet_explain(a: &hubprobe::cli::FleetExplainArgs) -> anyhow::Result<ExitCode> {
    use hubprobe::cli::ExplainFormat;
    use hubprobe::fleet::explain;
    use hubprobe::fleet::Source;
    let opts = explain::ExplainOptions {
        bucket_s: a.bucket.as_secs().max(1),
        min_devices: a.min_devices,
        min_prefixes: a.min_prefixes,
        tolerance_ms: a.clock_tolerance.as_millis().min(i64::MAX as u128) as i64,
        ..Default::default()
    };
    let logs: Vec<Source> = a.inputs.iter().map(|s| Source::parse(s)).collect();
    let reports: Vec<Source> = a.reports.iter().map(|s| Source::parse(s)).collect();
    let pending = a.html.as_deref().map(PendingFile::create).transpose()?;
    let e = explain::explain(&logs, &reports, &opts)?;
    let printed = match a.output {
        ExplainFormat::Json => {
            // Streamed: a large fleet's document is never held as one string.
            let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            serde_json::to_writer_pretty(&mut out, &e)
                .map_err(std::io::Error::from)
                .and_then(|_| out.write_all(b"\n"))
                .and_then(|_| out.flush())
                .context("cannot write to stdout")
        }
        ExplainFormat::Text => print_stdout(&explain::text::render(&e)),
    };
    let written = match pending {
        Some(file) => file.commit(explain::html::render(&e).as_bytes()),
        None => Ok(()),
    };
    printed?;
    written?;
    if e.input.bad > 0 {
        eprintln!(
            "hubprobe fleet explain: {} records could not be read (see the input section)",
            e.input.bad
        );
        return Ok(ExitCode::Warning);
    }
    Ok(ExitCode::Ok)
}

fn fleet(cmd: &hubprobe::cli::FleetCommand) -> anyhow::Result<ExitCode> {
    use hubprobe::cli::{FleetCommand, SummaryFormat};
    use hubprobe::fleet::{self, FleetOptions, Source};
    match cmd {
        FleetCommand::Summarize(a) => {
            let opts = FleetOptions {
                by: a.by.as_deref().map(fleet::label_key),
                network_label: fleet::label_key(&a.network_label),
                site_label: fleet::label_key(&a.site_label),
                bucket_s: a.bucket.as_secs().max(1),
                incident_min_devices: a.incident_min_devices,
                incident_min_networks: a.incident_min_networks,
                threads: a.threads as usize,
            };
            let sources: Vec<Source> = a.inputs.iter().map(|s| Source::parse(s)).collect();
            let pending = a.html.as_deref().map(PendingFile::create).transpose()?;
            let progress = FleetProgress {
                show: !a.quiet && std::io::stderr().is_terminal(),
            };
            let summary = fleet::summarize_with_progress(&sources, opts, &progress)?;
            let printed = match a.output {
                SummaryFormat::Json => {
                    let json = serde_json::to_string_pretty(&summary)
                        .context("cannot serialize the summary")?;
                    print_stdout(&format!("{json}\n"))
                }
                SummaryFormat::Text => print_stdout(&fleet::render_text::render(&summary)),
            };
            let written = match pending {
                Some(file) => file.commit(fleet::html::render(&summary).as_bytes()),
                None => Ok(()),
            };
            printed?;
            written?;
            let i = &summary.input;
            let rejected = i.malformed + i.foreign + i.unknown_schema;
            if rejected > 0 {
                eprintln!(
                    "hubprobe fleet: {rejected} input lines were not used (see the input section)"
                );
                return Ok(ExitCode::Warning);
            }
            Ok(ExitCode::Ok)
        }
        FleetCommand::Schema => {
            print_stdout(fleet::summary::JSON_SCHEMA)?;
            Ok(ExitCode::Ok)
        }
        FleetCommand::Explain(a) => fleet_explain(a),
        FleetCommand::Synth(a) => {
            if !(0.0..=1.0).contains(&a.repeat_share) {
                bail!("--repeat-share must be between 0 and 1");
            }
            let mut cfg = fleet::synth::SynthConfig {
                devices: a.devices as usize,
                sites: a.sites as usize,
                duration: a.duration,
                interval: a.interval.max(std::time::Duration::from_secs(1)),
                seed: a.seed,
                repeat_share: a.repeat_share,
                ..Default::default()
            };
            if a.patterns {
                cfg = cfg.with_all_patterns();
            }
            let out: Box<dyn Write> = match &a.out {
                None => Box::new(std::io::stdout().lock()),
                Some(p) => {
                    let f = std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?;
                    if p.extension().is_some_and(|e| e == "gz") {
                        Box::new(flate2::write::GzEncoder::new(
                            f,
                            flate2::Compression::fast(),
                        ))
                    } else {
                        Box::new(f)
                    }
                }
            };
            let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
            let mut err: Option<std::io::Error> = None;
            fleet::synth::generate(&cfg, |r| {
                if err.is_none() {
                    if let Err(e) = serde_json::to_writer(&mut out, r)
                        .map_err(std::io::Error::from)
                        .and_then(|_| out.write_all(b"\n"))
                    {
                        err = Some(e);
                    }
                }
            });
            if let Some(e) = err {
                return Err(e).context("cannot write the reports");
            }
            let inner = out
                .into_inner()
                .map_err(|e| e.into_error())
                .context("cannot write the reports")?;
            drop(inner);
            Ok(ExitCode::Ok)
        }
    }
}
