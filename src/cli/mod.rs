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

/// Log lines on stderr: `quiet` only errors, each `verbose` one level more; `STEPSYNC_LOG`
/// (an env filter) overrides both.
pub(crate) fn init_logging(quiet: bool, verbose: u8, format: config::LogFormat) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STEPSYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        config::LogFormat::Json => builder.json().init(),
        config::LogFormat::Text => builder.init(),
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
