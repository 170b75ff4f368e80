//! The stepdef file format: what serde reads from `stepdefs/*.yaml` and what the JSON
//! Schema (`stepsync schema stepdef`) is derived from. Checked into typed actuators by
//! `super::check`.

use std::num::NonZeroU32;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::duration::Dur;
use crate::yaml::{Node, Spanned};

// The derived JSON Schemas (`stepsync schema stepdef`, see `crate::json_schema`) describe
// the values inside the `Spanned` wrappers, which carry positions only. The `extend`s state
// the checks of `Cx` that a schema can express, so editors flag them while typing.

/// An actuator: how the objects of one model reach their backend. Strings in `attributes`,
/// payloads and `feedback` are Jinja2 templates.
// Named `Actuator` in the schema: `stepsync schema stepdef` holds it beside `Watcher` and
// `Policy`, chosen by `kind` (see `crate::json_schema::AnyStepdef`).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "Actuator",
    title = "stepsync actuator (stepdefs/*.yaml, kind: Actuator)"
)]
pub(crate) struct StepdefSpec {
    /// The step kind: `Actuator` (this one), `Watcher` or `Policy`.
    #[schemars(with = "String", extend("enum" = ["Actuator"]))]
    pub(super) kind: Spanned<String>,
    /// The model whose objects this actuator synchronizes (one actuator per model).
    #[schemars(with = "String")]
    pub(super) model: Spanned<String>,
    /// Template variables (the `get_extra_attributes` role): name -> template or value, with
    /// `object`, `vars` and `secret()` in context. The names `object`, `vars`, `result` and
    /// `secret` are reserved.
    #[serde(default)]
    #[schemars(
        with = "IndexMap<String, serde_json::Value>",
        transform = crate::json_schema::forbid_reserved
    )]
    pub(super) attributes: IndexMap<Spanned<String>, Spanned<Node>>,
    /// Settings every REST request of this stepdef shares (sync, delete, observe, create,
    /// update); a request's own keys override them.
    #[serde(default)]
    #[schemars(with = "Option<RestDefaultsSpec>")]
    pub(super) rest_defaults: Option<Spanned<RestDefaultsSpec>>,
    /// What creates or updates the backend object.
    #[serde(default)]
    #[schemars(with = "Option<PayloadSpec>")]
    pub(super) sync: Option<Spanned<PayloadSpec>>,
    /// What deletes the backend object.
    #[serde(default)]
    #[schemars(with = "Option<PayloadSpec>")]
    pub(super) delete: Option<Spanned<PayloadSpec>>,
    /// Feedback field -> a template (with `result` in context) or `{jsonpath: ...}`, applied
    /// to the REST body or to the playbook result.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, FeedbackSpec>")]
    pub(super) feedback: IndexMap<Spanned<String>, Spanned<FeedbackSpec>>,
    /// A template that classifies an outcome as deferred (REST default:
    /// `result.status in [429, 503]`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(super) defer_when: Option<Spanned<String>>,
    /// Runs of this actuator in flight at once.
    #[serde(default, deserialize_with = "crate::config::opt_nonzero")]
    pub(super) concurrency: Option<NonZeroU32>,
    /// Re-actuate in-sync objects of this model this often.
    #[serde(default)]
    pub(super) resync: Option<Dur>,
}

/// A payload: `rest` or `playbook`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "Payload",
    extend(
        "anyOf" = [{"required": ["rest"]}, {"required": ["playbook"]}],
        "if" = {"required": ["rest"]},
        "then" = {"properties": {"playbook": false, "hosts": false}}
    )
)]
pub(super) struct PayloadSpec {
    /// HTTP requests: the simple form (`method`, `url`, ...) or the delta form (`observe`,
    /// `create`, `update`).
    #[serde(default)]
    #[schemars(with = "Option<RestSpec>")]
    pub(super) rest: Option<Spanned<RestSpec>>,
    /// A playbook, relative to `playbooks/`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(super) playbook: Option<Spanned<String>>,
    /// A template overriding the play's `hosts` (playbooks only).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(super) hosts: Option<Spanned<String>>,
    /// Extra attributes for this payload only.
    #[serde(default)]
    #[schemars(
        with = "IndexMap<String, serde_json::Value>",
        transform = crate::json_schema::forbid_reserved
    )]
    pub(super) vars: IndexMap<Spanned<String>, Spanned<Node>>,
}

