//! The model schema (`schemas/*.yaml`, SPEC §4.1): typed models parsed once and checked.

use std::fmt;
use std::path::Path;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::diag::{Diagnostic, Diagnostics, Origin, expected_hint};
use crate::yaml::{Node, Source, Spanned};

/// The type of a model field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    String,
    Int,
    Float,
    Bool,
    List,
    Map,
    Json,
    /// One object of the named model, stored as its key.
    Ref(String),
    /// A list of objects of the named model, stored as their keys.
    Refs(String),
}

const TYPE_NAMES: &[&str] = &[
    "string", "int", "float", "bool", "list", "map", "json", "ref", "refs",
];

impl FieldType {
    pub fn name(&self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::Bool => "bool",
            FieldType::List => "list",
            FieldType::Map => "map",
            FieldType::Json => "json",
            FieldType::Ref(_) => "ref",
            FieldType::Refs(_) => "refs",
        }
    }

    /// The model a ref/refs field points at.
    pub fn target(&self) -> Option<&str> {
        match self {
            FieldType::Ref(t) | FieldType::Refs(t) => Some(t),
            _ => None,
        }
    }

    fn is_scalar(&self) -> bool {
        matches!(
            self,
            FieldType::String | FieldType::Int | FieldType::Float | FieldType::Bool
        )
    }

    /// Checks a YAML value against this type and gives its stored JSON form
    /// (refs are stored as the target's key, as a string).
    pub fn check(&self, node: &Node) -> Result<Value, String> {
        let mismatch = || format!("expected {}, found {}", self.describe(), node.kind());
        match (self, node) {
            (FieldType::String, Node::Str(s)) => Ok(Value::String(s.clone())),
            (FieldType::Int, Node::Int(i)) => Ok(Value::from(*i)),
            // The parser reads an integer beyond 64 bits as a float.
            (FieldType::Int, Node::Float(f)) if f.fract() == 0.0 && f.abs() >= 9.2e18 => {
                Err("integer out of range (64-bit signed)".to_owned())
            }
            (FieldType::Float, Node::Int(i)) => Ok(Value::from(*i as f64)),
            (FieldType::Float, Node::Float(f)) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .ok_or_else(|| format!("{f} is not a finite number")),
            (FieldType::Bool, Node::Bool(b)) => Ok(Value::Bool(*b)),
            (FieldType::List, Node::Seq(_)) | (FieldType::Map, Node::Map(_)) => Ok(node.to_json()),
            (FieldType::Json, n) => Ok(n.to_json()),
            (FieldType::Ref(_), n) => ref_key(n).map(Value::String).ok_or_else(mismatch),
            (FieldType::Refs(_), Node::Seq(items)) => items
                .iter()
                .map(|i| ref_key(&i.value).map(Value::String).ok_or_else(mismatch))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            _ => Err(mismatch()),
        }
    }

    /// [`FieldType::check`] for a value a template rendered (a policy's `ensure`): a
    /// template's text is read as the type the field wants (`"1500"` for an int, `"yes"`
    /// for a bool), as Ansible reads rendered values.
    pub fn check_rendered(&self, v: &Value) -> Result<Value, String> {
        let kind = match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "list",
            Value::Object(_) => "map",
        };
        let mismatch = || format!("expected {}, found {kind}", self.describe());
        let key = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            _ => None,
        };
        match (self, v) {
            (FieldType::String, Value::String(_)) => Ok(v.clone()),
            (FieldType::String, Value::Number(n)) => Ok(Value::String(n.to_string())),
            (FieldType::String, Value::Bool(b)) => Ok(Value::String(b.to_string())),
            (FieldType::Int, Value::Number(n)) => n.as_i64().map(Value::from).ok_or_else(mismatch),
            (FieldType::Int, Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| mismatch()),
            (FieldType::Float, Value::Number(n)) => n
                .as_f64()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(mismatch),
            (FieldType::Float, Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(mismatch),
            (FieldType::Bool, Value::Bool(_)) => Ok(v.clone()),
            (FieldType::Bool, Value::String(s)) => crate::boolean::parse(s)
                .map(Value::Bool)
                .ok_or_else(mismatch),
            (FieldType::List, Value::Array(_)) | (FieldType::Map, Value::Object(_)) => {
                Ok(v.clone())
            }
            (FieldType::Json, _) => Ok(v.clone()),
            (FieldType::Ref(_), _) => key(v).map(Value::String).ok_or_else(mismatch),
            (FieldType::Refs(_), Value::Array(items)) => items
                .iter()
                .map(|i| key(i).map(Value::String).ok_or_else(mismatch))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            _ => Err(mismatch()),
        }
    }

    fn describe(&self) -> String {
        match self {
            FieldType::Ref(t) => format!("the key of a {t} (string)"),
            FieldType::Refs(t) => format!("a list of {t} keys"),
            other => other.name().to_owned(),
        }
    }
}

