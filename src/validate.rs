//! `stepsync validate`: every check of a service directory in one pass, every problem
//! reported with its place (SPEC §10). Loading already checks each file's own shape; this
//! adds what needs several files at once: templates against the model schema, payload
//! templates against the attributes, playbooks against the built-in subset, objects files.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::config::{Runner, StoreUrl, in_dir};
use crate::diag::{Diagnostic, Diagnostics, Origin, expected_hint};
use crate::model::objects::{ObjectSpec, check_duplicates, load_objects};
use crate::model::schema::{FieldType, yaml_files as schema_yaml_files};
use crate::model::{Model, Schema};
use crate::payload::playbook::PLAYBOOKS_DIR;
use crate::playbook::ansible_names::{self, Plugin};
use crate::playbook::load::{
    Action, RUNNER_HINT, Roles, Task, load_playbook_partial, load_task_file_partial,
};
use crate::playbook::vars::Templar;
use crate::playbook::vars_file::{load_vars_file, resolve};
use crate::service::Service;
use crate::stepdef::{Actuator, Auth, Feedback, Payload, PayloadKind, Request, Rest};
use crate::template::{TValue, Templates, Tmpl, filters_and_tests, lookups_called};
use crate::yaml::Source;

/// Names every template may use besides its own: the reserved ones.
const COMMON: &[&str] = &["object", "vars", "secret"];

/// Checks the service in `dir` and the objects files given; returns errors and warnings.
pub fn validate(dir: &Path, objects: &[PathBuf]) -> Diagnostics {
    let (svc, mut diags) = Service::check(dir);
    let Some(svc) = svc else {
        // Without a schema and stepdefs the checks below have nothing to stand on; what
        // stopped loading is already reported.
        for f in objects {
            check_objects_syntax(f, &mut diags);
        }
        return diags;
    };
    // On a config that did not load (reported above), `vars:` and `secrets:` are unknown:
    // names of them are not checked rather than all reported missing.
    let config_loaded = crate::config::Config::load(dir).is_ok();
    for act in svc.stepdefs.actuators.values() {
        check_actuator(&svc, act, config_loaded, &mut diags);
    }
    let mut seen = BTreeSet::new();
    for act in svc.stepdefs.actuators.values() {
        for p in [&act.sync, &act.delete].into_iter().flatten() {
            if let PayloadKind::Playbook(pb) = &p.kind
                && seen.insert(pb.playbook.clone())
            {
                check_playbook(&svc, &pb.playbook, &pb.origin, &mut diags);
            }
        }
    }
    check_steps(&svc, config_loaded, &mut diags);
    for w in &svc.stepdefs.watchers {
        if let crate::stepdef::OnChange::Payload(p) = &w.on_change
            && let PayloadKind::Playbook(pb) = &p.kind
            && seen.insert(pb.playbook.clone())
        {
            check_playbook(&svc, &pb.playbook, &pb.origin, &mut diags);
        }
    }
    // Watchers and policies that start each other again with no outside change (SPEC §15).
    diags.0.extend(crate::steps::loops::check(&svc).0);
    // As `apply` reads them: all files together, so an object listed in two is caught.
    let mut specs = Vec::new();
    for f in objects {
        match Source::read(f) {
            Ok(src) => specs.extend(load_objects(&src, &svc.schema, &mut diags)),
            Err(d) => diags.push(d),
        }
    }
    let seen = check_duplicates(&specs, &mut diags);
    check_refs(&svc, &specs, &seen, &mut diags);
    check_store(&svc, &mut diags);
    diags
}

/// A stored object the schema does not describe (any more): after a model was removed, or
/// a field made required that stored objects lack. `validate` reports these as errors and
/// `status` lists them, each with the way out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mismatch {
    /// Objects of a model no schema file defines. Their backend objects stay as they are.
    UnknownModel { model: String, objects: usize },
    /// Objects without a value for a required field that has no `default:`.
    MissingRequired {
        model: String,
        field: String,
        objects: usize,
        /// One of them, for the message.
        example: String,
    },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let them = |n: usize| if n == 1 { "it" } else { "them" };
        match self {
            Mismatch::UnknownModel { model, objects } => write!(
                f,
                "{model}: {objects} stored object(s) of a model no schema defines; their backend objects are left as they are. Put the model back to delete {} through its actuator (`stepsync delete {model} --all`), or forget {} without a backend call (`stepsync delete {model} --all --force`)",
                them(*objects),
                them(*objects)
            ),
            Mismatch::MissingRequired {
                model,
                field,
                objects,
                example,
            } => write!(
                f,
                "{model}: {objects} stored object(s) lack the required field `{field}` (e.g. {model}/{example}); apply {} with it, give the field a `default:`, or delete {}",
                them(*objects),
                them(*objects)
            ),
        }
    }
}