/// Both forms in one map: the simple form's request fields, or the delta form's parts.
/// The request fields are spelled out here and in `RequestSpec` rather than shared through
/// `#[serde(flatten)]`: flattening buffers the map and loses every value's position, and
/// with it the file:line:col of errors in requests.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "Rest",
    description = "HTTP requests: the simple form (`method`, `url`, ...: one request, sent on every \
                   run) or the delta form (`observe`, then `create`, `update` or nothing).",
    // The simple form is recognized by `method` or `url`, as `Cx::rest` does.
    extend(
        "if" = {"anyOf": [{"required": ["method"]}, {"required": ["url"]}]},
        "then" = {
            "required": ["url"],
            "properties": {"observe": false, "create": false, "update": false, "compare": false}
        },
        "else" = {"required": ["observe", "update"]}
    )
)]
pub(super) struct RestSpec {
    /// Simple form: the HTTP method (default GET).
    #[serde(default)]
    #[schemars(with = "Option<String>", extend(
            "pattern" = crate::json_schema::HTTP_METHOD,
            "patternErrorMessage" = "not an HTTP method",
            "examples" = crate::json_schema::HTTP_METHODS
        ))]
    pub(super) method: Option<Spanned<String>>,
    /// Simple form: the URL (a template).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(super) url: Option<Spanned<String>>,
    /// Header name -> value (a template).
    #[serde(default)]
    #[schemars(with = "IndexMap<String, String>", extend("propertyNames" = {
            "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
            "patternErrorMessage": "not a valid header name"
        }))]
    pub(super) headers: IndexMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<AuthSpec>")]
    pub(super) auth: Option<Spanned<AuthSpec>>,
    /// The request body, sent as JSON; strings in it are templates.
    #[serde(default)]
    #[schemars(with = "serde_json::Value")]
    pub(super) body: Option<Spanned<Node>>,
    #[serde(default)]
    pub(super) timeout: Option<Dur>,
    /// The statuses that mean success (default: any 2xx; for a delete also 404).
    #[serde(default)]
    pub(super) expect: Option<Vec<u16>>,
    /// Delta form: the read-only request that fetches the backend's current state.
    #[serde(default)]
    #[schemars(with = "Option<ObserveSpec>")]
    pub(super) observe: Option<Spanned<ObserveSpec>>,
    /// Delta form: sent when the observed object is absent (else `update` is).
    #[serde(default)]
    #[schemars(with = "Option<RequestSpec>")]
    pub(super) create: Option<Spanned<RequestSpec>>,
    /// Delta form: sent when the observed object differs from the desired body.
    #[serde(default)]
    #[schemars(with = "Option<RequestSpec>")]
    pub(super) update: Option<Spanned<RequestSpec>>,
    /// Delta form: the part of the observed body compared with the desired body (default:
    /// the whole body).
    #[serde(default)]
    #[schemars(with = "Option<CompareSpec>")]
    pub(super) compare: Option<Spanned<CompareSpec>>,
}

/// One HTTP request.
#[derive(Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Request", extend("required" = ["url"]))]
pub(super) struct RequestSpec {
    /// The HTTP method (default GET).
    #[serde(default)]
    #[schemars(with = "Option<String>", extend(
            "pattern" = crate::json_schema::HTTP_METHOD,
            "patternErrorMessage" = "not an HTTP method",
            "examples" = crate::json_schema::HTTP_METHODS
        ))]
    pub(super) method: Option<Spanned<String>>,
    /// The URL (a template).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(super) url: Option<Spanned<String>>,
    /// Header name -> value (a template).
    #[serde(default)]
    #[schemars(with = "IndexMap<String, String>", extend("propertyNames" = {
            "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
            "patternErrorMessage": "not a valid header name"
        }))]
    pub(super) headers: IndexMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<AuthSpec>")]
    pub(super) auth: Option<Spanned<AuthSpec>>,
    /// The request body, sent as JSON; strings in it are templates.
    #[serde(default)]
    #[schemars(with = "serde_json::Value")]
    pub(super) body: Option<Spanned<Node>>,
    #[serde(default)]
    pub(super) timeout: Option<Dur>,
    /// The statuses that mean success (default: any 2xx).
    #[serde(default)]
    pub(super) expect: Option<Vec<u16>>,
}

