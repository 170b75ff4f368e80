//! JSON Schemas of the file formats (`stepsync schema NAME`), so editors complete and check
//! `stepsync.yaml`, `schemas/*.yaml`, stepdefs and objects files as they are typed.
//!
//! The schemas are generated from the same Rust types that deserialize the files (schemars
//! reads their serde attributes), so they cannot drift from the parser: a field added there
//! appears here, and `tests/json_schemas.rs` fails until `schemas/json/` is regenerated. What
//! the types cannot say (the spanned wrappers, durations, hand-written deserializers, the
//! data model of one service) is written out in this module.

use std::borrow::Cow;
use std::path::Path;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value, json};

use crate::config::{Config, in_dir};
use crate::duration::Dur;
use crate::error::Result;
use crate::model::schema::{FieldSpecLong, SchemaFile};
use crate::model::{FieldType, Model};
use crate::service::SCHEMAS_DIR;
use crate::stepdef::{EventStepSpec, PolicySpec, PullStepSpec, StepdefSpec, WatcherSpec};

/// One printable schema: its name on the command line and the files it describes.
pub struct SchemaName {
    pub name: &'static str,
    pub files: &'static str,
    /// Where the checked-in copy lives, relative to the repository root.
    pub json_file: &'static str,
}

pub const SCHEMAS: &[SchemaName] = &[
    SchemaName {
        name: "config",
        files: "stepsync.yaml",
        json_file: "schemas/json/config.json",
    },
    SchemaName {
        name: "model",
        files: "schemas/*.yaml",
        json_file: "schemas/json/model.json",
    },
    SchemaName {
        name: "stepdef",
        files: "stepdefs/*.yaml (actuators, watchers, policies)",
        json_file: "schemas/json/stepdef.json",
    },
    SchemaName {
        name: "objects",
        files: "objects files (`apply -f`)",
        json_file: "schemas/json/objects.json",
    },
];

pub fn names() -> Vec<&'static str> {
    SCHEMAS.iter().map(|s| s.name).collect()
}

/// The generic schema called `name`, or `None` for an unknown name.
pub fn generate(name: &str) -> Option<Value> {
    let schema = match name {
        "config" => root::<Config>(),
        "model" => root::<SchemaFile>(),
        "stepdef" => root::<AnyStepdef>(),
        "objects" => objects_generic(),
        _ => return None,
    };
    Some(schema)
}

/// The text `stepsync schema` prints and `schemas/json/` holds: pretty JSON, one final newline.
pub fn to_text(schema: &Value) -> String {
    // Serializing a `Value` cannot fail: every map key is already a string.
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Draft-07 rather than schemars' default 2020-12: it is the draft every YAML editor
/// (yaml-language-server, JetBrains) fully understands.
fn settings() -> SchemaSettings {
    SchemaSettings::draft07()
}

fn root<T: JsonSchema>() -> Value {
    let schema = settings().into_generator().into_root_schema_for::<T>();
    match schema.to_value() {
        Value::Object(map) => Value::Object(heading_first(map)),
        other => other,
    }
}

/// `$schema`, `title` and `description` first and `definitions` last, as a reader of the
/// file expects; schemars appends the first three after the properties.
fn heading_first(mut map: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for key in ["$schema", "title", "description"] {
        if let Some(v) = map.remove(key) {
            out.insert(key.to_owned(), v);
        }
    }
    let definitions = map.remove("definitions");
    out.extend(map);
    if let Some(d) = definitions {
        out.insert("definitions".to_owned(), d);
    }
    out
}

// ---- durations ----------------------------------------------------------------------------

/// The units `humantime` (behind [`Dur::parse`]) accepts, longest spelling first.
const DURATION_UNITS: &str = "nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|\
                              minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|\
                              wks|wk|w|months|month|M|years|year|yrs|yr|y";

/// What `Dur::parse` accepts: `0`, or numbers with units, possibly several (`1h 30m`).
pub fn duration_pattern() -> String {
    let term = format!("[0-9]+(\\.[0-9]+)?\\s*({DURATION_UNITS})");
    format!("^\\s*(0|{term}(\\s*{term})*)\\s*$")
}

impl JsonSchema for crate::duration::Size {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }

    fn schema_id() -> Cow<'static, str> {
        "stepsync::duration::Size".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size: `8MiB`, `512KiB`, `1MB`, or a number of bytes.",
            "anyOf": [
                {"type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*([kKmMgGtT][iI]?)?[bB]?\\s*$"},
                {"type": "integer", "minimum": 0}
            ]
        })
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn schema_id() -> Cow<'static, str> {
        "stepsync::duration::Dur".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: `500ms`, `10s`, `5m`, `1h`, `1h 30m`; `0` is zero.",
            "anyOf": [
                {
                    "type": "string",
                    "pattern": duration_pattern(),
                    // Read by VS Code's YAML and JSON support instead of the bare regex.
                    "patternErrorMessage": "write a duration like `500ms`, `10s`, `5m` or `1h`"
                },
                {"const": 0}
            ],
            "examples": ["10s", "500ms", "5m", "1h"]
        })
    }
}