/// What of `objs` the schema does not describe: models it lacks, required fields missing.
pub fn stored_mismatches(schema: &Schema, objs: &[crate::store::ObjectRecord]) -> Vec<Mismatch> {
    let mut unknown: indexmap::IndexMap<&str, usize> = indexmap::IndexMap::new();
    let mut missing: indexmap::IndexMap<(&str, &str), (usize, &str)> = indexmap::IndexMap::new();
    for o in objs {
        let Some(model) = schema.model(&o.model) else {
            *unknown.entry(o.model.as_str()).or_default() += 1;
            continue;
        };
        for f in model.fields.values() {
            if f.required
                && f.default.is_none()
                && !f.feedback
                && o.fields.get(&f.name).is_none_or(serde_json::Value::is_null)
            {
                missing
                    .entry((o.model.as_str(), f.name.as_str()))
                    .or_insert((0, o.key.as_str()))
                    .0 += 1;
            }
        }
    }
    let mut out: Vec<Mismatch> = unknown
        .into_iter()
        .map(|(m, n)| Mismatch::UnknownModel {
            model: m.to_owned(),
            objects: n,
        })
        .collect();
    out.extend(
        missing
            .into_iter()
            .map(|((m, f), (n, example))| Mismatch::MissingRequired {
                model: m.to_owned(),
                field: f.to_owned(),
                objects: n,
                example: example.to_owned(),
            }),
    );
    out
}

/// The stored objects against the schema ([`stored_mismatches`]), when there is a store.
fn check_store(svc: &Service, diags: &mut Diagnostics) {
    let exists = match &svc.config.store {
        StoreUrl::Sqlite(p) => svc.config.resolve(&svc.dir, p).exists(),
        StoreUrl::Postgres(_) => true,
    };
    // `validate` never creates a store; one that cannot be read is for `status` to report.
    let Some(objs) = exists
        .then(|| svc.open_store().ok()?.list(None).ok())
        .flatten()
    else {
        return;
    };
    for m in stored_mismatches(&svc.schema, &objs) {
        let d = match &m {
            Mismatch::MissingRequired { model, field, .. } => svc
                .schema
                .model(model)
                .and_then(|md| md.fields.get(field))
                .map_or_else(
                    || Diagnostic::error(m.to_string()),
                    |f| f.origin.diag(m.to_string()),
                ),
            Mismatch::UnknownModel { .. } => Diagnostic::in_file(
                m.to_string(),
                &in_dir(&svc.dir, Path::new(crate::service::SCHEMAS_DIR)),
            ),
        };
        diags.push(d);
    }
}

/// Refs must name an object of these files or a live one of the store, as `apply` insists.
/// A service with no store yet has nothing stored; `validate` never creates one.
fn check_refs(
    svc: &Service,
    specs: &[ObjectSpec],
    listed: &HashMap<(String, String), usize>,
    diags: &mut Diagnostics,
) {
    let store = match &svc.config.store {
        StoreUrl::Sqlite(p) if svc.config.resolve(&svc.dir, p).exists() => match svc.open_store() {
            Ok(s) => Some(s),
            // A store that cannot be read says nothing either way; `apply` will tell.
            Err(_) => return,
        },
        // Unknown (a remote store): only what the files say can be checked.
        StoreUrl::Postgres(_) => return,
        StoreUrl::Sqlite(_) => None,
    };
    for r in specs.iter().flat_map(|s| &s.refs) {
        if listed.contains_key(&(r.to.clone(), r.key.clone())) {
            continue;
        }
        let stored = store
            .as_ref()
            .and_then(|st| st.get(&r.to, &r.key).ok().flatten())
            .is_some_and(|o| !o.book.deleted);
        if !stored {
            diags.push(
                r.origin
                    .diag(format!(
                        "field `{}` refers to {}/{}, which does not exist",
                        r.field, r.to, r.key
                    ))
                    .with_hint(format!(
                        "list the {} in these files or apply it first",
                        r.to
                    )),
            );
        }
    }
}

fn check_objects_syntax(f: &Path, diags: &mut Diagnostics) {
    match Source::read(f).and_then(|s| s.documents().map(|_| ())) {
        Ok(()) => {}
        Err(d) => diags.push(d),
    }
}