/// The delta form's read-only request (GET or HEAD).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Observe")]
pub(super) struct ObserveSpec {
    /// GET (default) or HEAD.
    #[serde(default)]
    #[schemars(
        with = "Option<String>",
        extend(
            "pattern" = "^([Gg][Ee][Tt]|[Hh][Ee][Aa][Dd])$",
            "patternErrorMessage" = "`observe` must be a read-only GET or HEAD request",
            "examples" = ["GET", "HEAD"]
        )
    )]
    pub(super) method: Option<Spanned<String>>,
    /// The URL (a template).
    #[schemars(with = "String")]
    pub(super) url: Spanned<String>,
    /// Header name -> value (a template).
    #[serde(default)]
    #[schemars(with = "IndexMap<String, String>", extend("propertyNames" = {
            "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
            "patternErrorMessage": "not a valid header name"
        }))]
    pub(super) headers: IndexMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<AuthSpec>")]
    pub(super) auth: Option<Spanned<AuthSpec>>,
    #[serde(default)]
    pub(super) timeout: Option<Dur>,
    /// The statuses that mean the object does not exist (default: 404).
    #[serde(default)]
    pub(super) absent: Option<Vec<u16>>,
}

/// What part of the observed body to compare.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Compare")]
pub(super) struct CompareSpec {
    pub(super) observed: JsonPathSpec,
}

/// A JSONPath expression such as `$.id`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "JsonPath")]
pub(super) struct JsonPathSpec {
    #[schemars(
        with = "String",
        extend("pattern" = "^\\$", "patternErrorMessage" = "a JSONPath starts with `$`, e.g. `$.id`")
    )]
    pub(super) jsonpath: Spanned<String>,
}

/// `rest_defaults:` (SPEC §6.2): what the requests of a stepdef have in common.
#[derive(Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RestDefaults")]
pub(super) struct RestDefaultsSpec {
    /// Header name -> value (a template), sent with every request unless the request sets
    /// the same header.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, String>", extend("propertyNames" = {
            "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
            "patternErrorMessage": "not a valid header name"
        }))]
    pub(super) headers: IndexMap<Spanned<String>, Spanned<String>>,
    /// Authentication of every request that has no `auth:` of its own.
    #[serde(default)]
    #[schemars(with = "Option<AuthSpec>")]
    pub(super) auth: Option<Spanned<AuthSpec>>,
    /// Timeout of every request that has no `timeout:` of its own.
    #[serde(default)]
    pub(super) timeout: Option<Dur>,
}