// ---- stepdefs -----------------------------------------------------------------------------

/// The step kinds a stepdef file may hold, with the format of each.
fn step_kinds(generator: &mut SchemaGenerator) -> [(&'static str, Schema, &'static str); 5] {
    [
        (
            "Actuator",
            generator.subschema_for::<StepdefSpec>(),
            "syncs the objects of a model with their backend",
        ),
        (
            "Watcher",
            generator.subschema_for::<WatcherSpec>(),
            "makes the objects of a model react when related objects change",
        ),
        (
            "Policy",
            generator.subschema_for::<PolicySpec>(),
            "keeps objects of other models from each object of a model",
        ),
        (
            "PullStep",
            generator.subschema_for::<PullStepSpec>(),
            "polls a backend on a timer and writes what it lists into the data model",
        ),
        (
            "EventStep",
            generator.subschema_for::<EventStepSpec>(),
            "writes each message of an event bus topic into the data model",
        ),
    ]
}

/// A file of `stepdefs/`: one schema for every kind, chosen by `kind`, as the loader reads
/// `kind` first. One schema rather than one per kind because editors map schemas to files
/// by path (`stepdefs/*.yaml`), and a file's `$schema` line should not change with its kind.
/// `if`/`then` rather than `oneOf`: an editor then reports the errors of the kind written,
/// not those of every kind.
pub struct AnyStepdef;

impl JsonSchema for AnyStepdef {
    fn schema_name() -> Cow<'static, str> {
        "Stepdef".into()
    }

    fn schema_id() -> Cow<'static, str> {
        "stepsync::stepdef::AnyStepdef".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let kinds = step_kinds(generator);
        let choices: Vec<Value> = kinds
            .iter()
            .map(|(kind, _, what)| json!({"const": kind, "description": what}))
            .collect();
        let branches: Vec<Value> = kinds
            .into_iter()
            .map(|(kind, schema, _)| {
                json!({
                    // `required`: without a `kind`, no branch applies and only the missing
                    // `kind` is reported.
                    "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                    "then": schema
                })
            })
            .collect();
        json_schema!({
            "title": "stepsync step definition (stepdefs/*.yaml)",
            "description": "A step definition: an actuator (`kind: Actuator`), a watcher \
                            (`kind: Watcher`) or a model policy (`kind: Policy`). Strings in \
                            attributes, payloads, feedback and policy fields are Jinja2 templates.",
            "type": "object",
            "required": ["kind"],
            "properties": {
                "kind": {"description": "The step kind.", "type": "string", "oneOf": choices}
            },
            "allOf": branches
        })
    }
}

/// An HTTP method: token characters (RFC 9110), what `reqwest::Method::from_bytes` accepts.
pub const HTTP_METHOD: &str = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
/// The methods editors offer.
pub const HTTP_METHODS: [&str; 6] = ["GET", "PUT", "POST", "PATCH", "DELETE", "HEAD"];

/// Refuses the reserved template variable names as keys of a map of variables. As properties
/// of their own rather than a `propertyNames` rule, so editors say which key is refused.
pub fn forbid_reserved(schema: &mut Schema) {
    let refused: Map<String, Value> = crate::template::RESERVED
        .iter()
        .map(|name| ((*name).to_owned(), Value::Bool(false)))
        .collect();
    schema.insert("properties".into(), Value::Object(refused));
}