/// The templates of watchers' payloads and policies' actions, as an actuator's are checked:
/// names in scope (`watched` for a watcher, `item` in a policy), secrets, vars and
/// `object.` paths on the step's model.
fn check_steps(svc: &Service, config_loaded: bool, diags: &mut Diagnostics) {
    let templates = &svc.stepdefs.templates;
    let mut check = |model: &Model, t: &Tmpl, names: &[&str], what: &str| {
        check_names(templates, t, names, what, diags);
        if config_loaded {
            check_secrets(svc, t, diags);
            check_vars(svc, templates, t, diags);
        }
        check_object_paths(templates, &svc.schema, model, t, diags);
    };
    for w in &svc.stepdefs.watchers {
        let (Some(model), crate::stepdef::OnChange::Payload(p)) =
            (svc.schema.model(&w.model), &w.on_change)
        else {
            continue;
        };
        let mut names: Vec<&str> = p.vars.iter().map(|(k, _)| k.as_str()).collect();
        names.extend(COMMON);
        names.push("watched");
        for t in payload_tmpls(p) {
            check(model, t, &names, "the watcher's payload");
        }
    }
    for p in &svc.stepdefs.policies {
        let Some(model) = svc.schema.model(&p.model) else {
            continue;
        };
        let mut names: Vec<&str> = COMMON.to_vec();
        names.push("item");
        for a in p.on_create.iter().chain(p.on_update.iter().flatten()) {
            let tmpls: Vec<&Tmpl> = match a {
                crate::stepdef::Action::Ensure(e) => std::iter::once(&e.key)
                    .chain(e.fields.iter().flat_map(|(_, v)| tmpls_of(v)))
                    .chain(e.each.iter().flat_map(tmpls_of))
                    .collect(),
                crate::stepdef::Action::Delete { key, .. } => vec![key],
            };
            for t in tmpls {
                check(model, t, &names, "a policy");
            }
        }
    }
    // Pull and event steps see `vars`, `secret()` and their item or message, no object.
    let mut feeds: Vec<(Vec<&Tmpl>, &[&str], &str)> = Vec::new();
    for p in &svc.stepdefs.pulls {
        let mut request = Vec::new();
        request_tmpls(&p.request, &mut request);
        feeds.push((request, &["vars", "secret"], "a pull step's request"));
        feeds.push((
            mapping_tmpls(&p.map),
            &["vars", "secret", "item"],
            "a pull step",
        ));
    }
    for e in &svc.stepdefs.events {
        let mut t = mapping_tmpls(&e.map);
        t.extend(&e.action);
        feeds.push((t, &["vars", "secret", "event"], "an event step"));
    }
    for (tmpls, names, what) in feeds {
        for t in tmpls {
            check_names(templates, t, names, what, diags);
            if config_loaded {
                check_secrets(svc, t, diags);
                check_vars(svc, templates, t, diags);
            }
        }
    }
}

fn check_actuator(svc: &Service, act: &Actuator, config_loaded: bool, diags: &mut Diagnostics) {
    let templates = &svc.stepdefs.templates;
    let Some(model) = svc.schema.model(&act.model) else {
        return;
    };
    // Attributes see the object, vars and secrets; `object.<path>` must exist in the schema.
    for (_, v) in &act.attributes {
        for t in tmpls_of(v) {
            check_names(templates, t, COMMON, "an attribute", diags);
            if config_loaded {
                check_secrets(svc, t, diags);
                check_vars(svc, templates, t, diags);
            }
            check_object_paths(templates, &svc.schema, model, t, diags);
        }
    }
    let attrs: Vec<&str> = act.attributes.iter().map(|(k, _)| k.as_str()).collect();
    for (label, payload) in [("sync", &act.sync), ("delete", &act.delete)] {
        let Some(p) = payload else { continue };
        let mut names: Vec<&str> = attrs.clone();
        names.extend(p.vars.iter().map(|(k, _)| k.as_str()));
        names.extend(COMMON);
        for t in payload_tmpls(p) {
            check_names(templates, t, &names, &format!("the {label} payload"), diags);
            if config_loaded {
                check_secrets(svc, t, diags);
                check_vars(svc, templates, t, diags);
            }
            check_object_paths(templates, &svc.schema, model, t, diags);
        }
    }
    let mut with_result = attrs.clone();
    with_result.extend(COMMON);
    with_result.push("result");
    let sync_kind: Vec<&PayloadKind> = act.sync.iter().map(|p| &p.kind).collect();
    let any_kind: Vec<&PayloadKind> = [&act.sync, &act.delete]
        .into_iter()
        .flatten()
        .map(|p| &p.kind)
        .collect();
    for (_, rule) in &act.feedback {
        if let Feedback::Template(t) = rule {
            check_names(templates, t, &with_result, "feedback", diags);
            check_result(templates, t, &sync_kind, diags);
            if config_loaded {
                check_secrets(svc, t, diags);
                check_vars(svc, templates, t, diags);
            }
        }
    }
    if let Some(t) = &act.defer_when {
        check_names(templates, t, &with_result, "defer_when", diags);
        check_result(templates, t, &any_kind, diags);
        if config_loaded {
            check_secrets(svc, t, diags);
            check_vars(svc, templates, t, diags);
        }
    }

    // Legal, but probably not meant.
    if act.delete.is_none() && act.sync.is_some() {
        diags.push(
            Diagnostic::in_file(
                format!(
                    "the actuator of {} has no `delete` payload: deleted objects are purged without touching the backend",
                    act.model
                ),
                &act.file,
            )
            .with_hint("add `delete:` if the backend keeps something for each object")
            .warning(),
        );
    }
    // Feedback comes from the actuator, and also from the pull and event steps that write
    // the model (SPEC §13, §14): a field only those write is not unwritten.
    let steps = svc.stepdefs.pulls.iter().map(|p| &p.map);
    let steps = steps.chain(svc.stepdefs.events.iter().map(|e| &e.map));
    let written: BTreeSet<&str> = act
        .feedback
        .iter()
        .map(|(f, _)| f.as_str())
        .chain(
            steps
                .filter(|m| m.model == model.name)
                .flat_map(|m| m.feedback.iter().map(|(f, _)| f.as_str())),
        )
        .collect();
    for f in model.fields.values().filter(|f| f.feedback) {
        if !written.contains(f.name.as_str()) {
            diags.push(
                f.origin
                    .diag(format!(
                        "feedback field `{}` of {} is never written by its actuator ({})",
                        f.name,
                        model.name,
                        act.file.display()
                    ))
                    .with_hint("map it under `feedback:` in the stepdef, or drop `feedback: true`")
                    .warning(),
            );
        }
    }
}

