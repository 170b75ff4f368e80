//! The fixture texts several tests share. A test whose fixture differs (other fields, other
//! models) keeps its own next to it.

/// The Site and Slice models (Slice last, so a larger schema can add fields to it).
macro_rules! site_slice_models {
    () => {
        "  Site:
    fields:
      name: {type: string, required: true}
      login_base: string
  Slice:
    fields:
      name: {type: string, required: true}
      site: {type: ref, to: Site, required: true}
"
    };
}

/// Site and Slice (a required ref to Site): the smallest schema with a dependency.
pub const SITE_SLICE: &str = concat!("models:\n", site_slice_models!());

/// Two sites with two slices each, for `SITE_SLICE`.
pub const SITE_SLICE_TREE: &str = "Site:
  - {name: a}
  - {name: b}
Slice:
  - {name: a1, site: a}
  - {name: a2, site: a}
  - {name: b1, site: b}
  - {name: b2, site: b}
";

/// A REST actuator for `model`: PUT `{{ vars.base }}/{path}/NAME` to sync, DELETE to delete,
/// then `extra` (more stepdef keys).
pub fn rest_stepdef(model: &str, path: &str, extra: &str) -> String {
    format!(
        r#"kind: Actuator
model: {model}
attributes: {{n: "{{{{ object.name }}}}"}}
sync:
  rest:
    method: PUT
    url: "{{{{ vars.base }}}}/{path}/{{{{ n }}}}"
    body: {{name: "{{{{ n }}}}", login: "{{{{ object.login_base | default('') }}}}"}}
delete:
  rest: {{method: DELETE, url: "{{{{ vars.base }}}}/{path}/{{{{ n }}}}"}}
{extra}"#
    )
}

/// Site / Slice (ref to Site, with a default) / Port / Instance (refs, enum, a feedback
/// field).
pub const SITE_SLICE_PORT_INSTANCE: &str = concat!(
    "models:\n",
    site_slice_models!(),
    "      max_instances: {type: int, default: 10}
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
      instance_id: {type: string, feedback: true}
"
);

/// One object of each model of `SITE_SLICE_PORT_INSTANCE`, every ref resolved.
pub const INSTANCE_OBJECTS: &str = "Site:
  - {name: site-a, login_base: a}
Slice:
  - {name: s1, site: site-a}
Port:
  - {name: p1, number: 80}
  - {name: p2, number: 443}
Instance:
  - {name: i1, slice: s1, ports: [p1, p2], flavor: small}
";

/// The `Dir` model, whose objects refer to a parent `Dir`.
pub const DIR_SCHEMA: &str =
    "models:\n  Dir:\n    fields: {name: string, parent: {type: ref, to: Dir}}\n";
