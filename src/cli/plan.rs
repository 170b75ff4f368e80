//! `plan`: what a run would do, as text (a line per object and its diff) or JSON.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use stepsync::engine::Engine;
use stepsync::engine::daemon::runtime;
use stepsync::error::Result;
use stepsync::plan::{Plan, PlanOptions, plan};
use stepsync::service::Service;

use super::{json, print};

/// `plan -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum PlanFormat {
    #[default]
    Text,
    Json,
}

/// What `plan` was asked to do.
pub(crate) struct PlanArgs {
    pub(crate) format: PlanFormat,
    /// Exit 2 when there are changes.
    pub(crate) detailed_exitcode: bool,
    /// Send the observe requests of delta REST payloads.
    pub(crate) refresh: bool,
    /// The sys dir whose executed recipes the plan compares with, instead of the configured one.
    pub(crate) sys_dir: Option<PathBuf>,
    /// The plan dir, instead of `<sys_dir>/.plan`.
    pub(crate) out: Option<PathBuf>,
}

/// `plan`: exit 1 on error; with `--detailed-exitcode` 0 for nothing to do, 2 for changes.
pub(crate) fn plan_cmd(dir: &Path, args: PlanArgs, out: &mut dyn Write) -> Result<ExitCode> {
    let engine = Engine::open(Service::load(dir)?, args.sys_dir)?;
    let opts = PlanOptions {
        refresh: args.refresh,
        out: args.out,
        world: None,
    };
    let p = runtime()?.block_on(plan(&engine, opts))?;
    let text = match args.format {
        PlanFormat::Json => json(&p)?,
        PlanFormat::Text => plan_text(&p),
    };
    print(out, &text)?;
    report_plan_errors(&p);
    Ok(ExitCode::from(
        match (
            p.errors.is_empty() && p.pull_errors.is_empty(),
            args.detailed_exitcode,
            p.changes.is_empty(),
        ) {
            (false, _, _) => 1,
            (true, true, false) => 2,
            _ => 0,
        },
    ))
}

/// The objects whose recipe could not be rendered, on stderr.
pub(crate) fn report_plan_errors(p: &Plan) {
    for e in &p.pull_errors {
        eprintln!("error: {}: {}", e.step, e.message);
    }
    for e in &p.errors {
        eprintln!("error: {}/{}: {}", e.model, e.key, e.message);
    }
}

/// The text form: one `+`/`~`/`-` line per object, its diff, and a count.
pub(crate) fn plan_text(plan: &Plan) -> String {
    let mut s = String::new();
    for p in &plan.pulls {
        s.push_str(&format!(
            "{} {}: {} {}/{}\n",
            sign(p.action),
            p.step,
            p.action,
            p.model,
            p.key
        ));
    }
    for p in &plan.policies {
        s.push_str(&format!(
            "{} {} {}/{} (policy {} of {})\n",
            sign(p.action),
            p.action,
            p.model,
            p.key,
            p.policy,
            p.source
        ));
    }
    for c in &plan.changes {
        s.push_str(&format!(
            "{} {} {}/{} ({}) {}\n",
            sign(c.action),
            c.action,
            c.model,
            c.key,
            c.payload,
            c.reason
        ));
        for line in c.diff.lines() {
            s.push_str(&format!("    {line}\n"));
        }
    }
    let count = |a: &str| plan.changes.iter().filter(|c| c.action == a).count();
    let errors = match plan.errors.len() {
        0 => String::new(),
        1 => ", 1 error".to_owned(),
        n => format!(", {n} errors"),
    };
    let policies = match plan.policies.len() {
        0 => String::new(),
        n => format!(" ({n} written by policies)"),
    };
    let policies = match plan.pulls.len() {
        0 => policies,
        n => format!("{policies} ({n} written by pull steps)"),
    };
    s.push_str(&format!(
        "Plan: {} to create, {} to update, {} to delete{errors}.{policies}\n",
        count("create"),
        count("update"),
        count("delete")
    ));
    s
}

fn sign(action: &str) -> &'static str {
    match action {
        "create" => "+",
        "delete" => "-",
        _ => "~",
    }
}
