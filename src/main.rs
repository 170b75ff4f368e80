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
    /// Check the whole service directory (and objects files) and report every problem
    Validate {
        /// Objects files or directories of them to check against the schema as well
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        files: Vec<PathBuf>,
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
    /// Drive pending objects to their backends
    Run {
        /// Pass until nothing more can progress, then exit (0 when every object is ok)
        #[arg(long)]
        once: bool,
        /// Render and plan only: no backend call, nothing written to the data model
        #[arg(long)]
        pretend: bool,
        /// Apply these objects files first
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Runs in flight at once, all models together (overrides `concurrency:`)
        #[arg(long, value_name = "N")]
        concurrency: Option<std::num::NonZeroU32>,
    },
    /// Clear the backoff of objects in error so the next pass retries them
    Retry { model: String, key: Option<String> },
    /// Print the dependency graph of the models (or of the objects)
    Graph {
        /// The object graph instead of the model graph
        #[arg(long)]
        objects: bool,
        #[arg(long, value_enum, default_value_t = commands::GraphFormat::Text)]
        format: commands::GraphFormat,
    },
    /// Show what a run would do, with the diff of every recipe
    Plan {
        #[arg(short, long, value_enum, default_value_t = PlanFormat::Text)]
        output: PlanFormat,
        /// Exit 0 when there is nothing to do, 1 on error, 2 when there are changes
        #[arg(long)]
        detailed_exitcode: bool,
        /// Send the read-only observe requests of delta REST payloads
        #[arg(long)]
        refresh: bool,
        /// Render into this directory instead of the configured sys dir
        #[arg(long, value_name = "DIR")]
        sys_dir: Option<PathBuf>,
    },
    /// Render one object's recipe into the sys dir and print its path
    Render {
        model: String,
        key: String,
        /// The delete recipe instead of the sync one
        #[arg(long)]
        delete: bool,
    },
    /// Run a rendered REST recipe (a .http file or an object's sys dir folder)
    Replay { path: PathBuf },
    /// Print the JSON Schema of a file format, for editors (no NAME: list the names)
    Schema {
        /// config, model, stepdef or objects
        name: Option<String>,
        /// With `objects`: the schema of this service's models instead of the generic one
        #[arg(long)]
        service: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PlanFormat {
    Text,
    Json,
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

fn run(mut cli: Cli) -> stepsync::Result<ExitCode> {
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
            commands::init(&dir, &mut out)?;
        }
        Command::Validate { files } => {
            return commands::validate_cmd(&cli.dir, &files, &mut out);
        }
        Command::Apply {
            files,
            prune,
            dry_run,
        } => {
            let svc = Service::load(&cli.dir)?;
            commands::apply_cmd(&svc, &files, ApplyOptions { prune, dry_run }, &mut out)?;
        }
        Command::Get { model, key, output } => {
            let svc = Service::load(&cli.dir)?;
            commands::get(&svc, &model, key.as_deref(), output, &mut out)?;
        }
        Command::Delete {
            model,
            key,
            cascade,
        } => {
            let svc = Service::load(&cli.dir)?;
            commands::delete_cmd(&svc, &model, &key, cascade, &mut out)?;
        }
        Command::Status => {
            let svc = Service::load(&cli.dir)?;
            commands::status(&svc, &mut out)?;
        }
        Command::Run {
            once,
            pretend,
            files,
            concurrency,
        } => {
            let mut svc = Service::load(&cli.dir)?;
            if let Some(n) = concurrency {
                svc.config.concurrency = n;
            }
            let ok = if once || pretend {
                commands::run_once(svc, &files, pretend, &mut out)?
            } else {
                commands::run_daemon(svc, &files, &mut out)?
            };
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Command::Retry { model, key } => {
            let svc = Service::load(&cli.dir)?;
            commands::retry(&svc, &model, key.as_deref(), &mut out)?;
        }
        Command::Graph { objects, format } => {
            let svc = Service::load(&cli.dir)?;
            commands::graph(&svc, objects, format, &mut out)?;
        }
        Command::Plan {
            output,
            detailed_exitcode,
            refresh,
            sys_dir,
        } => {
            let svc = Service::load(&cli.dir)?;
            let json = matches!(output, PlanFormat::Json);
            let code =
                commands::plan_cmd(svc, json, detailed_exitcode, refresh, sys_dir, &mut out)?;
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
        }
        Command::Render { model, key, delete } => {
            let svc = Service::load(&cli.dir)?;
            commands::render_cmd(svc, &model, &key, delete, &mut out)?;
        }
        Command::Replay { path } => {
            // A recipe can be replayed outside its service; secrets then come from the env.
            let svc = Service::load(&cli.dir).ok();
            let ok = commands::replay_cmd(svc.as_ref(), &path, &mut out)?;
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Command::Schema { name, service } => {
            stepsync::json_schema::schema_cmd(&cli.dir, name.as_deref(), service, &mut out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let _ = std::io::stdout().flush();
            let text = e.to_string();
            if stepsync::diag::colour_stderr() {
                eprintln!("{}", stepsync::diag::colourize(&text));
            } else {
                eprintln!("{text}");
            }
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}