// ---- the model schema ---------------------------------------------------------------------

/// The field types and what they hold, in the spec's order.
const FIELD_TYPES: &[(&str, &str)] = &[
    ("string", "a string"),
    ("int", "an integer"),
    ("float", "a number"),
    ("bool", "true or false"),
    ("list", "a list of anything"),
    ("map", "a map of anything"),
    ("json", "any value"),
    ("ref", "one object of the model `to`, written as its key"),
    (
        "refs",
        "a list of objects of the model `to`, written as their keys",
    ),
];

fn field_type_choices(with_refs: bool) -> Vec<Value> {
    FIELD_TYPES
        .iter()
        .filter(|(name, _)| with_refs || !name.starts_with("ref"))
        .map(|(name, what)| json!({"const": name, "description": what}))
        .collect()
}

/// `type:` of a field in its long form: every type.
pub fn field_type_long(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "The field's type.",
        "type": "string",
        "oneOf": field_type_choices(true)
    })
}

/// A model field: `name: string` (shorthand) or `name: {type: string, required: true, ...}`.
///
/// Stands in for `FieldSpec`, whose hand-written deserializer accepts both forms.
pub struct FieldSpecSchema;

impl JsonSchema for FieldSpecSchema {
    fn schema_name() -> Cow<'static, str> {
        "FieldSpec".into()
    }

    fn schema_id() -> Cow<'static, str> {
        "stepsync::model::schema::FieldSpec".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let long = generator.subschema_for::<FieldSpecLong>();
        json_schema!({
            "description": "A field: a type name (`string`), or a map with `type:` and options.",
            "anyOf": [
                {
                    "description": "The shorthand: just the type (`ref` and `refs` need the long form, for `to`).",
                    "type": "string",
                    "oneOf": field_type_choices(false)
                },
                long
            ]
        })
    }
}

// ---- objects files ------------------------------------------------------------------------

/// Model names as `schemas/*.yaml` allows them.
const MODEL_NAME_PATTERN: &str = "^[A-Za-z][A-Za-z0-9_]*$";

const OBJECTS_DESCRIPTION: &str = "Desired state for `stepsync apply -f`: model name -> list of \
objects, each a map of field name -> value. Refs name the target's key. Several YAML documents \
per file are allowed.";

fn draft07() -> Value {
    settings()
        .meta_schema
        .map_or(Value::Null, |s| Value::String(s.into_owned()))
}

/// The schema of any objects file: it cannot know the models, so it checks the shape only.
fn objects_generic() -> Value {
    json!({
        "$schema": draft07(),
        "title": "stepsync objects file",
        "description": OBJECTS_DESCRIPTION,
        // An empty document is allowed and holds nothing.
        "type": ["object", "null"],
        "propertyNames": {
            "pattern": MODEL_NAME_PATTERN,
            "patternErrorMessage": "a model name starts with a letter and holds only letters, digits and `_`"
        },
        "additionalProperties": {
            "description": "The objects of this model.",
            "type": ["array", "null"],
            "items": {
                "description": "One object: field name -> value.",
                "type": "object"
            }
        }
    })
}

/// `stepsync schema objects --service`: the objects files of the service in `dir`, with its
/// models, their fields, types and required fields.
pub fn objects_for_service(dir: &Path) -> Result<Value> {
    let config = Config::load(dir)?;
    let schema = crate::model::Schema::load_dir(&in_dir(dir, Path::new(SCHEMAS_DIR)))?;
    Ok(objects_for(&config.name, schema.models.values()))
}

/// The objects-file schema of a service whose models are `models`.
pub fn objects_for<'a>(service: &str, models: impl IntoIterator<Item = &'a Model>) -> Value {
    let mut properties = Map::new();
    let mut definitions = Map::new();
    for model in models {
        properties.insert(
            model.name.clone(),
            json!({
                "description": format!("{} objects (key: `{}`).", model.name, model.key),
                "type": ["array", "null"],
                "items": {"$ref": format!("#/definitions/{}", model.name)}
            }),
        );
        definitions.insert(model.name.clone(), object_schema(model));
    }
    json!({
        "$schema": draft07(),
        "title": format!("stepsync objects file of the {service} service"),
        "description": OBJECTS_DESCRIPTION,
        "type": ["object", "null"],
        "properties": properties,
        "additionalProperties": false,
        "definitions": definitions
    })
}