/// A key written in YAML: strings as they are, integers in decimal.
pub fn ref_key(node: &Node) -> Option<String> {
    match node {
        Node::Str(s) => Some(s.clone()),
        Node::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub ty: FieldType,
    pub required: bool,
    pub default: Option<Value>,
    pub allowed: Option<Vec<Value>>,
    pub feedback: bool,
    pub origin: Origin,
}

/// An explicit dependency (`xos_links`): `self.via == to.field`.
#[derive(Debug, Clone)]
pub struct Link {
    pub to: String,
    pub via: String,
    pub field: String,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub key: String,
    pub fields: IndexMap<String, Field>,
    pub links: Vec<Link>,
    pub origin: Origin,
}

impl Model {
    pub fn field_names(&self) -> Vec<&str> {
        self.fields.keys().map(String::as_str).collect()
    }
}

// ---- the file format ----------------------------------------------------------------------

// The derived JSON Schemas (`stepsync schema model`, see `crate::json_schema`) describe the
// values inside the `Spanned` wrappers, which carry positions only.

/// A stepsync data model file: typed models (like tables) whose objects (rows) the
/// actuators keep in step with their backends.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "stepsync data model (schemas/*.yaml)")]
pub(crate) struct SchemaFile {
    /// Model name -> model. A name starts with a letter and holds letters, digits and `_`.
    #[schemars(
        with = "IndexMap<String, ModelSpec>",
        extend("propertyNames" = {
            "pattern": "^[A-Za-z][A-Za-z0-9_]*$",
            "patternErrorMessage": "a model name starts with a letter and holds only letters, digits and `_`"
        })
    )]
    models: IndexMap<Spanned<String>, Spanned<ModelSpec>>,
}

/// A model: its fields and explicit dependencies.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Model")]
struct ModelSpec {
    /// The field that names an object (a declarative string or int field); default `name`.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("default" = "name"))]
    key: Option<Spanned<String>>,
    /// Field name -> a type name (`login_base: string`) or `{type: ..., required, default,
    /// enum, feedback, to}`.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, crate::json_schema::FieldSpecSchema>")]
    fields: IndexMap<Spanned<String>, Spanned<FieldSpec>>,
    /// Explicit dependencies (xos_links): this model's `via` field equals `to`'s `field`.
    #[serde(default)]
    #[schemars(with = "Vec<LinkSpec>")]
    links: Vec<Spanned<LinkSpec>>,
}

/// An explicit dependency: `self.via == to.field`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Link")]
struct LinkSpec {
    /// The model depended on.
    #[schemars(with = "String")]
    to: Spanned<String>,
    /// The field of this model holding the value.
    #[schemars(with = "String")]
    via: Spanned<String>,
    /// The field of `to` it must equal.
    #[schemars(with = "String")]
    field: Spanned<String>,
}

/// `name: string` or `name: {type: string, required: true, ...}`.
struct FieldSpec {
    ty: Spanned<String>,
    to: Option<Spanned<String>>,
    required: bool,
    default: Option<Spanned<Node>>,
    allowed: Option<Vec<Spanned<Node>>>,
    feedback: bool,
}

/// A field in its long form: `type` and options.
// Beyond the types, the JSON Schema states the checks of `check_model` that a schema can
// express, so editors flag them while typing: `to` with (and only with) `ref`/`refs`, `enum`
// on scalars only, and a feedback field that is not required.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "Field",
    extend("allOf" = [
        {
            "if": {"properties": {"type": {"enum": ["ref", "refs"]}}, "required": ["type"]},
            "then": {"required": ["to"]},
            "else": {"properties": {"to": false}}
        },
        {
            "if": {"properties": {"type": {"enum": ["list", "map", "json", "ref", "refs"]}}, "required": ["type"]},
            "then": {"properties": {"enum": false}}
        },
        {
            "if": {"properties": {"feedback": {"const": true}}, "required": ["feedback"]},
            "then": {"properties": {"required": {
                "const": false,
                "errorMessage": "a feedback field cannot be required: only the actuator writes it"
            }}}
        }
    ])
)]
pub(crate) struct FieldSpecLong {
    #[serde(rename = "type")]
    #[schemars(schema_with = "crate::json_schema::field_type_long")]
    ty: Spanned<String>,
    /// The model a `ref`/`refs` field points at.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    to: Option<Spanned<String>>,
    /// Every object must give a value (unless there is a `default`).
    #[serde(default)]
    required: bool,
    /// The value of objects that leave the field out; it must fit the type.
    #[serde(default)]
    #[schemars(with = "serde_json::Value")]
    default: Option<Spanned<Node>>,
    /// The allowed values (scalar fields only).
    #[serde(default, rename = "enum")]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    allowed: Option<Vec<Spanned<Node>>>,
    /// Feedback state: written only by the model's actuator, never by objects files.
    #[serde(default)]
    feedback: bool,
}

