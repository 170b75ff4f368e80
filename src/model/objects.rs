//! Objects files (`apply -f`, SPEC §4.4): desired state checked against the schema, every
//! problem reported with its file, line and column.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::diag::{Diagnostics, Origin, expected_hint};
use crate::model::schema::{FieldType, Schema, ref_key};
use crate::yaml::{Node, Source, Spanned};

/// One object as an objects file describes it, validated and with defaults applied.
#[derive(Debug, Clone)]
pub struct ObjectSpec {
    pub model: String,
    pub key: String,
    /// Declarative fields in schema order; refs hold the target's key.
    pub fields: Map<String, Value>,
    /// Every ref the object makes, for the dangling-ref check.
    pub refs: Vec<RefUse>,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct RefUse {
    pub field: String,
    pub to: String,
    pub key: String,
    pub origin: Origin,
}

/// Reads every document of `src`; problems go to `diags`, valid objects are returned.
pub fn load_objects(src: &Source, schema: &Schema, diags: &mut Diagnostics) -> Vec<ObjectSpec> {
    let docs = match src.documents() {
        Ok(d) => d,
        Err(d) => {
            diags.push(d);
            return Vec::new();
        }
    };
    let models = schema.model_names();
    let mut out = Vec::new();
    for doc in &docs {
        let entries = match &doc.value {
            Node::Null => continue,
            Node::Map(entries) => entries,
            other => {
                diags.push(src.diag_at(
                    format!(
                        "expected a map of model name to a list of objects, found {}",
                        other.kind()
                    ),
                    doc,
                ));
                continue;
            }
        };
        for (model_name, list) in entries {
            if schema.model(&model_name.value).is_none() {
                diags.push(
                    src.diag_at(format!("unknown model `{}`", model_name.value), model_name)
                        .with_hint(expected_hint(&model_name.value, &models)),
                );
                continue;
            }
            let items = match &list.value {
                Node::Seq(items) => items,
                Node::Null => continue,
                other => {
                    diags.push(src.diag_at(
                        format!(
                            "expected a list of {} objects, found {}",
                            model_name.value,
                            other.kind()
                        ),
                        list,
                    ));
                    continue;
                }
            };
            for item in items {
                if let Some(obj) = check_object(src, schema, &model_name.value, item, diags) {
                    out.push(obj);
                }
            }
        }
    }
    out
}

/// Reports every object listed twice (the same model and key) across `specs`, which is
/// ambiguous in one apply: which one wins? Returns each object's first index.
pub fn check_duplicates(
    specs: &[ObjectSpec],
    diags: &mut Diagnostics,
) -> HashMap<(String, String), usize> {
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for (i, s) in specs.iter().enumerate() {
        if let Some(&first) = seen.get(&(s.model.clone(), s.key.clone())) {
            diags.push(s.origin.diag(format!(
                "{}/{} is listed twice (first at {})",
                s.model,
                s.key,
                specs[first].origin.short()
            )));
        } else {
            seen.insert((s.model.clone(), s.key.clone()), i);
        }
    }
    seen
}

fn check_object(
    src: &Source,
    schema: &Schema,
    model_name: &str,
    item: &Spanned<Node>,
    diags: &mut Diagnostics,
) -> Option<ObjectSpec> {
    let model = schema.model(model_name)?;
    let Node::Map(entries) = &item.value else {
        diags.push(src.diag_at(
            format!(
                "expected a {model_name} object (a map of fields), found {}",
                item.value.kind()
            ),
            item,
        ));
        return None;
    };
    let before = diags.0.len();
    let mut given: Map<String, Value> = Map::new();
    let mut refs = Vec::new();
    // Fields given with a bad value, so they are not also reported as missing.
    let mut invalid: Vec<&str> = Vec::new();
    for (name, value) in entries {
        let Some(field) = model.fields.get(&name.value) else {
            diags.push(
                src.diag_at(
                    format!("unknown field `{}` of {model_name}", name.value),
                    name,
                )
                .with_hint(expected_hint(&name.value, &model.field_names())),
            );
            continue;
        };
        if field.feedback {
            diags.push(
                src.diag_at(
                    format!("`{}` is a feedback field of {model_name}", name.value),
                    name,
                )
                .with_hint("feedback fields are written only by the model's actuator"),
            );
            continue;
        }
        if value.value == Node::Null {
            continue; // an explicit null is the same as leaving the field out
        }
        match field.ty.check(&value.value) {
            Ok(v) => {
                if let Some(allowed) = &field.allowed
                    && !allowed.contains(&v)
                {
                    let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
                    diags.push(src.diag_at(
                        format!(
                            "{v} is not an allowed value of `{}`: expected one of {}",
                            name.value,
                            list.join(", ")
                        ),
                        value,
                    ));
                    invalid.push(&name.value);
                    continue;
                }
                collect_refs(src, &field.name, &field.ty, value, &mut refs);
                given.insert(name.value.clone(), v);
            }
            Err(e) => {
                diags.push(src.diag_at(format!("field `{}`: {e}", name.value), value));
                invalid.push(&name.value);
            }
        }
    }
    // Declarative fields in schema order, defaults filled in.
    let mut fields = Map::new();
    for field in model.fields.values().filter(|f| !f.feedback) {
        match given.remove(&field.name).or_else(|| field.default.clone()) {
            Some(v) => {
                fields.insert(field.name.clone(), v);
            }
            None if invalid.contains(&field.name.as_str()) => {}
            None if field.required || field.name == model.key => diags.push(src.diag_at(
                format!(
                    "{model_name} object is missing required field `{}`",
                    field.name
                ),
                item,
            )),
            None => {}
        }
    }
    if diags.0.len() > before {
        return None;
    }
    let key = fields.get(&model.key).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })?;
    Some(ObjectSpec {
        model: model_name.to_owned(),
        key,
        fields,
        refs,
        origin: src.origin(item),
    })
}

