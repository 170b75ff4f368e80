//! The `stepsync` command line: argument parsing only. The commands, and everything they
//! print, are in `cli`.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use stepsync::apply::ApplyOptions;

// glibc's malloc spent ~12 % of a first sync's user time in its own bookkeeping
// (`malloc_consolidate`, `_int_free`), and its per-thread arenas keep memory the blocking
// pool's threads freed; mimalloc does neither (BENCHMARKS.md, #20).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Log line format (default: `logging.format` of stepsync.yaml, else text)
    #[arg(long, global = true, value_enum)]
    log_format: Option<cli::LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum StoreAction {
    /// Its kind, schema version, objects, revision, runner lease and workers
    Info {
        /// `sqlite:PATH` or `postgres://...` (default: the service's store)
        store: Option<String>,
    },
    /// Bring its schema up to this stepsync's version
    Migrate {
        /// `sqlite:PATH` or `postgres://...` (default: the service's store)
        store: Option<String>,
    },
    /// Copy the whole data model into an empty store, all or nothing
    Copy {
        /// The store to copy: `sqlite:PATH` or `postgres://...`
        from: String,
        /// The empty store to copy into
        to: String,
    },
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
    /// Show objects (no MODEL: the models and their object counts)
    Get {
        /// The model, as named in schemas/ (e.g. Site)
        model: Option<String>,
        /// The object's key (its `name` field, unless the model says otherwise)
        key: Option<String>,
        /// table, wide (whole messages and more columns), yaml or json
        #[arg(short, long, value_enum, default_value_t = cli::objects::OutputFormat::Table)]
        output: cli::objects::OutputFormat,
    },
    /// Delete an object
    Delete {
        /// The model, as named in schemas/ (or a model removed from them, with --force)
        model: String,
        /// The object's key
        #[arg(required_unless_present = "all")]
        key: Option<String>,
        /// Every object of the model
        #[arg(long, conflicts_with = "key")]
        all: bool,
        /// Delete the objects that depend on it too
        #[arg(long)]
        cascade: bool,
        /// Purge it from the store without any backend call (the backend object is gone)
        #[arg(long)]
        force: bool,
    },
    /// Look after the store: what it holds, its schema, a copy into another store
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Per-model counts by status, then the objects in error
    Status {
        /// table, wide (whole messages) or json
        #[arg(short, long, value_enum, default_value_t = cli::objects::StatusFormat::Table)]
        output: cli::objects::StatusFormat,
    },
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
        #[arg(long, value_name = "N", value_parser = cli::positive)]
        concurrency: Option<std::num::NonZeroU32>,
    },
    /// The daemon plus the HTTP API, metrics and probes (SPEC §16)
    Serve {
        /// HOST:PORT to listen on (default: `serve.listen`, else 127.0.0.1:8080)
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Clear the backoff of objects in error so the next pass retries them
    Retry {
        /// The model, as named in schemas/
        model: String,
        /// One object's key (default: every object of the model in error)
        key: Option<String>,
    },
    /// Print the dependency graph of the models (or of the objects)
    Graph {
        /// The object graph instead of the model graph
        #[arg(long)]
        objects: bool,
        #[arg(long, value_enum, default_value_t = cli::graph::GraphFormat::Text)]
        format: cli::graph::GraphFormat,
    },
    /// Show what a run would do, with the diff of every recipe
    Plan {
        #[arg(short, long, value_enum, default_value_t = cli::plan::PlanFormat::Text)]
        output: cli::plan::PlanFormat,
        /// Exit 0 when there is nothing to do, 1 on error, 2 when there are changes
        #[arg(long)]
        detailed_exitcode: bool,
        /// Send the read-only observe requests of delta REST payloads
        #[arg(long)]
        refresh: bool,
        /// Compare with the recipes executed in this sys dir instead of the configured one
        #[arg(long, value_name = "DIR")]
        sys_dir: Option<PathBuf>,
        /// Render the plan's recipes into this directory instead of <sys_dir>/.plan
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Render one object's recipe into the sys dir and print its path
    Render {
        /// The model, as named in schemas/
        model: String,
        /// The object's key
        key: String,
        /// The delete recipe instead of the sync one
        #[arg(long)]
        delete: bool,
    },
    /// Run a rendered recipe again (an object's sys dir folder, a .http or a .yml file)
    Replay {
        /// An object's folder in the sys dir, or one of its recipe files
        path: PathBuf,
    },
    /// Print the JSON Schema of a file format, for editors (no NAME: list the names)
    Schema {
        /// config, model, stepdef or objects
        name: Option<String>,
        /// With `objects`: the schema of this service's models instead of the generic one
        #[arg(long)]
        service: bool,
    },
    /// Print a shell completion script (e.g. `stepsync completions bash > /etc/bash_completion.d/stepsync`)
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

/// Where a command's report goes: nowhere under `-q`.
fn chatter<'a>(
    quiet: bool,
    out: &'a mut dyn std::io::Write,
    sink: &'a mut std::io::Sink,
) -> &'a mut dyn std::io::Write {
    if quiet { sink } else { out }
}