/// Every template of an actuator: attributes, both payloads, feedback and `defer_when` —
/// what it reads of its object, for loop detection (SPEC §15).
pub(crate) fn actuator_tmpls(act: &Actuator) -> Vec<&Tmpl> {
    let mut out: Vec<&Tmpl> = act
        .attributes
        .iter()
        .flat_map(|(_, v)| tmpls_of(v))
        .collect();
    for p in [&act.sync, &act.delete].into_iter().flatten() {
        out.extend(payload_tmpls(p));
    }
    out.extend(act.feedback.iter().filter_map(|(_, f)| match f {
        Feedback::Template(t) => Some(t),
        Feedback::JsonPath(_) => None,
    }));
    out.extend(act.defer_when.as_ref());
    out
}

/// Every template of a payload: the request parts of a REST call, a playbook's hosts, vars.
fn payload_tmpls(p: &Payload) -> Vec<&Tmpl> {
    let mut out: Vec<&Tmpl> = p.vars.iter().flat_map(|(_, v)| tmpls_of(v)).collect();
    match &p.kind {
        PayloadKind::Playbook(pb) => out.extend(pb.hosts.as_ref()),
        PayloadKind::Rest(Rest::Simple(r)) => request_tmpls(r, &mut out),
        PayloadKind::Rest(Rest::Delta {
            observe,
            create,
            update,
            ..
        }) => {
            for r in [Some(observe), create.as_ref(), Some(update)]
                .into_iter()
                .flatten()
            {
                request_tmpls(r, &mut out);
            }
        }
    }
    out
}

/// The templates of a pull or event step's mapping: the key, the fields and feedback.
fn mapping_tmpls(m: &crate::stepdef::Mapping) -> Vec<&Tmpl> {
    std::iter::once(&m.key)
        .chain(
            m.fields
                .iter()
                .chain(&m.feedback)
                .flat_map(|(_, v)| tmpls_of(v)),
        )
        .collect()
}

fn request_tmpls<'a>(r: &'a Request, out: &mut Vec<&'a Tmpl>) {
    out.push(&r.url);
    out.extend(r.headers.iter().map(|(_, t)| t));
    match &r.auth {
        Some(Auth::Bearer(t)) => out.push(t),
        Some(Auth::Basic { user, password }) => out.extend([user, password]),
        None => {}
    }
    if let Some(b) = &r.body {
        out.extend(tmpls_of(b));
    }
}

pub(crate) fn tmpls_of(v: &TValue) -> Vec<&Tmpl> {
    match v {
        TValue::Lit(_) => Vec::new(),
        TValue::Tmpl(t) => vec![t],
        TValue::Seq(items) => items.iter().flat_map(tmpls_of).collect(),
        TValue::Map(entries) => entries.iter().flat_map(|(_, v)| tmpls_of(v)).collect(),
    }
}

/// Filters and tests are looked up only when a template renders: a misspelt one would
/// fail every run, so it is caught here.
fn check_filters(templates: &Templates, t: &Tmpl, diags: &mut Diagnostics) {
    let (filters, tests) = filters_and_tests(&t.text);
    for f in filters.iter().filter(|f| !templates.has_filter(f)) {
        diags.push(
            t.origin
                .diag(format!("unknown filter `{f}`: `{}`", t.text.trim())),
        );
    }
    for x in tests.iter().filter(|x| !templates.has_test(x)) {
        diags.push(
            t.origin
                .diag(format!("unknown test `{x}`: `{}`", t.text.trim())),
        );
    }
}

