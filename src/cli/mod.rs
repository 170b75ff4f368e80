//! The commands of SPEC §10 and everything they print: tables, plan text, colour,
//! diagnostics, progress bars. `main.rs` parses the arguments and calls in here; the
//! library underneath never prints.

pub(crate) mod colour;
pub(crate) mod graph;
pub(crate) mod init;
pub(crate) mod objects;
pub(crate) mod plan;
pub(crate) mod progress;
pub(crate) mod render;
pub(crate) mod run;
pub(crate) mod schema;
pub(crate) mod serve;
pub(crate) mod store;
pub(crate) mod table;
pub(crate) mod validate;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use stepsync::config;
use stepsync::error::{Error, Result};

/// `--log-format`, mapped to the library's `config::LogFormat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum LogFormat {
    #[default]
    Text,
    Json,
}

impl From<LogFormat> for config::LogFormat {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Text => config::LogFormat::Text,
            LogFormat::Json => config::LogFormat::Json,
        }
    }
}

/// What the command line says about logging.
pub(crate) struct LogArgs {
    pub(crate) quiet: bool,
    pub(crate) verbose: u8,
    pub(crate) format: Option<LogFormat>,
}

/// Starts the log (SPEC §10): the `logging:` block of the service's `stepsync.yaml` (level,
/// format, file), `-q` (errors only) and each `-v` (one level more) over it, and
/// `STEPSYNC_LOG` (an env filter) over both. Lines go to stderr, around the progress bar, and
/// to `logging.file` as well when one is set.
pub(crate) fn init_logging(dir: &Path, args: &LogArgs) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    // Read before the command loads the service, so that its own errors are logged as
    // configured; a config that does not load leaves the defaults (the command reports why).
    let logging = config::Config::load(dir)
        .map(|c| c.logging)
        .unwrap_or_default();
    let levels = ["error", "warn", "info", "debug", "trace"];
    let base = match logging.level {
        config::LogLevel::Error => 0,
        config::LogLevel::Warn => 1,
        config::LogLevel::Info => 2,
        config::LogLevel::Debug => 3,
        config::LogLevel::Trace => 4,
    };
    let level = if args.quiet {
        0
    } else {
        (base + usize::from(args.verbose)).min(4)
    };
    // Other crates' debug lines (HTTP internals) are noise to an operator: warnings only.
    let default_filter = format!("{},stepsync={}", levels[level.min(1)], levels[level]);
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("STEPSYNC_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&default_filter))
    };
    let format = args.format.map_or(logging.format, Into::into);
    type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;
    let layer = |ansi: bool, to: tracing_subscriber::fmt::writer::BoxMakeWriter| -> Boxed {
        let l = tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(to);
        match format {
            config::LogFormat::Json => l.json().with_filter(filter()).boxed(),
            config::LogFormat::Text => l.with_filter(filter()).boxed(),
        }
    };
    let mut layers: Vec<Boxed> = vec![layer(
        std::io::stderr().is_terminal(),
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(|| Stderr),
    )];
    let mut trouble = None;
    if let Some(file) = &logging.file {
        match open_log(&config::in_dir(dir, file)) {
            Ok(f) => layers.push(layer(
                false,
                tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Mutex::new(f)),
            )),
            Err(e) => trouble = Some(format!("cannot open the log file {}: {e}", file.display())),
        }
    }
    tracing_subscriber::registry().with(layers).init();
    if let Some(t) = trouble {
        tracing::warn!("{t}; logging to stderr only");
    }
}

/// `logging.file`, appended to, its folder made if missing.
fn open_log(file: &Path) -> std::io::Result<std::fs::File> {
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
}

/// stderr, written around the progress bar.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        progress::suspend(|| std::io::stderr().write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        progress::suspend(|| std::io::stderr().write_all(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `--concurrency N` and other counts that must be at least 1.
pub(crate) fn positive(s: &str) -> std::result::Result<std::num::NonZeroU32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => std::num::NonZeroU32::new(n).ok_or_else(|| "must be at least 1".to_owned()),
        Err(_) => Err(format!("`{s}` is not a whole number (1 or more)")),
    }
}

/// Enters the service directory `dir` (created first when `create`, for `init`) and returns
/// the directory to work in from then on.
///
/// Like `git -C` and `make -C`: every relative path, `-f` files included, is then relative
/// to the service directory.
pub(crate) fn enter(dir: &Path, create: bool) -> Result<PathBuf> {
    if dir != Path::new(".") {
        if create {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        std::env::set_current_dir(dir)
            .map_err(|e| Error::failed(format!("cannot enter {}: {e}", dir.display())))?;
    }
    Ok(PathBuf::from("."))
}

/// The exit code of a command's result; an error is printed on stderr first (in colour on
/// a terminal), after what the command printed on stdout.
pub(crate) fn exit(result: Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("{}", colour::for_stderr(&e.to_string()));
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

/// 0 when `ok`, else 1.
pub(crate) fn ok_or_1(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// An I/O error on `path`, as the user sees it.
pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::failed(format!("{}: {e}", path.display()))
}

/// An error writing the command's output.
pub(crate) fn stdout_err(e: std::io::Error) -> Error {
    io_err(Path::new("stdout"))(e)
}

/// Writes `text` to the command's output.
pub(crate) fn print(out: &mut dyn Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes()).map_err(stdout_err)
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| Error::failed(format!("cannot print JSON: {e}")))
}

pub(crate) fn yaml<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_yaml::to_string(v).map_err(|e| Error::failed(format!("cannot print YAML: {e}")))
}
