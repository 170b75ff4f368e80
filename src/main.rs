//! The `stepsync` command line: argument parsing and dispatch only.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stepsync::apply::ApplyOptions;
use stepsync::commands::{self, OutputFormat};
use stepsync::config::LogFormat;
use stepsync::service::Service;

#[derive(Parser)]
#[command(
    name = "stepsync",
    version,
    about = "A goal-oriented synchronizer: keeps a data model in step with the systems that implement it"
)]
struct Cli {
    /// The service directory (default: the current directory)
    #[arg(
        short = 'C',
        long = "dir",
        global = true,
        value_name = "DIR",
        default_value = "."
    )]
    dir: PathBuf,
    /// More log output (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Only errors
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Log line format
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scaffold a service directory
    Init {
        /// Where to create it (default: the service directory)
        #[arg(value_name = "DIR")]
        path: Option<PathBuf>,
    },
    /// Upsert the objects of the files, all or nothing
    Apply {
        /// Objects files or directories of them
        #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Delete objects of the models named in the files that the files no longer list
        #[arg(long)]
        prune: bool,
        /// Check and report without writing anything
        #[arg(long)]
        dry_run: bool,
    },
    /// Show objects
    Get {
        model: String,
        key: Option<String>,
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Delete an object
    Delete {
        model: String,
        key: String,
        /// Delete the objects that depend on it too
        #[arg(long)]
        cascade: bool,
    },
    /// Per-model counts by status, then the objects in error
    Status,
}

fn init_logging(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
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
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(mut cli: Cli) -> stepsync::Result<()> {
    // Like `git -C` and `make -C`: every relative path, `-f` files included, is then
    // relative to the service directory.
    if cli.dir != std::path::Path::new(".") {
        if matches!(cli.command, Command::Init { .. }) {
            std::fs::create_dir_all(&cli.dir)
                .map_err(|e| stepsync::Error::failed(format!("{}: {e}", cli.dir.display())))?;
        }
        std::env::set_current_dir(&cli.dir).map_err(|e| {
            stepsync::Error::failed(format!("cannot enter {}: {e}", cli.dir.display()))
        })?;
        cli.dir = PathBuf::from(".");
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Init { path } => {
            let dir = path.unwrap_or_else(|| cli.dir.clone());
            std::fs::create_dir_all(&dir)
                .map_err(|e| stepsync::Error::failed(format!("{}: {e}", dir.display())))?;
            commands::init(&dir, &mut out)
        }
        Command::Apply {
            files,
            prune,
            dry_run,
        } => {
            let svc = Service::load(&cli.dir)?;
            commands::apply_cmd(&svc, &files, ApplyOptions { prune, dry_run }, &mut out)
        }
        Command::Get { model, key, output } => {
            let svc = Service::load(&cli.dir)?;
            commands::get(&svc, &model, key.as_deref(), output, &mut out)
        }
        Command::Delete {
            model,
            key,
            cascade,
        } => {
            let svc = Service::load(&cli.dir)?;
            commands::delete_cmd(&svc, &model, &key, cascade, &mut out)
        }
        Command::Status => {
            let svc = Service::load(&cli.dir)?;
            commands::status(&svc, &mut out)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("{e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}