/// `secret('name')` must name a secret of stepsync.yaml: rendering would fail on every run.
fn check_secrets(svc: &Service, t: &Tmpl, diags: &mut Diagnostics) {
    let Ok(re) = regex::Regex::new(r#"\bsecret\(\s*(?:'([^']*)'|"([^"]*)")\s*\)"#) else {
        return;
    };
    let declared: Vec<&str> = svc.config.secrets.keys().map(String::as_str).collect();
    for c in re.captures_iter(&t.text) {
        let Some(name) = c.get(1).or_else(|| c.get(2)).map(|m| m.as_str()) else {
            continue;
        };
        if !declared.contains(&name) {
            diags.push(
                t.origin
                    .diag(format!(
                        "secret `{name}` is not declared under `secrets:` in stepsync.yaml"
                    ))
                    .with_hint(expected_hint(name, &declared)),
            );
        }
    }
}

/// `vars.<name>` must name a service var of stepsync.yaml: a typo renders as an undefined
/// value on every run.
fn check_vars(svc: &Service, templates: &Templates, t: &Tmpl, diags: &mut Diagnostics) {
    let declared: Vec<&str> = svc.config.vars.keys().map(String::as_str).collect();
    for (_, name) in members_read(templates, t, "vars") {
        if !declared.contains(&name.as_str()) {
            diags.push(
                t.origin
                    .diag(format!(
                        "`vars.{name}` is not a service var: stepsync.yaml's `vars:` has no `{name}`"
                    ))
                    .with_hint(expected_hint(&name, &declared)),
            );
        }
    }
}

/// The members of `root` that `t` reads (`vars.x.y` gives `x`), with the whole path.
fn members_read(templates: &Templates, t: &Tmpl, root: &str) -> Vec<(String, String)> {
    templates
        .free_variables(t)
        .into_iter()
        .filter_map(|path| {
            let mut parts = path.split('.');
            (parts.next() == Some(root))
                .then(|| parts.next().map(str::to_owned))
                .flatten()
                .map(|name| (path.clone(), name))
        })
        .collect()
}

/// The fields of `result` (SPEC §6.4) for each payload kind.
const REST_RESULT: &[&str] = &["status", "headers", "body", "text", "action"];
const PLAYBOOK_RESULT: &[&str] = &[
    "ok",
    "changed",
    "failed",
    "skipped",
    "unreachable",
    "stats",
    "facts",
    "message",
];

/// `result.<name>` must be a field of the result of the payloads it follows; what lies
/// deeper (a body, stats) is the backend's.
fn check_result(templates: &Templates, t: &Tmpl, kinds: &[&PayloadKind], diags: &mut Diagnostics) {
    let mut known: Vec<&str> = Vec::new();
    for k in kinds {
        known.extend(match k {
            PayloadKind::Rest(_) => REST_RESULT,
            PayloadKind::Playbook(_) => PLAYBOOK_RESULT,
        });
    }
    if known.is_empty() {
        return;
    }
    known.dedup();
    for (path, name) in members_read(templates, t, "result") {
        if !known.contains(&name.as_str()) {
            diags.push(
                t.origin
                    .diag(format!("`result` has no field `{name}` (in `{path}`)"))
                    .with_hint(expected_hint(&name, &known)),
            );
        }
    }
}

/// Names a template reads must be defined where it is rendered.
fn check_names(
    templates: &Templates,
    t: &Tmpl,
    defined: &[&str],
    place: &str,
    diags: &mut Diagnostics,
) {
    check_filters(templates, t, diags);
    for path in templates.free_variables(t) {
        let root = path.split('.').next().unwrap_or(&path);
        if defined.contains(&root) || templates.is_global(root) {
            continue;
        }
        diags.push(
            t.origin
                .diag(format!(
                    "`{root}` is not defined in {place}: `{}`",
                    t.text.trim()
                ))
                .with_hint(expected_hint(root, defined)),
        );
    }
}

/// `object.a.b` must name fields of the model, following `ref` fields to their models.
fn check_object_paths(
    templates: &Templates,
    schema: &Schema,
    model: &Model,
    t: &Tmpl,
    diags: &mut Diagnostics,
) {
    for path in templates.free_variables(t) {
        let Some(walk) = object_path(schema, model, &path) else {
            continue;
        };
        if let Some((current, name)) = walk.unknown {
            diags.push(
                t.origin
                    .diag(format!(
                        "{} has no field `{name}` (in `{path}`)",
                        current.name
                    ))
                    .with_hint(expected_hint(name, &current.field_names())),
            );
        }
    }
}