fn collect_refs(
    src: &Source,
    field: &str,
    ty: &FieldType,
    value: &Spanned<Node>,
    out: &mut Vec<RefUse>,
) {
    let mut push = |v: &Spanned<Node>, to: &str| {
        if let Some(key) = ref_key(&v.value) {
            out.push(RefUse {
                field: field.to_owned(),
                to: to.to_owned(),
                key,
                origin: src.origin(v),
            });
        }
    };
    match (ty, &value.value) {
        (FieldType::Ref(to), _) => push(value, to),
        (FieldType::Refs(to), Node::Seq(items)) => items.iter().for_each(|i| push(i, to)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Pos;

    fn schema() -> Schema {
        Schema::from_sources(&[Source::from_text(
            "m.yaml",
            "models:\n  Site:\n    fields: {name: string, n: {type: int, default: 3}}\n  Slice:\n    fields:\n      name: string\n      site: {type: ref, to: Site, required: true}\n      flavor: {type: string, enum: [small, large]}\n      out: {type: string, feedback: true}\n",
        )])
        .unwrap()
    }

    #[test]
    fn valid_objects_get_defaults_and_refs() {
        let mut d = Diagnostics::default();
        let src = Source::from_text(
            "o.yaml",
            "Site:\n  - {name: a}\n---\nSlice:\n  - {name: s, site: a}\n",
        );
        let objs = load_objects(&src, &schema(), &mut d);
        assert!(!d.has_errors(), "{d}");
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].fields["n"], Value::from(3));
        assert_eq!(objs[1].refs[0].key, "a");
        assert_eq!(objs[1].refs[0].origin.pos, Some(Pos { line: 5, col: 21 }));
    }

    #[test]
    fn every_error_is_located() {
        let mut d = Diagnostics::default();
        let src = Source::from_text(
            "o.yaml",
            "Slice:\n  - {name: s, site: a, flavor: huge}\n  - {name: t, sight: a}\n  - {name: u, site: a, out: x}\nSlise: []\nSite:\n  - {name: 5, n: x}\n",
        );
        load_objects(&src, &schema(), &mut d);
        let got: Vec<(u32, u32)> =
            d.0.iter()
                .map(|x| (x.pos.unwrap().line, x.pos.unwrap().col))
                .collect();
        assert_eq!(
            got,
            vec![(2, 32), (3, 15), (3, 5), (4, 24), (5, 1), (7, 12), (7, 18)],
            "{d}"
        );
    }
}
