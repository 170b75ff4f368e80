//! The layout of an object row, one home for both stores: the columns a read selects and
//! their order, how such a row becomes an [`ObjectRecord`], and the bookkeeping values a
//! write sets, with the `pending` and `suspect` marks the state machine derives. A column
//! added here is added for SQLite and PostgreSQL at once; each store only says how its row
//! type hands out a cell ([`Cells`]) and how a [`Cell`] becomes its parameter type.

use serde_json::{Map, Value};

use super::{Bookkeeping, Millis, ObjectRecord, Status};
use crate::bookkeeping;

/// What every object read selects, in the order [`record`] reads it.
pub(super) const OBJECT_COLUMNS: &str = "id, model, key, fields, feedback, generation, \
    synced_generation, status, message, failures, next_retry_at, deleted, created, updated, \
    enacted, last_success_at, last_error_at, attempted, applied, drift, drift_found, \
    policed_generation, policy_error, policy_failures, policy_retry_at, owner, touched";

/// What every outbox read selects.
pub(super) const OUTBOX_COLUMNS: &str = "id, watcher, obj, model, key, fields, old, new, seq, at";

/// The bookkeeping columns a write sets, in the order of [`book_values`].
const BOOK_COLUMNS: [&str; 22] = [
    "generation",
    "synced_generation",
    "status",
    "message",
    "failures",
    "next_retry_at",
    "deleted",
    "created",
    "updated",
    "enacted",
    "last_success_at",
    "last_error_at",
    "pending",
    "attempted",
    "applied",
    "drift",
    "drift_found",
    "suspect",
    "policed_generation",
    "policy_error",
    "policy_failures",
    "policy_retry_at",
];

/// One value a write binds, in the few shapes the object row has.
pub(super) enum Cell {
    Int(i64),
    OptInt(Option<i64>),
    Text(String),
    OptText(Option<String>),
    Flag(bool),
}

/// The bookkeeping values of `b`, in [`BOOK_COLUMNS`] order.
pub(super) fn book_values(b: &Bookkeeping) -> [Cell; 22] {
    let millis = |m: Option<Millis>| Cell::OptInt(m.map(|m| m.0));
    [
        Cell::Int(b.generation),
        Cell::Int(b.synced_generation),
        Cell::Text(b.status.as_str().to_owned()),
        Cell::Text(b.message.clone()),
        Cell::Int(i64::from(b.failures)),
        millis(b.next_retry_at),
        Cell::Flag(b.deleted),
        Cell::Int(b.created.0),
        Cell::Int(b.updated.0),
        millis(b.enacted),
        millis(b.last_success_at),
        millis(b.last_error_at),
        Cell::Flag(bookkeeping::work(b).is_some()),
        Cell::Flag(b.attempted),
        Cell::OptText(b.applied.clone()),
        Cell::OptText(b.drift.as_ref().map(|d| d.cause.to_string())),
        Cell::Flag(b.drift.as_ref().is_some_and(|d| d.found)),
        Cell::Flag(bookkeeping::suspect(b).is_some()),
        Cell::Int(b.policed_generation),
        Cell::OptText(b.policy_error.clone()),
        Cell::Int(i64::from(b.policy_failures)),
        millis(b.policy_retry_at),
    ]
}

/// The statements that write an object's bookkeeping, in a store's placeholder style.
/// Each also sets the object's `rev` (the events stream's order, SPEC §16) to the value
/// bound last, but only when what a reader sees changed (status, message, deletion,
/// feedback): a pass that writes a row's bookkeeping back as it was moves nothing. Its
/// `touched` takes that value on every write: a reader that holds every object as of a
/// revision catches up by reading the rows touched after it
/// ([`super::Store::changed_since`]).
pub(super) struct BookSql {
    /// `INSERT INTO objects (model, key, fields, <book>, rev, touched) VALUES (1..26, 26)`.
    pub insert: String,
    /// `UPDATE objects SET <book> WHERE id = 1` (the id first, then the book, then the rev).
    pub update: String,
    /// The same, also setting `feedback` from the 24th value (the rev is the 25th).
    pub update_feedback: String,
    /// `UPDATE objects SET fields = 2 WHERE id = 1`, the rev third.
    pub fields: String,
}

