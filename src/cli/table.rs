//! Tables for people: `get` and `status`, left-aligned columns like `kubectl get`.

use std::collections::BTreeMap;

use stepsync::model::Schema;
use stepsync::store::{ObjectRecord, Status};

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

/// One line of a message, cut to fit a table cell.
fn short(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or("");
    if first.chars().count() > 60 {
        format!("{}…", first.chars().take(59).collect::<String>())
    } else {
        first.to_owned()
    }
}

pub(crate) fn objects_table(objs: &[ObjectRecord]) -> String {
    let rows: Vec<Vec<String>> = objs
        .iter()
        .map(|o| {
            vec![
                o.model.clone(),
                o.key.clone(),
                o.book.status.to_string(),
                o.book.generation.to_string(),
                o.book.synced_generation.to_string(),
                short(&o.book.message),
            ]
        })
        .collect();
    table(
        &["MODEL", "KEY", "STATUS", "GEN", "SYNCED", "MESSAGE"],
        &rows,
    )
}

/// `stepsync status`: counts per model and status, then every object in error.
pub(crate) fn status_report(schema: &Schema, objs: &[ObjectRecord]) -> String {
    let mut counts: BTreeMap<&str, [usize; 6]> = BTreeMap::new();
    for o in objs {
        let idx = Status::ALL
            .iter()
            .position(|s| *s == o.book.status)
            .unwrap_or(0);
        counts.entry(o.model.as_str()).or_default()[idx] += 1;
    }
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
    if !failing.is_empty() {
        out.push_str("\nObjects in error:\n");
        for o in failing {
            out.push_str(&format!(
                "  {} ({}): {}\n",
                o.name(),
                o.book.status,
                short(&o.book.message)
            ));
        }
    }
    out
}
