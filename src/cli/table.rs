//! Tables for people: `get` and `status`, left-aligned columns like `kubectl get`.

use std::collections::BTreeMap;

use stepsync::model::Schema;
use stepsync::output::reason;
use stepsync::store::{Millis, ObjectRecord, Status};
use stepsync::validate::Mismatch;

/// Left-aligned columns separated by two spaces, like `kubectl get`.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// A message in one table cell: its lines joined, and when long, cut in the middle, since
/// its start says what was tried and its end why it failed (`-o wide` shows it whole).
fn short(msg: &str) -> String {
    const HEAD: usize = 50;
    const TAIL: usize = 130;
    let one = one_line(msg);
    let n = one.chars().count();
    if n <= HEAD + TAIL + 1 {
        return one;
    }
    let head: String = one.chars().take(HEAD).collect();
    let tail: String = one.chars().skip(n - TAIL).collect();
    format!("{head}…{tail}")
}

/// A message's lines on one line.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// When the next retry of an object in backoff is: `retry in 8s at 2026-12-01T14:30:05Z`.
pub(crate) fn next_retry(at: Option<Millis>, now: Millis) -> String {
    match at {
        None => String::new(),
        Some(t) if t <= now => "retry due now".to_owned(),
        Some(t) => {
            let secs = u64::try_from((t.0 - now.0 + 999) / 1000).unwrap_or(0);
            format!(
                "retry in {} at {}",
                humantime::format_duration(std::time::Duration::from_secs(secs)),
                t.rfc3339()
            )
        }
    }
}

pub(crate) fn objects_table(objs: &[ObjectRecord], wide: bool) -> String {
    let now = Millis::now();
    let rows: Vec<Vec<String>> = objs
        .iter()
        .map(|o| {
            let mut row = vec![
                o.model.clone(),
                o.key.clone(),
                o.book.status.to_string(),
                o.book.generation.to_string(),
                o.book.synced_generation.to_string(),
            ];
            if wide {
                row.push(reason(&o.book).unwrap_or_else(|| "-".to_owned()));
                row.push(o.book.failures.to_string());
                row.push(match next_retry(o.book.next_retry_at, now) {
                    r if r.is_empty() => "-".to_owned(),
                    r => r,
                });
                row.push(one_line(&o.book.message));
            } else {
                row.push(short(&o.book.message));
            }
            row
        })
        .collect();
    let header: &[&str] = if wide {
        &[
            "MODEL",
            "KEY",
            "STATUS",
            "GEN",
            "SYNCED",
            "REASON",
            "FAILURES",
            "NEXT-RETRY",
            "MESSAGE",
        ]
    } else {
        &["MODEL", "KEY", "STATUS", "GEN", "SYNCED", "MESSAGE"]
    };
    table(header, &rows)
}

/// `get` without a model: each model of the schema with its object count.
pub(crate) fn models_table(counts: &[(String, usize)]) -> String {
    let rows: Vec<Vec<String>> = counts
        .iter()
        .map(|(m, n)| vec![m.clone(), n.to_string()])
        .collect();
    table(&["MODEL", "OBJECTS"], &rows)
}

/// Objects per model and status (in `Status::ALL` order), for `status` in every format.
pub(crate) fn status_counts(objs: &[ObjectRecord]) -> BTreeMap<&str, [usize; 6]> {
    let mut counts: BTreeMap<&str, [usize; 6]> = BTreeMap::new();
    for o in objs {
        let idx = Status::ALL
            .iter()
            .position(|s| *s == o.book.status)
            .unwrap_or(0);
        counts.entry(o.model.as_str()).or_default()[idx] += 1;
    }
    counts
}

/// What `status` shows of the steps besides actuators: payload watchers, pull and event
/// steps (`pull/<name>`, `event/<name>`), and the dead letters (how many, the newest).
pub(crate) struct Steps {
    pub(crate) watchers: Vec<stepsync::store::StepStatus>,
    pub(crate) feeds: Vec<stepsync::store::StepStatus>,
    pub(crate) dead: (usize, Vec<stepsync::store::DeadLetter>),
    /// The workers of a shared store, and which of them leads (holds the runner lease).
    pub(crate) workers: Vec<stepsync::store::WorkerInfo>,
    pub(crate) lease: Option<stepsync::store::Lease>,
}

impl Steps {
    /// Whether `w` holds the runner lease, so leads (SPEC §17).
    pub(crate) fn leads(&self, w: &stepsync::store::WorkerInfo) -> bool {
        w.leads(self.lease.as_ref(), Millis::now())
    }
}