/// What one `object.a.b` path of a template reads, as far as the schema tells.
pub(crate) struct ObjectPath<'s, 'p> {
    /// Each field read, with the model it is a field of, in path order: `object.slice.site.name`
    /// reads Slice.site (on the stepdef's model), then Site.name.
    pub(crate) fields: Vec<(&'s Model, &'s crate::model::schema::Field)>,
    /// The first name the schema lacks, and the model that lacks it.
    pub(crate) unknown: Option<(&'s Model, &'p str)>,
    /// The model whose objects the path yields whole: it ends at a `ref` (`object.site`) or
    /// a `refs` field (a list a template loops over), so any of their fields may be read.
    pub(crate) whole: Option<&'s Model>,
}

/// Walks `path` (a free variable of a template) when it is an `object.` path, following
/// `ref` fields to their models: what `validate` checks names with and loop detection reads
/// fields with. `None` for a path of another root.
pub(crate) fn object_path<'s, 'p>(
    schema: &'s Schema,
    model: &'s Model,
    path: &'p str,
) -> Option<ObjectPath<'s, 'p>> {
    let mut parts = path.split('.').peekable();
    if parts.next() != Some("object") {
        return None;
    }
    let mut out = ObjectPath {
        fields: Vec::new(),
        unknown: None,
        whole: None,
    };
    let mut current = model;
    while let Some(name) = parts.next() {
        if matches!(name, "key" | "model") && !current.fields.contains_key(name) {
            break;
        }
        let Some(field) = current.fields.get(name) else {
            out.unknown = Some((current, name));
            break;
        };
        out.fields.push((current, field));
        let last = parts.peek().is_none();
        match &field.ty {
            FieldType::Ref(to) => match schema.model(to) {
                Some(m) if last => out.whole = Some(m),
                Some(m) => current = m,
                None => break,
            },
            FieldType::Refs(to) => {
                out.whole = schema.model(to);
                break;
            }
            // A list or free-form data: what lies inside is not in the schema.
            _ => break,
        }
    }
    Some(out)
}

/// A playbook must exist; with the built-in runner it must also stay inside the subset, and
/// its roles and static includes must load.
fn check_playbook(svc: &Service, rel: &Path, named_at: &Origin, diags: &mut Diagnostics) {
    let dir = in_dir(&svc.dir, Path::new(PLAYBOOKS_DIR));
    let path = dir.join(rel);
    if !path.is_file() {
        let known: Vec<String> = schema_yaml_files(&dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.file_name())
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        diags.push(
            named_at
                .diag(format!("playbook {} does not exist", path.display()))
                .with_hint(expected_hint(&rel.display().to_string(), &known)),
        );
        return;
    }
    let roles = Roles {
        dir: dir.join("roles"),
    };
    if svc.config.runner != Runner::Builtin {
        // ansible-playbook decides what is valid; the YAML must still read.
        if let Err(d) = Source::read_ansible(&path).and_then(|s| s.documents().map(|_| ())) {
            diags.push(d);
        }
        return;
    }
    let (plays, problems) = load_playbook_partial(&path, &roles);
    diags.0.extend(problems.0);
    let mut w = Walk::default();
    let playbook_dir = path.parent().unwrap_or(Path::new("."));
    for play in &plays {
        for h in &play.handlers {
            w.handler(h);
        }
        // A templated name is known only at run time.
        for f in play.vars_files.iter().filter(|f| !f.templated()) {
            if let Err(d) = load_vars_file(&resolve(playbook_dir, &f.path), Some(&f.origin)) {
                diags.push(d);
            }
        }
        for r in &play.roles {
            check_role(&roles, &r.name, &r.origin, &mut w, diags);
        }
        for t in play.all_tasks() {
            check_task(&roles, t, &mut w, diags);
        }
    }
    // Ansible stops the run when a task notifies a handler that does not exist; the
    // handlers of every play count, a slip between plays is left to the run.
    let known: Vec<&str> = w.handlers.iter().map(String::as_str).collect();
    for (name, at) in &w.notified {
        if !name.contains("{{") && !w.handlers.contains(name) {
            diags.push(
                at.diag(format!(
                    "notify: no handler is named `{name}` or listens to it"
                ))
                .with_hint(expected_hint(name, &known)),
            );
        }
    }
}

/// What the walk over a playbook's tasks gathers: the task files seen (each is checked
/// once), the names handlers answer to, and every name a task notifies.
#[derive(Default)]
struct Walk {
    files: BTreeSet<PathBuf>,
    handlers: BTreeSet<String>,
    notified: Vec<(String, Origin)>,
    /// Under a `when`: an include may never run, and Ansible loads its file only if it does.
    conditional: bool,
    /// The runner's templates, to ask which filters, tests and lookups it has.
    templar: Templar,
}

impl Walk {
    /// A handler answers to its name, `role : name` for a role's, and its `listen` topics.
    fn handler(&mut self, h: &Task) {
        if let Some(n) = &h.name {
            self.handlers.insert(n.clone());
            if let Some(r) = &h.role {
                self.handlers.insert(format!("{r} : {n}"));
            }
        }
        self.handlers.extend(h.listen.iter().cloned());
    }
}