/// One object of `model`: its declarative fields (feedback fields are the actuator's to
/// write, so they are refused like unknown ones).
fn object_schema(model: &Model) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for f in model.fields.values().filter(|f| !f.feedback) {
        // Loading fills a missing field from its default, so only fields without one must
        // be written; the key must be there like a required field.
        let must = (f.required || f.name == model.key) && f.default.is_none();
        if must {
            required.push(Value::String(f.name.clone()));
        }
        let (mut schema, what) = value_schema(&f.ty);
        if let Some(allowed) = &f.allowed {
            schema.insert("enum".into(), Value::Array(allowed.clone()));
        }
        // An explicit null is the same as leaving the field out, which only optional fields
        // may do.
        if !must {
            allow_null(&mut schema);
        }
        let mut description = what;
        if f.required {
            description.push_str(", required");
        }
        if f.name == model.key {
            description.push_str(", the object's key");
        }
        schema.insert("description".into(), Value::String(description));
        if let Some(d) = &f.default {
            schema.insert("default".into(), d.clone());
        }
        properties.insert(f.name.clone(), Value::Object(schema));
    }
    json!({
        "description": format!("A {} object.", model.name),
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false
    })
}

/// What a value of type `ty` looks like in an objects file, and a few words on it.
fn value_schema(ty: &FieldType) -> (Map<String, Value>, String) {
    // A key is written as a string or an integer (see `ref_key`).
    let key = json!(["string", "integer"]);
    let (schema, what) = match ty {
        FieldType::String => (json!({"type": "string"}), "string".to_owned()),
        FieldType::Int => (json!({"type": "integer"}), "int".to_owned()),
        FieldType::Float => (json!({"type": "number"}), "float".to_owned()),
        FieldType::Bool => (json!({"type": "boolean"}), "bool".to_owned()),
        FieldType::List => (json!({"type": "array"}), "list".to_owned()),
        FieldType::Map => (json!({"type": "object"}), "map".to_owned()),
        FieldType::Json => (json!({}), "json: any value".to_owned()),
        FieldType::Ref(to) => (json!({"type": key}), format!("ref: the key of a {to}")),
        FieldType::Refs(to) => (
            json!({"type": "array", "items": {"type": key}}),
            format!("refs: a list of {to} keys"),
        ),
    };
    match schema {
        Value::Object(m) => (m, what),
        // Every arm above builds an object.
        _ => (Map::new(), what),
    }
}

/// Lets `schema` also accept null.
fn allow_null(schema: &mut Map<String, Value>) {
    match schema.get_mut("type") {
        Some(Value::String(t)) => {
            let t = std::mem::take(t);
            schema.insert("type".into(), json!([t, "null"]));
        }
        Some(Value::Array(types)) => types.push(Value::from("null")),
        // No `type`: anything goes already, null included.
        _ => {}
    }
    if let Some(Value::Array(values)) = schema.get_mut("enum") {
        values.push(Value::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_pattern_agrees_with_the_parser() {
        let re = regex::Regex::new(&duration_pattern()).unwrap();
        for ok in [
            "0", "500ms", "10s", "5m", "1h", "1h 30m", "1h30m", "2days", "1.5s", " 10s ", "3 min",
        ] {
            assert!(Dur::parse(ok).is_ok(), "{ok}");
            assert!(re.is_match(ok), "pattern refuses {ok:?}");
        }
        for bad in ["10", "ten", "", "s", "10 parsecs", "-1s", "1.s", "10s,"] {
            assert!(Dur::parse(bad).is_err(), "{bad}");
            assert!(!re.is_match(bad), "pattern accepts {bad:?}");
        }
    }

    #[test]
    fn every_name_generates_a_schema() {
        for name in names() {
            let s = generate(name).unwrap();
            assert!(s.get("$schema").is_some(), "{name}");
        }
        assert!(generate("configg").is_none());
    }
}