/// The bookkeeping columns whose change a reader of the events stream sees.
const VISIBLE: [&str; 3] = ["status", "message", "deleted"];

/// The statements with placeholders `mark` followed by their number (`?` for SQLite, `$`
/// for PostgreSQL), and the store's null-safe "differs" operator (`IS NOT`, `IS DISTINCT
/// FROM`).
pub(super) fn book_sql(mark: char, differs: &str) -> BookSql {
    let set = BOOK_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = {mark}{}", i + 2))
        .collect::<Vec<_>>()
        .join(", ");
    let changed = |extra: Option<(&str, usize)>| {
        let mut terms: Vec<String> = VISIBLE
            .iter()
            .map(|c| {
                let i = BOOK_COLUMNS.iter().position(|b| b == c).unwrap_or(0) + 2;
                format!("{c} {differs} {mark}{i}")
            })
            .collect();
        if let Some((c, i)) = extra {
            terms.push(format!("{c} {differs} {mark}{i}"));
        }
        terms.join(" OR ")
    };
    let n = BOOK_COLUMNS.len();
    let values = (1..=n + 4)
        .map(|i| format!("{mark}{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    // SET expressions read the row as it was, whatever their order.
    BookSql {
        insert: format!(
            "INSERT INTO objects (model, key, fields, {}, rev, touched) VALUES ({values}, {mark}{})",
            BOOK_COLUMNS.join(", "),
            n + 4
        ),
        update: format!(
            "UPDATE objects SET rev = CASE WHEN {} THEN {mark}{} ELSE rev END, \
             touched = {mark}{}, {set} WHERE id = {mark}1",
            changed(None),
            n + 2,
            n + 2
        ),
        update_feedback: format!(
            "UPDATE objects SET rev = CASE WHEN {} THEN {mark}{} ELSE rev END, \
             touched = {mark}{}, {set}, feedback = {mark}{} WHERE id = {mark}1",
            changed(Some(("feedback", n + 2))),
            n + 3,
            n + 3,
            n + 2
        ),
        fields: format!(
            "UPDATE objects SET rev = CASE WHEN fields {differs} {mark}2 THEN {mark}3 ELSE rev END, \
             touched = {mark}3, fields = {mark}2 WHERE id = {mark}1"
        ),
    }
}

/// PostgreSQL's write of many objects' bookkeeping in one statement, as [`BookSql::update`]
/// and [`BookSql::update_feedback`] write one: `$1` the ids, then one array per
/// [`BOOK_COLUMNS`] column (of the type `array_type` gives for its cell), the feedback
/// (`NULL`: not written), the revisions. An id must appear once: `UPDATE … FROM` writes a
/// row once, whichever of its matches it takes.
pub(super) fn book_update_many_sql(array_type: impl Fn(&Cell) -> &'static str) -> String {
    let cells = book_values(&bookkeeping::created(Millis(0)));
    let n = BOOK_COLUMNS.len();
    let arrays = std::iter::once("$1::BIGINT[]".to_owned())
        .chain(
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("${}::{}", i + 2, array_type(c))),
        )
        .chain([
            format!("${}::TEXT[]", n + 2),
            format!("${}::BIGINT[]", n + 3),
        ])
        .collect::<Vec<_>>()
        .join(", ");
    let mut changed: Vec<String> = VISIBLE
        .iter()
        .map(|c| format!("o.{c} IS DISTINCT FROM u.{c}"))
        .collect();
    changed.push("(u.feedback IS NOT NULL AND o.feedback IS DISTINCT FROM u.feedback)".into());
    let set = BOOK_COLUMNS
        .iter()
        .map(|c| format!("{c} = u.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "UPDATE objects o SET rev = CASE WHEN {} THEN u.rev ELSE o.rev END, touched = u.rev, {set}, \
         feedback = COALESCE(u.feedback, o.feedback) \
         FROM unnest({arrays}) AS u(id, {}, feedback, rev) WHERE o.id = u.id \
         AND o.id = ANY($1)",
        changed.join(" OR "),
        BOOK_COLUMNS.join(", ")
    )
}

/// How a store's row type hands out the cell at a position.
pub(super) trait Cells {
    type Error;
    fn int(&self, i: usize) -> Result<i64, Self::Error>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    fn text(&self, i: usize) -> Result<String, Self::Error>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, Self::Error>;
    fn flag(&self, i: usize) -> Result<bool, Self::Error>;
}

/// A map the store holds as JSON text. The store only ever holds maps it serialized itself.
pub(super) fn json_map(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}

/// A count as stored back in its type; only ever written from a `u32`.
fn count(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// The object of a row that selected [`OBJECT_COLUMNS`].
pub(super) fn record<R: Cells>(r: &R) -> Result<ObjectRecord, R::Error> {
    let millis = |i: usize| -> Result<Option<Millis>, R::Error> { Ok(r.opt_int(i)?.map(Millis)) };
    Ok(ObjectRecord {
        id: r.int(0)?,
        model: r.text(1)?,
        key: r.text(2)?,
        fields: json_map(&r.text(3)?),
        feedback: json_map(&r.text(4)?),
        book: Bookkeeping {
            generation: r.int(5)?,
            synced_generation: r.int(6)?,
            status: Status::parse(&r.text(7)?).unwrap_or(Status::Pending),
            message: r.text(8)?,
            failures: count(r.int(9)?),
            next_retry_at: millis(10)?,
            deleted: r.flag(11)?,
            created: Millis(r.int(12)?),
            updated: Millis(r.int(13)?),
            enacted: millis(14)?,
            last_success_at: millis(15)?,
            last_error_at: millis(16)?,
            attempted: r.flag(17)?,
            applied: r.opt_text(18)?,
            drift: r
                .opt_text(19)?
                .and_then(|c| bookkeeping::Cause::parse(&c))
                .map(|cause| bookkeeping::Drift {
                    cause,
                    found: r.flag(20).unwrap_or(false),
                }),
            policed_generation: r.int(21)?,
            policy_error: r.opt_text(22)?,
            policy_failures: count(r.int(23)?),
            policy_retry_at: millis(24)?,
        },
        owner: r.opt_text(25)?,
        touched: r.int(26)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statements_number_every_column_once() {
        let sql = book_sql('$', "IS DISTINCT FROM");
        assert!(sql.insert.ends_with("$25, $26, $26)"), "{}", sql.insert);
        assert!(
            sql.update
                .contains("ELSE rev END, touched = $24, generation = $2,")
        );
        assert!(
            sql.update_feedback
                .contains("ELSE rev END, touched = $25, ")
        );
        assert!(sql.fields.contains("touched = $3, fields = $2"));
        assert!(sql.update.contains(", generation = $2,"), "{}", sql.update);
        assert!(
            sql.update.starts_with(
                "UPDATE objects SET rev = CASE WHEN status IS DISTINCT FROM $4 OR message \
                 IS DISTINCT FROM $5 OR deleted IS DISTINCT FROM $8 THEN $24 ELSE rev END"
            ),
            "{}",
            sql.update
        );
        assert!(sql.update.contains("policy_retry_at = $23 WHERE id = $1"));
        assert!(
            sql.update_feedback
                .contains("feedback IS DISTINCT FROM $24 THEN $25")
        );
        assert!(sql.update_feedback.contains("feedback = $24 WHERE id = $1"));
        assert_eq!(book_values(&bookkeeping::created(Millis(1))).len(), 22);
    }
}