fn check_role(
    roles: &Roles,
    name: &str,
    at: &crate::diag::Origin,
    w: &mut Walk,
    diags: &mut Diagnostics,
) {
    if !roles.path(name, "").is_dir() {
        let known: Vec<String> = std::fs::read_dir(&roles.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        diags.push(
            at.diag(format!(
                "role `{name}` not found in {}",
                roles.dir.display()
            ))
            .with_hint(expected_hint(name, &known)),
        );
        return;
    }
    for part in ["tasks", "handlers"] {
        if let Some(main) = roles.main(name, part) {
            check_task_file(roles, &main, Some(name), w, diags);
        }
    }
    // An included role brings its handlers (a play's roles are among the play's already).
    if let Some(main) = roles.main(name, "handlers") {
        for h in load_task_file_partial(&main, Some(name)).0 {
            w.handler(&h);
        }
    }
    for part in ["defaults", "vars"] {
        if let Some(f) = roles.main(name, part)
            && let Err(d) = load_vars_file(&f, None)
        {
            diags.push(d);
        }
    }
}

fn check_task_file(
    roles: &Roles,
    path: &Path,
    role: Option<&str>,
    w: &mut Walk,
    diags: &mut Diagnostics,
) {
    // A file included from several places (or from itself) is checked once.
    if !w.files.insert(path.to_path_buf()) {
        return;
    }
    let (tasks, problems) = load_task_file_partial(path, role);
    diags.0.extend(problems.0);
    for t in &tasks {
        check_task(roles, t, w, diags);
    }
}

fn check_task(roles: &Roles, t: &Task, w: &mut Walk, diags: &mut Diagnostics) {
    w.notified
        .extend(t.notify.iter().map(|n| (n.clone(), t.origin.clone())));
    for text in task_texts(t) {
        for (kind, name, _) in plugins_used(&text) {
            if let Some(d) = unsupported_plugin(&w.templar, kind, &name) {
                diags.push(t.origin.diag(d.0).with_hint(d.1));
            }
        }
    }
    let outer = w.conditional;
    w.conditional |= !t.when.is_empty();
    match &t.action {
        Action::Block { .. } => {
            for inner in t.inner() {
                check_task(roles, inner, w, diags);
            }
        }
        // A templated file name is known only at run time.
        Action::IncludeTasks {
            file,
            base,
            dynamic,
        } if !file.contains("{{") => {
            let path = base.join(file);
            if path.is_file() {
                check_task_file(roles, &path, t.role.as_deref(), w, diags);
            } else if !(*dynamic && w.conditional) {
                // An import is read with the playbook; an include under a `when` only when
                // it runs, so its file may be missing where it never does.
                diags.push(t.origin.diag(format!(
                    "included task file {} does not exist",
                    path.display()
                )));
            }
        }
        Action::IncludeRole { role, from, .. } if !role.contains("{{") => {
            check_role(roles, role, &t.origin, w, diags);
            // `tasks_from` and the like name files the runner reads instead of main.yml.
            for part in ["tasks", "vars", "defaults"] {
                let Some(name) = from.of(part).filter(|n| !n.contains("{{")) else {
                    continue;
                };
                match roles.file(role, part, name) {
                    Some(f) if part == "tasks" => {
                        check_task_file(roles, &f, Some(role), w, diags);
                    }
                    Some(f) => {
                        if let Err(d) = load_vars_file(&f, Some(&t.origin)) {
                            diags.push(d);
                        }
                    }
                    None if roles.path(role, "").is_dir() => diags.push(t.origin.diag(format!(
                        "{part}_from: role `{role}` has no {part} file `{name}` in {}",
                        roles.path(role, part).display()
                    ))),
                    None => {}
                }
            }
        }
        Action::Module { name, args } if matches!(name.as_str(), "copy" | "template") => {
            if let Some(found) = check_src(roles, t, name, args, diags)
                && name == "template"
            {
                check_template_file(&w.templar, &found, diags);
            }
        }
        _ => {}
    }
    w.conditional = outer;
}

/// Every text of a task that the runner renders, conditions written as the templates they
/// are: what its filters, tests and lookups are read from.
fn task_texts(t: &Task) -> Vec<String> {
    fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
            serde_json::Value::Object(m) => m.values().for_each(|i| strings(i, out)),
            _ => {}
        }
    }
    let mut out: Vec<String> = t.name.iter().cloned().collect();
    let conditions = t
        .when
        .iter()
        .chain(t.changed_when.iter().flatten())
        .chain(t.failed_when.iter().flatten())
        .chain(&t.retry.until)
        .chain(&t.loop_control.break_when);
    out.extend(conditions.map(|c| format!("{{{{ {c} }}}}")));
    if let Some(items) = &t.loop_items {
        strings(items, &mut out);
    }
    for (_, v) in t.vars.iter().chain(&t.environment) {
        strings(v, &mut out);
    }
    match &t.action {
        Action::Module { args, .. } => strings(args, &mut out),
        Action::IncludeTasks { file, .. } => out.push(file.clone()),
        Action::IncludeRole { role, .. } => out.push(role.clone()),
        Action::Block { .. } | Action::Meta(_) => {}
    }
    out.extend(t.delegate_to.iter().cloned());
    out.extend(t.loop_control.label.iter().cloned());
    out
}