impl<'de> Deserialize<'de> for FieldSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a type name such as `string`, or a map with `type:`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldSpec, E> {
                Ok(FieldSpec {
                    ty: Spanned::new(
                        v.to_owned(),
                        serde_saphyr::Location::UNKNOWN,
                        serde_saphyr::Location::UNKNOWN,
                    ),
                    to: None,
                    required: false,
                    default: None,
                    allowed: None,
                    feedback: false,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldSpec, A::Error> {
                let long = FieldSpecLong::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(FieldSpec {
                    ty: long.ty,
                    to: long.to,
                    required: long.required,
                    default: long.default,
                    allowed: long.allowed,
                    feedback: long.feedback,
                })
            }
        }
        d.deserialize_any(V)
    }
}

// ---- loading ------------------------------------------------------------------------------

/// All models of a service, in the order their files define them.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub models: IndexMap<String, Model>,
}

impl Schema {
    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.get(name)
    }

    pub fn model_names(&self) -> Vec<&str> {
        self.models.keys().map(String::as_str).collect()
    }

    /// Reads every `*.yaml`/`*.yml` of `dir` (sorted), reporting every problem found.
    pub fn load_dir(dir: &Path) -> Result<Schema, Diagnostics> {
        let mut sources = Vec::new();
        let mut diags = Diagnostics::default();
        if dir.is_dir() {
            match yaml_files(dir) {
                Ok(files) => {
                    for f in files {
                        match Source::read(&f) {
                            Ok(s) => sources.push(s),
                            Err(d) => diags.push(d),
                        }
                    }
                }
                Err(e) => diags.push(Diagnostic::in_file(format!("cannot list: {e}"), dir)),
            }
        }
        let schema = Schema::from_sources(&sources);
        match schema {
            Ok(s) if !diags.has_errors() => Ok(s),
            Ok(_) => Err(diags),
            Err(mut more) => {
                diags.0.append(&mut more.0);
                Err(diags)
            }
        }
    }

    pub fn from_sources(sources: &[Source]) -> Result<Schema, Diagnostics> {
        let mut diags = Diagnostics::default();
        let mut parsed = Vec::new();
        for src in sources {
            if src.is_blank() {
                continue;
            }
            match src.parse::<SchemaFile>() {
                Ok(f) => parsed.push((src, f)),
                Err(d) => diags.push(d),
            }
        }
        // Model names first, so refs can point at models defined in a later file.
        let mut schema = Schema::default();
        for (src, file) in &parsed {
            for (name, spec) in &file.models {
                if let Some(prev) = schema.models.get(&name.value) {
                    diags.push(src.diag_at(
                        format!(
                            "model `{}` is defined twice (first at {})",
                            name.value,
                            prev.origin.short()
                        ),
                        name,
                    ));
                    continue;
                }
                if !is_model_name(&name.value) {
                    diags.push(src.diag_at(
                        format!("invalid model name `{}`", name.value),
                        name,
                    ).with_hint("model names start with a letter and hold only letters, digits and `_`"));
                    continue;
                }
                let key = spec
                    .value
                    .key
                    .as_ref()
                    .map_or_else(|| "name".to_owned(), |k| k.value.clone());
                schema.models.insert(
                    name.value.clone(),
                    Model {
                        name: name.value.clone(),
                        key,
                        fields: IndexMap::new(),
                        links: Vec::new(),
                        origin: src.origin(name),
                    },
                );
            }
        }
        let names: Vec<String> = schema.models.keys().cloned().collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        for (src, file) in &parsed {
            for (name, spec) in &file.models {
                let Some(model) = schema.models.get(&name.value) else {
                    continue;
                };
                if model.origin.file != src.path || model.origin.pos != src.origin(name).pos {
                    continue; // the duplicate reported above
                }
                let (fields, links) = check_model(src, name, &spec.value, &name_refs, &mut diags);
                if let Some(m) = schema.models.get_mut(&name.value) {
                    m.fields = fields;
                    m.links = links;
                }
            }
        }
        // Links name fields of other models, so they are checked once every model is known.
        for model in schema.models.values() {
            for link in &model.links {
                if let Some(target) = schema.models.get(&link.to)
                    && !target.fields.contains_key(&link.field)
                {
                    diags.push(
                        link.origin
                            .diag(format!(
                                "link field `{}` is not a field of {}",
                                link.field, link.to
                            ))
                            .with_hint(expected_hint(&link.field, &target.field_names())),
                    );
                }
            }
        }
        diags.into_result().map(|()| schema)
    }
}

