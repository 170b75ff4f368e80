//! The JSON view of an object (SPEC §5.1): what `get -o json|yaml` prints and what the
//! engine writes to an object's `status.json`. The table forms are the CLI's (`cli/table.rs`).

use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::Schema;
use crate::store::{Millis, ObjectRecord, Status};

/// The JSON shape of one object (SPEC §5.1).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ObjectView {
    pub model: String,
    pub key: String,
    pub id: i64,
    /// Declarative and feedback fields, in schema order (secrets masked).
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    /// Who wrote it on its own (SPEC §12): `Network/n1` for what its policy ensured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub status: StatusView,
}

/// The outcome of an object's model policies (SPEC §12), shown once they ran.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyView {
    /// `ok` or `error`.
    pub status: &'static str,
    pub message: String,
    pub failures: u32,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_retry_at: Option<Millis>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusView {
    #[schema(value_type = String, example = "ok")]
    pub status: Status,
    pub message: String,
    /// Why it is pending (SPEC §5.1): `created`, `changed`, `deleted`, `retry`; `null` when
    /// it has no work. (A due resync depends on the clock and shows in `plan`.)
    pub reason: Option<String>,
    pub backend_code: u8,
    pub generation: i64,
    pub synced_generation: i64,
    pub failures: u32,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_retry_at: Option<Millis>,
    pub deleted: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created: Millis,
    #[schema(value_type = String, format = DateTime)]
    pub updated: Millis,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub enacted: Option<Millis>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_success_at: Option<Millis>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_error_at: Option<Millis>,
    /// The generation its policies last ran on; only for objects of policed models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policed_generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_status: Option<PolicyView>,
}

/// Why an object is pending (SPEC §5.1), as `status.reason` and `get -o wide` show it;
/// `None` when it has no work.
pub fn reason(b: &crate::store::Bookkeeping) -> Option<String> {
    crate::bookkeeping::work(b).map(|d| d.to_string())
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
            owner: o.owner.clone(),
            status: StatusView {
                status: b.status,
                message: b.message.clone(),
                reason: reason(b),
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
                policed_generation: (b.policed_generation > 0 || b.policy_error.is_some())
                    .then_some(b.policed_generation),
                policy_status: match &b.policy_error {
                    Some(m) => Some(PolicyView {
                        status: "error",
                        message: m.clone(),
                        failures: b.policy_failures,
                        next_retry_at: b.policy_retry_at,
                    }),
                    None if b.policed_generation > 0 => Some(PolicyView {
                        status: "ok",
                        message: "OK".to_owned(),
                        failures: 0,
                        next_retry_at: None,
                    }),
                    None => None,
                },
            },
        }
    }
}