/// The filters, tests and lookups `text` uses, each with a byte offset of its use (where the
/// scan can tell; else 0).
fn plugins_used(text: &str) -> Vec<(Plugin, String, usize)> {
    let (filters, tests) = filters_and_tests(text);
    // Where the name itself is: the pattern's group.
    let at = |pattern: String| {
        regex::Regex::new(&pattern)
            .ok()
            .and_then(|re| re.captures(text))
            .and_then(|c| c.get(1))
            .map_or(0, |m| m.start())
    };
    let mut out = Vec::new();
    for f in filters {
        let pos = at(format!(r"\|\s*({})\b", regex::escape(&f)));
        out.push((Plugin::Filter, f, pos));
    }
    for x in tests {
        let pos = at(format!(r"\bis\s+(?:not\s+)?({})\b", regex::escape(&x)));
        out.push((Plugin::Test, x, pos));
    }
    out.extend(
        lookups_called(text)
            .into_iter()
            .map(|(pos, name)| (Plugin::Lookup, name, pos)),
    );
    out
}

/// Why the built-in runner cannot render a filter, test or lookup, with the hint: Ansible's
/// own is outside the subset; anything else is a typo of one the runner has, or unknown.
fn unsupported_plugin(templar: &Templar, kind: Plugin, name: &str) -> Option<(String, String)> {
    let has = |n: &str| match kind {
        Plugin::Filter => templar.has_filter(n),
        Plugin::Test => templar.has_test(n),
        Plugin::Lookup => Templar::has_lookup(n),
    };
    if has(name) {
        return None;
    }
    let what = kind.as_str();
    if ansible_names::is_plugin(kind, name) {
        return Some((
            format!("{what} `{name}` is not in the built-in subset"),
            RUNNER_HINT.to_owned(),
        ));
    }
    let hint = match crate::diag::suggest(
        name,
        ansible_names::plugins(kind)
            .iter()
            .copied()
            .filter(|n| has(n)),
    ) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("neither the built-in runner nor Ansible has this {what}"),
    };
    Some((format!("unknown {what} `{name}`"), hint))
}

/// A template file's filters, tests and lookups, each reported where it is used.
fn check_template_file(templar: &Templar, path: &Path, diags: &mut Diagnostics) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    for (kind, name, at) in plugins_used(&text) {
        if let Some((message, hint)) = unsupported_plugin(templar, kind, &name) {
            let before = &text[..at.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            let pos = crate::diag::Pos {
                line: u32::try_from(line).unwrap_or(u32::MAX),
                col: u32::try_from(col).unwrap_or(u32::MAX),
            };
            diags.push(Diagnostic::at(message, path, &text, Some(pos)).with_hint(hint));
        }
    }
}

/// A static `src:` of copy/template must be found where the runner looks for it; returns
/// where it was found.
fn check_src(
    roles: &Roles,
    t: &Task,
    module: &str,
    args: &serde_json::Value,
    diags: &mut Diagnostics,
) -> Option<PathBuf> {
    let src = args.get("src").and_then(|v| v.as_str())?;
    if src.contains("{{") || Path::new(src).is_absolute() {
        return None;
    }
    let sub = if module == "template" {
        "templates"
    } else {
        "files"
    };
    let task_dir = t.origin.file.parent().unwrap_or(Path::new("."));
    let mut candidates = Vec::new();
    if let Some(r) = &t.role {
        candidates.push(roles.path(r, sub).join(src));
    }
    candidates.push(task_dir.join(sub).join(src));
    candidates.push(task_dir.join(src));
    if let Some(playbooks) = roles.dir.parent() {
        candidates.push(playbooks.join(sub).join(src));
        candidates.push(playbooks.join(src));
    }
    // The task's folder may be the playbooks folder itself: name each place once.
    let mut seen = BTreeSet::new();
    candidates.retain(|c| seen.insert(c.clone()));
    let found = candidates.iter().find(|c| c.exists()).cloned();
    if found.is_none() {
        diags.push(
            t.origin
                .diag(format!("{module} source `{src}` not found"))
                .with_hint(format!(
                    "looked in {}",
                    candidates
                        .iter()
                        .map(|c| c.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
        );
    }
    found
}