fn is_model_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `*.yaml` and `*.yml` files directly in `dir`, sorted so loading is deterministic.
pub fn yaml_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let ext = path.extension().and_then(|e| e.to_str());
        if path.is_file() && matches!(ext, Some("yaml" | "yml")) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn check_model(
    src: &Source,
    name: &Spanned<String>,
    spec: &ModelSpec,
    models: &[&str],
    diags: &mut Diagnostics,
) -> (IndexMap<String, Field>, Vec<Link>) {
    let mut fields = IndexMap::new();
    // Fields whose declaration failed, so the key check does not report them again.
    let mut broken: Vec<&str> = Vec::new();
    for (fname, fspec) in &spec.fields {
        broken.push(&fname.value);
        let f = &fspec.value;
        // The shorthand form has no position of its own: point at the field name.
        let ty_origin = if crate::yaml::pos(&f.ty).is_some() {
            src.origin(&f.ty)
        } else {
            src.origin(fname)
        };
        let ty = match f.ty.value.as_str() {
            "string" => FieldType::String,
            "int" => FieldType::Int,
            "float" => FieldType::Float,
            "bool" => FieldType::Bool,
            "list" => FieldType::List,
            "map" => FieldType::Map,
            "json" => FieldType::Json,
            t @ ("ref" | "refs") => match &f.to {
                None => {
                    diags.push(ty_origin.diag(format!("a `{t}` field needs `to: <Model>`")));
                    continue;
                }
                Some(to) if !models.contains(&to.value.as_str()) => {
                    diags.push(
                        src.diag_at(format!("unknown model `{}`", to.value), to)
                            .with_hint(expected_hint(&to.value, models)),
                    );
                    continue;
                }
                Some(to) if t == "ref" => FieldType::Ref(to.value.clone()),
                Some(to) => FieldType::Refs(to.value.clone()),
            },
            other => {
                diags.push(
                    ty_origin
                        .diag(format!("unknown field type `{other}`"))
                        .with_hint(expected_hint(other, TYPE_NAMES)),
                );
                continue;
            }
        };
        if let (Some(to), None) = (&f.to, ty.target()) {
            diags.push(src.diag_at(
                format!(
                    "`to` only applies to ref and refs fields, not {}",
                    ty.name()
                ),
                to,
            ));
        }
        if f.required && f.feedback {
            diags.push(src.diag_at(
                format!(
                    "feedback field `{}` cannot be required: only the actuator writes it",
                    fname.value
                ),
                fname,
            ));
        }
        let default = f.default.as_ref().and_then(|d| match ty.check(&d.value) {
            Ok(v) => Some(v),
            Err(e) => {
                diags.push(src.diag_at(format!("default does not fit the field: {e}"), d));
                None
            }
        });
        let allowed = f.allowed.as_ref().map(|values| {
            if !ty.is_scalar() {
                diags.push(src.diag_at(
                    format!("`enum` only applies to scalar fields, not {}", ty.name()),
                    fname,
                ));
                // Its values cannot fit such a field either; one error says it.
                return Vec::new();
            }
            values
                .iter()
                .filter_map(|v| match ty.check(&v.value) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        diags.push(
                            src.diag_at(format!("enum value does not fit the field: {e}"), v),
                        );
                        None
                    }
                })
                .collect::<Vec<_>>()
        });
        if let (Some(d), Some(allowed), Some(dspan)) = (&default, &allowed, &f.default)
            && !allowed.contains(d)
        {
            diags.push(src.diag_at(format!("default {d} is not one of the enum values"), dspan));
        }
        broken.pop();
        fields.insert(
            fname.value.clone(),
            Field {
                name: fname.value.clone(),
                ty,
                required: f.required,
                default,
                allowed,
                feedback: f.feedback,
                origin: src.origin(fname),
            },
        );
    }
    let key = spec.key.as_ref().map_or("name", |k| k.value.as_str());
    let key_at = |msg: String| match &spec.key {
        Some(k) => src.diag_at(msg, k),
        None => src.diag_at(msg, name),
    };
    match fields.get(key) {
        None if broken.contains(&key) => {}
        None => {
            let names: Vec<&str> = fields.keys().map(String::as_str).collect();
            diags.push(
                key_at(format!(
                    "key field `{key}` is not a field of {}",
                    name.value
                ))
                .with_hint(if spec.key.is_none() {
                    "the key defaults to `name`: add a `name` field or set `key:`".to_owned()
                } else {
                    expected_hint(key, &names)
                }),
            );
        }
        Some(f) if !matches!(f.ty, FieldType::String | FieldType::Int) || f.feedback => {
            diags.push(key_at(format!(
                "key field `{key}` must be a declarative string or int field"
            )));
        }
        Some(_) => {}
    }
    let mut links = Vec::new();
    for l in &spec.links {
        let l_spec = &l.value;
        if !models.contains(&l_spec.to.value.as_str()) {
            diags.push(
                src.diag_at(format!("unknown model `{}`", l_spec.to.value), &l_spec.to)
                    .with_hint(expected_hint(&l_spec.to.value, models)),
            );
            continue;
        }
        if !fields.contains_key(&l_spec.via.value) {
            let names: Vec<&str> = fields.keys().map(String::as_str).collect();
            diags.push(
                src.diag_at(
                    format!(
                        "link `via` field `{}` is not a field of {}",
                        l_spec.via.value, name.value
                    ),
                    &l_spec.via,
                )
                .with_hint(expected_hint(&l_spec.via.value, &names)),
            );
            continue;
        }
        links.push(Link {
            to: l_spec.to.value.clone(),
            via: l_spec.via.value.clone(),
            field: l_spec.field.value.clone(),
            origin: src.origin(&l_spec.field),
        });
    }
    (fields, links)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Pos;

    fn load(text: &str) -> Result<Schema, Diagnostics> {
        Schema::from_sources(&[Source::from_text("schemas/m.yaml", text)])
    }

    const SPEC_EXAMPLE: &str = "models:
  Site:
    key: name
    fields:
      name: {type: string, required: true}
      login_base: string
  Slice:
    fields:
      name: string
      site: {type: ref, to: Site, required: true}
      max_instances: {type: int, default: 10}
  Node:
    fields:
      name: string
  Port:
    fields:
      name: string
      number: int
  Instance:
    fields:
      name: string
      slice: {type: ref, to: Slice}
      ports: {type: refs, to: Port}
      flavor: {type: string, enum: [small, large]}
      labels: {type: map}
      instance_id: {type: string, feedback: true}
      node_name: string
    links:
      - {to: Node, via: node_name, field: name}
