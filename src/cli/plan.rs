//! `plan`: what a run would do, as text (a line per object and its diff) or JSON.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use stepsync::engine::Engine;
use stepsync::engine::daemon::runtime;
use stepsync::error::Result;
use stepsync::plan::{Plan, plan};
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
    /// Render here instead of the configured sys dir.
    pub(crate) sys_dir: Option<PathBuf>,
}

/// `plan`: exit 1 on error; with `--detailed-exitcode` 0 for nothing to do, 2 for changes.
pub(crate) fn plan_cmd(dir: &Path, args: PlanArgs, out: &mut dyn Write) -> Result<ExitCode> {
    let engine = Engine::open(Service::load(dir)?, args.sys_dir)?;
    let p = runtime()?.block_on(plan(&engine, args.refresh))?;
    let text = match args.format {
        PlanFormat::Json => json(&p)?,
        PlanFormat::Text => plan_text(&p),
    };
    print(out, &text)?;
    report_plan_errors(&p);
    Ok(ExitCode::from(
        match (
            p.errors.is_empty(),
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
    for e in &p.errors {
        eprintln!("error: {e}");
    }
}

/// The text form: one `+`/`~`/`-` line per object, its diff, and a count.
pub(crate) fn plan_text(plan: &Plan) -> String {
    let mut s = String::new();
    for c in &plan.changes {
        let sign = match c.action {
            "create" => "+",
            "delete" => "-",
            _ => "~",
        };
        s.push_str(&format!(
            "{sign} {} {}/{} ({})\n",
            c.action, c.model, c.key, c.payload
        ));
        for line in c.diff.lines() {
            s.push_str(&format!("    {line}\n"));
        }
    }
    let count = |a: &str| plan.changes.iter().filter(|c| c.action == a).count();
    s.push_str(&format!(
        "Plan: {} to create, {} to update, {} to delete.\n",
        count("create"),
        count("update"),
        count("delete")
    ));
    s
}
