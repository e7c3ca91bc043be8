//! The `hubprobe` binary: parse the command line, run, map the verdict to the exit
//! code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN). `anyhow` lives only here.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::Parser;

use hubprobe::auth::sas::{generate_sas_token, resource_uri};
use hubprobe::cli::{CheckArgs, Cli, Command, OutputFormat, ProfilesArgs, SasTokenArgs};
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
    init_logging();
    match run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("hubprobe: error: {e:#}");
            ExitCode::Unknown.into()
        }
    }
}

/// Logs go to stderr, filtered by RUST_LOG (off by default). No log line carries a
/// secret: credentials are wrapped in `Secret`, whose Debug is redacted, and the
/// WebSocket library's frame dumps (debug/trace, which would show the MQTT CONNECT
/// with its SAS token) are dropped whatever RUST_LOG asks for.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
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
        Command::SasToken(args) => sas_token(&args),
        Command::Schema => {
            print_stdout(report::JSON_SCHEMA)?;
            Ok(ExitCode::Ok)
        }
        Command::Profiles(args) => profiles(&args),
        Command::Classes => {
            print_stdout(&hubprobe::diagnose::catalogue_markdown())?;
            Ok(ExitCode::Ok)
        }
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let plan = hubprobe::config::plan_check(args)?;
    // Find out now, not after the probes, whether the report can be written.
    let pending = args
        .report_file
        .as_deref()
        .map(PendingFile::create)
        .transpose()?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(hubprobe::check::run(&plan));
    drop(runtime);

    let json = serde_json::to_string_pretty(&report).context("cannot serialize the report")?;
    // Both outputs are attempted; either failing makes the run UNKNOWN (exit 3).
    let printed = match args.output {
        OutputFormat::Json => print_stdout(&format!("{json}\n")),
        OutputFormat::Text => {
            let color = !args.no_color
                && std::env::var_os("NO_COLOR").is_none()
                && std::io::stdout().is_terminal();
            let opts = text::TextOptions {
                color,
                verbose: args.verbose,
            };
            print_stdout(&text::render(&report, opts))
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

fn sas_token(args: &SasTokenArgs) -> anyhow::Result<ExitCode> {
    let env = hubprobe::config::EnvCredentials::from_process();
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
        let name = target
            .file_name()
            .with_context(|| format!("--report-file {}: not a file name", target.display()))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
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
            .and_then(|_| std::fs::rename(&self.tmp, &self.target));
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