";

    #[test]
    fn spec_example_loads() {
        let s = load(SPEC_EXAMPLE).unwrap();
        assert_eq!(
            s.model_names(),
            ["Site", "Slice", "Node", "Port", "Instance"]
        );
        let inst = s.model("Instance").unwrap();
        assert_eq!(inst.fields["ports"].ty, FieldType::Refs("Port".into()));
        assert!(inst.fields["instance_id"].feedback);
        assert_eq!(inst.links[0].to, "Node");
        assert_eq!(
            s.model("Slice").unwrap().fields["max_instances"].default,
            Some(Value::from(10))
        );
        assert_eq!(
            inst.fields["flavor"].allowed,
            Some(vec![Value::from("small"), Value::from("large")])
        );
    }

    #[test]
    fn reports_every_problem_with_positions() {
        let err = load(
            "models:\n  A:\n    fields:\n      name: strng\n      b: {type: ref, to: Bee}\n      c: {type: int, default: x}\n",
        )
        .unwrap_err();
        let msgs: Vec<_> = err.0.iter().map(|d| (d.message.clone(), d.pos)).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].0.contains("unknown field type `strng`"));
        assert_eq!(err.0[0].hint.as_deref(), Some("did you mean `string`?"));
        assert_eq!(msgs[0].1, Some(Pos { line: 4, col: 7 }));
        assert!(msgs[1].0.contains("unknown model `Bee`"));
        assert_eq!(msgs[1].1, Some(Pos { line: 5, col: 26 }));
        assert!(msgs[2].0.contains("default does not fit"));
    }

    #[test]
    fn missing_key_field_is_an_error() {
        let err = load("models:\n  A:\n    fields:\n      id: int\n").unwrap_err();
        assert!(err.0[0].message.contains("key field `name`"));
    }

    #[test]
    fn int_key_is_allowed() {
        let s = load("models:\n  A:\n    key: id\n    fields:\n      id: int\n").unwrap();
        assert_eq!(s.model("A").unwrap().key, "id");
    }
}
