//! `run`: the daemon, or `--once` passes until nothing more can progress (`--pretend`: the
//! plan instead).

use std::io::Write;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use stepsync::apply::{ApplyOptions, apply_then};
use stepsync::engine::daemon::runtime;
use stepsync::engine::{Engine, Summary};
use stepsync::error::Result;
use stepsync::plan::{PlanOptions, plan, pretend_world};
use stepsync::service::Service;
use stepsync::store::{Millis, Status};

use super::objects::{apply_files, expand_files};
use super::plan::{plan_text, report_plan_errors};
use super::progress::Bar;
use super::table::next_retry;
use super::{ok_or_1, print, stdout_err};

/// What `run` was asked to do.
pub(crate) struct RunArgs {
    pub(crate) once: bool,
    pub(crate) pretend: bool,
    pub(crate) files: Vec<PathBuf>,
    /// Overrides `concurrency:` of `stepsync.yaml`.
    pub(crate) concurrency: Option<NonZeroU32>,
    /// `-q`: no per-object lines, and the summary only when something is left in error.
    pub(crate) quiet: bool,
}

/// `run [--once] [--pretend] [-f FILE]... [--concurrency N]`: 0 when every object is ok.
pub(crate) fn run(dir: &Path, args: RunArgs, out: &mut dyn Write) -> Result<ExitCode> {
    let mut svc = Service::load(dir)?;
    if let Some(n) = args.concurrency {
        svc.config.concurrency = n;
    }
    let ok = if args.once || args.pretend {
        run_once(svc, &args, out)?
    } else if args.quiet {
        run_daemon(dir, svc, &args, &mut std::io::sink())?
    } else {
        run_daemon(dir, svc, &args, out)?
    };
    Ok(ok_or_1(ok))
}

/// The engine for `svc`, drawing its passes' progress.
fn engine(svc: Service) -> Result<Arc<Engine>> {
    let engine = Engine::open(svc, None)?;
    // Objects of a removed model are never run again, and their backend objects stay: say so
    // at every start (`validate` and `status` say what to do).
    for (model, n) in engine.store.counts_by_model()? {
        if engine.svc.schema.model(&model).is_none() {
            tracing::warn!(
                model = %model,
                objects = n,
                "stored objects of a model no schema defines are left alone; see `stepsync status`"
            );
        }
    }
    Ok(Arc::new(engine.with_progress(Arc::new(Bar))))
}

/// `run --once [--pretend] [-f FILE]...`.
fn run_once(svc: Service, args: &RunArgs, out: &mut dyn Write) -> Result<bool> {
    let files = &args.files;
    let pretend = args.pretend || svc.config.pretend;
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
            let (_, (world, policies)) =
                apply_then(&engine.svc, &*engine.store, &files, opts, |tx| {
                    pretend_world(&engine, tx)
                })?;
            Some((Arc::new(world), policies))
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
        if args.quiet {
            apply_files(&svc, files, ApplyOptions::default(), &mut std::io::sink())?;
        } else {
            apply_files(&svc, files, ApplyOptions::default(), out)?;
        }
    }
    if svc.config.disabled {
        if !args.quiet {
            writeln!(out, "run: disabled in stepsync.yaml; nothing run").map_err(stdout_err)?;
        }
        return Ok(true);
    }
    let engine = engine(svc)?;
    let rt = runtime()?;
    let summary = rt.block_on(engine.run_once())?;
    if args.quiet && summary.all_ok {
        return Ok(true);
    }
    print(out, &summary_text(&summary, &engine)?)?;
    Ok(summary.all_ok)
}

/// `run: 3 ok, 12 deleted, 1 error after 2 passes`, then each object left in error with its
/// message and when it is retried.
fn summary_text(summary: &Summary, engine: &Engine) -> Result<String> {
    let mut counts: Vec<String> = summary
        .counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    if summary.purged > 0 {
        // After the counts of what is left: those are what the store holds now.
        let at = counts
            .iter()
            .position(|c| !c.ends_with(" ok"))
            .unwrap_or(counts.len());
        counts.insert(at, format!("{} deleted", summary.purged));
    }
    let mut text = format!(
        "run: {} after {} pass{}\n",
        if counts.is_empty() {
            "no objects".to_owned()
        } else {
            counts.join(", ")
        },
        summary.passes,
        if summary.passes == 1 { "" } else { "es" }
    );
    if !summary.all_ok {
        let now = Millis::now();
        let all = engine.store.list(None)?;
        for o in all.iter().filter(|o| o.book.status != Status::Ok) {
            let retry = retry_note(o.book.next_retry_at, now);
            text.push_str(&format!(
                "  {} {}{retry}: {}\n",
                o.name(),
                o.book.status,
                o.book.message
            ));
        }
        for o in all.iter().filter(|o| o.book.policy_error.is_some()) {
            let retry = retry_note(o.book.policy_retry_at, now);
            text.push_str(&format!(
                "  {} policy error{retry}: {}\n",
                o.name(),
                o.book.policy_error.as_deref().unwrap_or_default()
            ));
        }
    }
    Ok(text)
}

/// ` (retry in 4s at ...)`, or nothing when nothing waits.
fn retry_note(at: Option<Millis>, now: Millis) -> String {
    let retry = next_retry(at, now);
    if retry.is_empty() {
        retry
    } else {
        format!(" ({retry})")
    }
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
        Ok(Engine::open(svc, None)?.with_progress(Arc::new(Bar)))
    };
    runtime()?.block_on(engine.run_daemon(&reload))?;
    Ok(true)
}
