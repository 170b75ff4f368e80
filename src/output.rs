//! How objects and status are printed: a table for people, JSON and YAML for machines.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::Schema;
use crate::store::{Millis, ObjectRecord, Status};

/// The JSON shape of one object (SPEC §5.1).
#[derive(Debug, Serialize)]
pub struct ObjectView {
    pub model: String,
    pub key: String,
    pub id: i64,
    pub fields: Map<String, Value>,
    pub status: StatusView,
}

#[derive(Debug, Serialize)]
pub struct StatusView {
    pub status: Status,
    pub message: String,
    pub backend_code: u8,
    pub generation: i64,
    pub synced_generation: i64,
    pub failures: u32,
    pub next_retry_at: Option<Millis>,
    pub deleted: bool,
    pub created: Millis,
    pub updated: Millis,
    pub enacted: Option<Millis>,
    pub last_success_at: Option<Millis>,
    pub last_error_at: Option<Millis>,
}

impl ObjectView {
    /// Declarative and feedback fields together, in schema order.
    pub fn new(schema: &Schema, o: &ObjectRecord) -> ObjectView {
        let mut fields = Map::new();
        if let Some(model) = schema.model(&o.model) {
            for name in model.fields.keys() {
                if let Some(v) = o.fields.get(name).or_else(|| o.feedback.get(name)) {
                    fields.insert(name.clone(), v.clone());
                }
            }
        } else {
            fields.extend(o.fields.clone());
            fields.extend(o.feedback.clone());
        }
        let b = &o.book;
        ObjectView {
            model: o.model.clone(),
            key: o.key.clone(),
            id: o.id,
            fields,
            status: StatusView {
                status: b.status,
                message: b.message.clone(),
                backend_code: b.status.backend_code(),
                generation: b.generation,
                synced_generation: b.synced_generation,
                failures: b.failures,
                next_retry_at: b.next_retry_at,
                deleted: b.deleted,
                created: b.created,
                updated: b.updated,
                enacted: b.enacted,
                last_success_at: b.last_success_at,
                last_error_at: b.last_error_at,
            },
        }
    }
}

/// Left-aligned columns separated by two spaces, like `kubectl get`.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
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

pub fn objects_table(objs: &[ObjectRecord]) -> String {
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
pub fn status_report(schema: &Schema, objs: &[ObjectRecord]) -> String {
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