/// `stepsync status`: counts per model and status, then every object in error with its
/// next retry, then the stored objects the schema no longer describes.
pub(crate) fn status_report(
    schema: &Schema,
    objs: &[ObjectRecord],
    mismatches: &[Mismatch],
    steps: &Steps,
    wide: bool,
) -> String {
    let watchers = &steps.watchers;
    let counts = status_counts(objs);
    let mut rows = Vec::new();
    for model in schema.models.keys() {
        let c = counts.get(model.as_str()).copied().unwrap_or_default();
        let mut row = vec![model.clone(), c.iter().sum::<usize>().to_string()];
        row.extend(c.iter().map(usize::to_string));
        rows.push(row);
    }
    let mut header = vec!["MODEL", "TOTAL"];
    header.extend(Status::ALL.iter().map(|s| s.as_str()));
    let upper: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    let upper_refs: Vec<&str> = upper.iter().map(String::as_str).collect();
    let mut out = table(&upper_refs, &rows);
    let failing: Vec<&ObjectRecord> = objs
        .iter()
        .filter(|o| matches!(o.book.status, Status::Error | Status::Blocked))
        .collect();
    let now = Millis::now();
    if !failing.is_empty() {
        out.push_str("\nObjects in error:\n");
        for o in failing {
            let mut what = vec![o.book.status.to_string()];
            if o.book.failures > 0 {
                what.push(format!(
                    "{} failure{}",
                    o.book.failures,
                    if o.book.failures == 1 { "" } else { "s" }
                ));
            }
            let retry = next_retry(o.book.next_retry_at, now);
            if !retry.is_empty() {
                what.push(retry);
            }
            let msg = if wide {
                one_line(&o.book.message)
            } else {
                short(&o.book.message)
            };
            out.push_str(&format!("  {} ({}): {msg}\n", o.name(), what.join(", ")));
        }
    }
    let clip = |m: &str| if wide { one_line(m) } else { short(m) };
    let policy_failing: Vec<&ObjectRecord> = objs
        .iter()
        .filter(|o| o.book.policy_error.is_some())
        .collect();
    if !policy_failing.is_empty() {
        out.push_str("\nPolicies in error:\n");
        for o in policy_failing {
            let n = o.book.policy_failures;
            let mut what = vec![format!("{n} failure{}", if n == 1 { "" } else { "s" })];
            let retry = next_retry(o.book.policy_retry_at, now);
            if !retry.is_empty() {
                what.push(retry);
            }
            let msg = clip(o.book.policy_error.as_deref().unwrap_or_default());
            out.push_str(&format!("  {} ({}): {msg}\n", o.name(), what.join(", ")));
        }
    }
    if !watchers.is_empty() {
        out.push_str("\nWatchers:\n");
        for w in watchers {
            let last = w
                .last_run
                .map_or_else(|| "never".to_owned(), Millis::rfc3339);
            out.push_str(&format!(
                "  {}: {} runs, {} failed, last {last}: {}\n",
                w.name,
                w.runs,
                w.failures,
                clip(&w.message)
            ));
        }
    }
    for (title, prefix, what) in [
        ("Pull steps", "pull/", "poll"),
        ("Event steps", "event/", "message"),
    ] {
        let rows: Vec<_> = steps
            .feeds
            .iter()
            .filter(|f| f.name.starts_with(prefix))
            .collect();
        if rows.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{title}:\n"));
        for f in rows {
            let plural = |n: i64, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
            let ok = f
                .last_ok
                .map_or_else(|| "never".to_owned(), Millis::rfc3339);
            let mut line = format!("  {}: {}, last ok {ok}", f.name, plural(f.runs, what));
            if f.failures > 0 {
                let at = f
                    .last_error_at
                    .map_or_else(String::new, |t| format!(" at {}", t.rfc3339()));
                line.push_str(&format!(
                    ", {} failing{at}: {}",
                    plural(f.failures, "time"),
                    clip(&f.message)
                ));
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    if !steps.workers.is_empty() {
        out.push_str("\nWorkers:\n");
        for w in &steps.workers {
            let ago = Millis::now().0.saturating_sub(w.heartbeat.0) as f64 / 1000.0;
            let lead = if steps.leads(w) { ", leads" } else { "" };
            out.push_str(&format!(
                "  {} (pid {} on {}{lead}): {} claim{}, heartbeat {ago:.1} s ago\n",
                w.name,
                w.pid,
                w.host,
                w.claims,
                if w.claims == 1 { "" } else { "s" }
            ));
        }
    }
    let (dead, newest) = &steps.dead;
    if *dead > 0 {
        out.push_str(&format!(
            "\nDead letters: {dead} (newest first; `status -o json` has the messages)\n"
        ));
        for d in newest {
            out.push_str(&format!(
                "  {} {}@{} at {}: {}\n    message: {}\n",
                d.step,
                d.part,
                d.pos,
                d.at.rfc3339(),
                clip(&d.error),
                clip(&d.message)
            ));
        }
    }
    if !mismatches.is_empty() {
        out.push_str("\nStored objects the schema does not describe (see `stepsync validate`):\n");
        for m in mismatches {
            out.push_str(&format!("  {m}\n"));
        }
    }
    out
}
