//! `run`: the daemon, or `--once` passes until nothing more can progress (`--pretend`: the
//! plan instead).

use std::io::Write;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use stepsync::apply::{ApplyOptions, apply_then};
use stepsync::engine::Engine;
use stepsync::engine::daemon::runtime;
use stepsync::error::Result;
use stepsync::plan::{PlanOptions, plan};
use stepsync::service::Service;
use stepsync::snapshot::Snapshot;
use stepsync::store::Status;

use super::objects::{apply_files, expand_files};
use super::plan::{plan_text, report_plan_errors};
use super::progress::Bar;
use super::{ok_or_1, print, stdout_err};

/// What `run` was asked to do.
pub(crate) struct RunArgs {
    pub(crate) once: bool,
    pub(crate) pretend: bool,
    pub(crate) files: Vec<PathBuf>,
    /// Overrides `concurrency:` of `stepsync.yaml`.
    pub(crate) concurrency: Option<NonZeroU32>,
}

/// `run [--once] [--pretend] [-f FILE]... [--concurrency N]`: 0 when every object is ok.
pub(crate) fn run(dir: &Path, args: RunArgs, out: &mut dyn Write) -> Result<ExitCode> {
    let mut svc = Service::load(dir)?;
    if let Some(n) = args.concurrency {
        svc.config.concurrency = n;
    }
    let ok = if args.once || args.pretend {
        run_once(svc, &args.files, args.pretend, out)?
    } else {
        run_daemon(dir, svc, &args, out)?
    };
    Ok(ok_or_1(ok))
}

/// The engine for `svc`, drawing its passes' progress.
fn engine(svc: Service) -> Result<Arc<Engine>> {
    Ok(Arc::new(
        Engine::open(svc, None)?.with_progress(Arc::new(Bar::default())),
    ))
}

/// `run --once [--pretend] [-f FILE]...`.
fn run_once(svc: Service, files: &[PathBuf], pretend: bool, out: &mut dyn Write) -> Result<bool> {
    let pretend = pretend || svc.config.pretend;
    if pretend {
        // Pure: the files' objects are planned on top of the store, never written to it.
        let engine = engine(svc)?;
        let world = if files.is_empty() {
            None
        } else {
            let files = expand_files(files)?;
            let opts = ApplyOptions {
                dry_run: true,
                ..ApplyOptions::default()
            };
            let schema = engine.svc.schema.clone();
            let (_, world) = apply_then(&engine.svc, &*engine.store, &files, opts, |tx| {
                Ok(Snapshot::load(schema, tx)?)
            })?;
            Some(Arc::new(world))
        };
        let opts = PlanOptions {
            world,
            ..PlanOptions::default()
        };
        let p = runtime()?.block_on(plan(&engine, opts))?;
        print(out, &plan_text(&p))?;
        report_plan_errors(&p);
        return Ok(p.errors.is_empty());
    }
    if !files.is_empty() {
        apply_files(&svc, files, ApplyOptions::default(), out)?;
    }
    if svc.config.disabled {
        writeln!(out, "run: disabled in stepsync.yaml; nothing run").map_err(stdout_err)?;
        return Ok(true);
    }
    let engine = engine(svc)?;
    let rt = runtime()?;
    let summary = rt.block_on(engine.run_once())?;
    let counts: Vec<String> = summary
        .counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    writeln!(
        out,
        "run: {} after {} pass{}",
        if counts.is_empty() {
            "no objects".to_owned()
        } else {
            counts.join(", ")
        },
        summary.passes,
        if summary.passes == 1 { "" } else { "es" }
    )
    .map_err(stdout_err)?;
    if !summary.all_ok {
        let objs = engine.store.list(None)?;
        for o in objs.iter().filter(|o| o.book.status != Status::Ok) {
            writeln!(out, "  {} {}: {}", o.name(), o.book.status, o.book.message)
                .map_err(stdout_err)?;
        }
    }
    Ok(summary.all_ok)
}

/// `run` without `--once`: the daemon, until SIGINT/SIGTERM.
fn run_daemon(dir: &Path, svc: Service, args: &RunArgs, out: &mut dyn Write) -> Result<bool> {
    if !args.files.is_empty() {
        apply_files(&svc, &args.files, ApplyOptions::default(), out)?;
    }
    out.flush().map_err(stdout_err)?;
    if svc.config.disabled {
        writeln!(out, "run: disabled in stepsync.yaml; nothing run").map_err(stdout_err)?;
        return Ok(true);
    }
    let engine = engine(svc)?;
    // Edited service files: the same command line on the new files.
    let reload = || {
        let mut svc = Service::load(dir)?;
        if let Some(n) = args.concurrency {
            svc.config.concurrency = n;
        }
        Ok(Engine::open(svc, None)?.with_progress(Arc::new(Bar::default())))
    };
    runtime()?.block_on(engine.run_daemon(&reload))?;
    Ok(true)
}