/// mimalloc's `mi_option_purge_delay` (mimalloc.h's `mi_option_e`; the crate names only some).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Hand freed pages back at once rather than 10 ms later: a plan of 100,000 objects
    // peaked at 330 MiB with the delay and 242 MiB without, at the same speed (BENCHMARKS.md).
    // SAFETY: setting an option is a plain store mimalloc reads on its next purge; no
    // allocation depends on its value.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    let args = Cli::parse();
    cli::exit(run(args))
}

fn run(args: Cli) -> stepsync::Result<ExitCode> {
    let dir = cli::enter(&args.dir, matches!(args.command, Command::Init { .. }))?;
    // After entering the service directory: its `logging:` block applies to every command.
    let logs = cli::LogArgs {
        quiet: args.quiet,
        verbose: args.verbose,
        format: args.log_format,
    };
    cli::init_logging(&dir, &logs);
    let out = &mut std::io::stdout().lock();
    // `-q`: commands that report what they did say nothing unless it failed; commands whose
    // output is the answer (get, status, plan, graph, schema, render, completions) still print it.
    let sink = &mut std::io::sink();
    let q = args.quiet;
    match args.command {
        Command::Init { path } => {
            cli::init::init(&path.unwrap_or_else(|| dir.clone()), chatter(q, out, sink))
        }
        Command::Validate { files } => {
            cli::validate::validate_cmd(&dir, &files, chatter(q, out, sink))
        }
        Command::Apply {
            files,
            prune,
            dry_run,
        } => cli::objects::apply_cmd(
            &dir,
            &files,
            ApplyOptions { prune, dry_run },
            chatter(q, out, sink),
        ),
        Command::Get { model, key, output } => {
            cli::objects::get(&dir, model.as_deref(), key.as_deref(), output, out)
        }
        Command::Delete {
            model,
            key,
            all: _,
            cascade,
            force,
        } => {
            let which = match &key {
                Some(k) => stepsync::deletion::Which::One(k),
                None => stepsync::deletion::Which::All,
            };
            cli::objects::delete_cmd(&dir, &model, which, cascade, force, chatter(q, out, sink))
        }
        Command::Status { output } => cli::objects::status(&dir, output, out),
        Command::Store { action } => match action {
            StoreAction::Info { store } => cli::store::info(&dir, store.as_deref(), out),
            StoreAction::Migrate { store } => cli::store::migrate(&dir, store.as_deref(), out),
            StoreAction::Copy { from, to } => cli::store::copy(&dir, &from, &to, out),
        },
        Command::Run {
            once,
            pretend,
            files,
            concurrency,
        } => {
            let args = cli::run::RunArgs {
                once,
                pretend,
                files,
                concurrency,
                quiet: args.quiet,
            };
            cli::run::run(&dir, args, out)
        }
        Command::Serve { listen } => cli::serve::serve(&dir, listen.as_deref(), out),
        Command::Retry { model, key } => {
            cli::objects::retry(&dir, &model, key.as_deref(), chatter(q, out, sink))
        }
        Command::Graph { objects, format } => cli::graph::graph(&dir, objects, format, out),
        Command::Plan {
            output,
            detailed_exitcode,
            refresh,
            sys_dir,
            out: plan_out,
        } => {
            let args = cli::plan::PlanArgs {
                format: output,
                detailed_exitcode,
                refresh,
                sys_dir,
                out: plan_out,
            };
            cli::plan::plan_cmd(&dir, args, out)
        }
        Command::Render { model, key, delete } => {
            cli::render::render_cmd(&dir, &model, &key, delete, out)
        }
        Command::Replay { path } => cli::render::replay_cmd(&dir, &path, out),
        Command::Schema { name, service } => {
            cli::schema::schema_cmd(&dir, name.as_deref(), service, out)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "stepsync", out);
            Ok(ExitCode::SUCCESS)
        }
    }
}