/// Request authentication.
#[derive(Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
#[schemars(rename = "Auth")]
pub(super) enum AuthSpec {
    /// `Authorization: Bearer <token>` (a template, e.g. `{{ secret('token') }}`).
    Bearer(#[schemars(with = "String")] Spanned<String>),
    /// HTTP basic authentication.
    Basic(BasicSpec),
}

#[derive(Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BasicAuth")]
pub(super) struct BasicSpec {
    /// The user (a template).
    #[schemars(with = "String")]
    pub(super) user: Spanned<String>,
    /// The password (a template, e.g. `{{ secret('password') }}`).
    #[schemars(with = "String")]
    pub(super) password: Spanned<String>,
}

/// How a feedback field gets its value: a template, or a JSONPath into the result.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Feedback")]
pub(super) enum FeedbackSpec {
    Template(String),
    JsonPath(JsonPathSpec),
}

/// Only the `kind` of a stepdef file, read first to choose the format of the rest.
#[derive(Deserialize)]
pub(crate) struct KindSpec {
    pub(super) kind: Spanned<String>,
}

/// A watcher (SPEC §11): objects of `model` react when a related object changes.
// The `anyOf` states `Cx::watcher`'s rule: a non-empty `watches` or a `watch_degree`, not
// both (an empty `watches` beside `watch_degree` is the same as none).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "Watcher",
    title = "stepsync watcher (stepdefs/*.yaml, kind: Watcher)",
    extend("anyOf" = [
        {
            "required": ["watches"],
            "properties": {"watches": {"minItems": 1}},
            "not": {"required": ["watch_degree"]}
        },
        {
            "required": ["watch_degree"],
            "properties": {"watches": {"maxItems": 0}}
        }
    ])
)]
pub(crate) struct WatcherSpec {
    /// The step kind: `Watcher` (this one), `Actuator` or `Policy`.
    #[schemars(with = "String", extend("enum" = ["Watcher"]))]
    pub(super) kind: Spanned<String>,
    /// The actuated model whose objects react.
    #[schemars(with = "String")]
    pub(super) model: Spanned<String>,
    /// What is watched: a model reached through `via` (a dot path of ref fields or links on
    /// `model`), and which of its fields (none: any field).
    #[serde(default)]
    #[schemars(with = "Vec<WatchSpec>")]
    pub(super) watches: Vec<Spanned<WatchSpec>>,
    /// Instead of `watches`: every model within this many dependency hops, all fields.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub(super) watch_degree: Option<Spanned<u32>>,
    /// `resync` (default: the linked objects become pending) or a payload of its own.
    #[serde(default)]
    #[schemars(with = "Option<OnChangeSpec>")]
    pub(super) on_change: Option<Spanned<OnChangeSpec>>,
    /// The author has proven that a loop through this watcher settles (SPEC §15).
    #[serde(default)]
    pub(super) converges: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Watch")]
pub(super) struct WatchSpec {
    /// The watched model.
    #[schemars(with = "String")]
    pub(super) model: Spanned<String>,
    /// A ref/refs field or `links` entry of the watching model, or a dot path of them,
    /// that leads to the watched model.
    #[schemars(with = "String")]
    pub(super) via: Spanned<String>,
    /// The watched fields, declarative or feedback (default: any field).
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub(super) fields: Option<Vec<Spanned<String>>>,
}

/// `on_change: resync`, or a payload run once per linked object and change.
#[derive(JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "OnChange")]
pub(super) enum OnChangeSpec {
    #[schemars(with = "String", extend("enum" = ["resync"]))]
    Word(String),
    Payload(Box<PayloadSpec>),
}

// Read by hand rather than as an untagged enum: untagged buffers the value and loses every
// position inside the payload, and with it the file:line:col of its errors. A map is handed
// on to the payload's own reader, whose values the YAML reader still locates.
impl<'de> Deserialize<'de> for OnChangeSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OnChangeSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`resync` or a payload (`{rest: ...}` or `{playbook: FILE}`)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OnChangeSpec, E> {
                Ok(OnChangeSpec::Word(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<OnChangeSpec, A::Error> {
                PayloadSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|p| OnChangeSpec::Payload(Box::new(p)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A model policy (SPEC §12): declarative state of other models kept from each object of
/// `model`.
// The `anyOf` states `Cx::policy`'s rule: some actions, on create or on update.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "Policy",
    title = "stepsync model policy (stepdefs/*.yaml, kind: Policy)",
    extend("anyOf" = [
        {"required": ["on_create"], "properties": {"on_create": {"minItems": 1}}},
        {"required": ["on_update"], "properties": {"on_update": {"type": "array", "minItems": 1}}}
    ])
)]
pub(crate) struct PolicySpec {
    /// The step kind: `Policy` (this one), `Actuator` or `Watcher`.
    #[schemars(with = "String", extend("enum" = ["Policy"]))]
    pub(super) kind: Spanned<String>,
    /// The source model.
    #[schemars(with = "String")]
    pub(super) model: Spanned<String>,
    /// Actions when an object of `model` is created.
    #[serde(default)]
    #[schemars(with = "Vec<ActionSpec>")]
    pub(super) on_create: Vec<Spanned<ActionSpec>>,
    /// Actions when it changes (default: those of `on_create`).
    #[serde(default)]
    #[schemars(with = "Option<Vec<ActionSpec>>")]
    pub(super) on_update: Option<Vec<Spanned<ActionSpec>>>,
    /// `cascade` (default): the objects this policy ensured are deleted with their source;
    /// `keep` leaves them.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("enum" = ["cascade", "keep"]))]
    pub(super) on_delete: Option<Spanned<String>>,
    /// The author has proven that a loop through this policy settles (SPEC §15).
    #[serde(default)]
    pub(super) converges: bool,
}

/// One action: `ensure` or `delete`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "PolicyAction",
    extend("oneOf" = [{"required": ["ensure"]}, {"required": ["delete"]}])
)]
pub(super) struct ActionSpec {
    #[serde(default)]
    #[schemars(with = "Option<EnsureSpec>")]
    pub(super) ensure: Option<Spanned<EnsureSpec>>,
    #[serde(default)]
    #[schemars(with = "Option<TargetSpec>")]
    pub(super) delete: Option<Spanned<TargetSpec>>,
}

/// Create or update an object by key, owned by the source.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Ensure")]
pub(super) struct EnsureSpec {
    #[schemars(with = "String")]
    pub(super) model: Spanned<String>,
    /// The key (a template, `object` and `item` in context).
    #[schemars(with = "String")]
    pub(super) key: Spanned<String>,
    /// Declarative field -> template or value.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub(super) fields: IndexMap<Spanned<String>, Spanned<Node>>,
    /// A list (or a template giving one): one object per item, `item` in context.
    #[serde(default, rename = "loop")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub(super) each: Option<Spanned<Node>>,
}

/// An object to delete, by model and key.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PolicyDelete")]
pub(super) struct TargetSpec {
    #[schemars(with = "String")]
    pub(super) model: Spanned<String>,
    /// The key (a template).
    #[schemars(with = "String")]
    pub(super) key: Spanned<String>,
}

/// A pull step (SPEC §13): polls a backend on a timer and writes what it lists into the
/// data model.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "PullStep",
    title = "stepsync pull step (stepdefs/*.yaml, kind: PullStep)"
)]
pub(crate) struct PullStepSpec {
    /// The step kind: `PullStep` (this one).
    #[schemars(with = "String", extend("enum" = ["PullStep"]))]
    pub(super) kind: Spanned<String>,
    /// The step's name: its objects are owned by `pull/<name>`.
    #[schemars(with = "String", extend("pattern" = "^[A-Za-z0-9_.-]+$"))]
    pub(super) name: Spanned<String>,
    /// How often to poll, with ±10% jitter; each step has its own timer.
    pub(super) interval: Dur,
    /// The request that lists the backend's objects (`vars` and `secret()` in context).
    #[schemars(with = "RequestSpec")]
    pub(super) request: Spanned<RequestSpec>,
    /// Pagination: a JSONPath to the next page's URL; followed until it is empty.
    #[serde(default)]
    pub(super) next: Option<JsonPathSpec>,
    /// A JSONPath to the listed items in each page.
    pub(super) items: JsonPathSpec,
    /// The model the items become objects of.
    #[schemars(with = "String")]
    pub(super) model: Spanned<String>,
    /// The object's key (a template, `item` in context).
    #[schemars(with = "String")]
    pub(super) key: Spanned<String>,
    /// Declarative field -> template or value (`item` in context).
    #[serde(default)]
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub(super) fields: IndexMap<Spanned<String>, Spanned<Node>>,
    /// Feedback field -> template or value: written without making the object pending.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub(super) feedback: IndexMap<Spanned<String>, Spanned<Node>>,
    /// Delete the objects this step owns that a poll no longer lists.
    #[serde(default)]
    pub(super) prune: bool,
}

/// An event step (SPEC §14): consumes a topic of the event bus and writes each message
/// into the data model.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "EventStep",
    title = "stepsync event step (stepdefs/*.yaml, kind: EventStep)"
)]
pub(crate) struct EventStepSpec {
    /// The step kind: `EventStep` (this one).
    #[schemars(with = "String", extend("enum" = ["EventStep"]))]
    pub(super) kind: Spanned<String>,
    /// The step's name: its consumer is named after it, its objects owned by `event/<name>`.
    #[schemars(with = "String", extend("pattern" = "^[A-Za-z0-9_.-]+$"))]
    pub(super) name: Spanned<String>,
    /// A Kafka topic, or a NATS subject captured by a JetStream stream.
    #[schemars(with = "String")]
    pub(super) topic: Spanned<String>,
    /// How a message's payload becomes `event`: `json` (default), `yaml` or `text`.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("enum" = ["json", "yaml", "text"]))]
    pub(super) decode: Option<Spanned<String>>,
    /// The model the messages write.
    #[schemars(with = "String")]
    pub(super) model: Spanned<String>,
    /// A template giving `upsert` (default), `delete` or `ignore` (`event` in context).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(super) action: Option<Spanned<String>>,
    /// The object's key (a template, `event` in context).
    #[schemars(with = "String")]
    pub(super) key: Spanned<String>,
    /// Declarative field -> template or value.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub(super) fields: IndexMap<Spanned<String>, Spanned<Node>>,
    /// Feedback field -> template or value: written without making the object pending.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub(super) feedback: IndexMap<Spanned<String>, Spanned<Node>>,
}
