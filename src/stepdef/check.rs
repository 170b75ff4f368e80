//! Checking a parsed stepdef file into an [`Actuator`]: every problem becomes a diagnostic
//! at its place in the file, and templates are compiled once, here.

use std::path::PathBuf;

use indexmap::IndexMap;

use super::spec::{
    AuthSpec, FeedbackSpec, PayloadSpec, RequestSpec, RestDefaultsSpec, RestSpec, StepdefSpec,
};
use super::{Actuator, Auth, Feedback, Payload, PayloadKind, PlaybookRef, Request, Rest};
use crate::diag::{Diagnostic, Diagnostics, expected_hint};
use crate::model::Schema;
use crate::template::{RESERVED, TValue, Templates, Tmpl};
use crate::yaml::{Node, Source, Spanned};

/// The state of checking one file: its source (for positions), the templates being
/// compiled, and the problems found so far.
pub(super) struct Cx<'a> {
    pub(super) src: &'a Source,
    pub(super) templates: &'a mut Templates,
    pub(super) diags: &'a mut Diagnostics,
    /// The stepdef's `rest_defaults:`, merged into each of its requests.
    pub(super) rest_defaults: Option<RestDefaultsSpec>,
}

impl Cx<'_> {
    pub(super) fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    pub(super) fn tmpl(&mut self, s: &Spanned<String>) -> Option<Tmpl> {
        match self.templates.compile_spanned(self.src, s) {
            Ok(t) => Some(t),
            Err(d) => {
                self.error(d);
                None
            }
        }
    }

    pub(super) fn value(&mut self, n: &Spanned<Node>) -> Option<TValue> {
        match self.templates.compile_value(self.src, n) {
            Ok(t) => Some(t),
            Err(d) => {
                self.error(d);
                None
            }
        }
    }

    fn vars(
        &mut self,
        map: &IndexMap<Spanned<String>, Spanned<Node>>,
        what: &str,
    ) -> Vec<(String, TValue)> {
        let mut out = Vec::new();
        for (k, v) in map {
            if RESERVED.contains(&k.value.as_str()) {
                let msg = format!(
                    "{what} `{}` would shadow the template variable of that name",
                    k.value
                );
                self.error(
                    self.src
                        .diag_at(msg, k)
                        .with_hint(format!("{} are reserved", RESERVED.join(", "))),
                );
                continue;
            }
            if let Some(t) = self.value(v) {
                out.push((k.value.clone(), t));
            }
        }
        out
    }

    pub(super) fn actuator(&mut self, spec: StepdefSpec, schema: &Schema) -> Option<Actuator> {
        match spec.kind.value.as_str() {
            "Actuator" => {}
            other => {
                let hint = expected_hint(
                    other,
                    &["Actuator", "Watcher", "Policy", "PullStep", "EventStep"],
                );
                self.error(
                    self.src
                        .diag_at(format!("unknown kind `{other}`"), &spec.kind)
                        .with_hint(hint),
                );
                return None;
            }
        }
        let Some(model) = schema.model(&spec.model.value) else {
            let hint = expected_hint(&spec.model.value, &schema.model_names());
            self.error(
                self.src
                    .diag_at(format!("unknown model `{}`", spec.model.value), &spec.model)
                    .with_hint(hint),
            );
            return None;
        };
        let before = self.diags.0.len();
        self.rest_defaults = spec.rest_defaults.as_ref().map(|d| d.value.clone());
        let attributes = self.vars(&spec.attributes, "attribute");
        let sync = spec.sync.as_ref().and_then(|p| self.payload(p, false));
        let delete = spec.delete.as_ref().and_then(|p| self.payload(p, true));
        let mut feedback = Vec::new();
        for (field, rule) in &spec.feedback {
            match model.fields.get(&field.value) {
                Some(f) if f.feedback => {}
                Some(_) => {
                    let msg = format!(
                        "`{}` is a declarative field of {}; feedback writes only feedback fields",
                        field.value, model.name
                    );
                    self.error(
                        self.src
                            .diag_at(msg, field)
                            .with_hint("mark it `feedback: true` in the schema"),
                    );
                    continue;
                }
                None => {
                    let names: Vec<&str> = model
                        .fields
                        .values()
                        .filter(|f| f.feedback)
                        .map(|f| f.name.as_str())
                        .collect();
                    let msg = format!("`{}` is not a field of {}", field.value, model.name);
                    self.error(
                        self.src
                            .diag_at(msg, field)
                            .with_hint(expected_hint(&field.value, &names)),
                    );
                    continue;
                }
            }
            let rule = match &rule.value {
                FeedbackSpec::Template(t) => {
                    let s = Spanned::new(t.clone(), rule.referenced, rule.defined);
                    self.tmpl(&s).map(Feedback::Template)
                }
                FeedbackSpec::JsonPath(j) => {
                    // An untagged enum reads its value from a buffer that keeps no
                    // positions: the rule's own place stands in for the path's.
                    let path = match crate::yaml::pos(&j.jsonpath) {
                        Some(_) => j.jsonpath.clone(),
                        None => {
                            Spanned::new(j.jsonpath.value.clone(), rule.referenced, rule.defined)
                        }
                    };
                    self.jsonpath(&path).map(Feedback::JsonPath)
                }
            };
            if let Some(r) = rule {
                feedback.push((field.value.clone(), r));
            }
        }
        let defer_when = spec.defer_when.as_ref().and_then(|t| self.tmpl(t));
        if self.diags.0.len() > before {
            return None;
        }
        Some(Actuator {
            model: model.name.clone(),
            attributes,
            sync,
            delete,
            feedback,
            defer_when,
            concurrency: spec.concurrency,
            resync: spec.resync,
            file: self.src.path.clone(),
        })
    }

    pub(super) fn jsonpath(&mut self, s: &Spanned<String>) -> Option<String> {
        match jsonpath_rust::parser::parse_json_path(&s.value) {
            Ok(_) => Some(s.value.clone()),
            Err(e) => {
                self.error(self.src.diag_at(
                    format!(
                        "invalid JSONPath `{}`: {}",
                        s.value,
                        one_line(&e.to_string())
                    ),
                    s,
                ));
                None
            }
        }
    }

    pub(super) fn payload(&mut self, p: &Spanned<PayloadSpec>, is_delete: bool) -> Option<Payload> {
        let spec = &p.value;
        let vars = self.vars(&spec.vars, "payload var");
        let kind = match (&spec.rest, &spec.playbook) {
            (Some(rest), None) => {
                if let Some(h) = &spec.hosts {
                    self.error(
                        self.src
                            .diag_at("`hosts` applies to playbook payloads only", h),
                    );
                }
                PayloadKind::Rest(self.rest(rest, is_delete)?)
            }
            (None, Some(pb)) => PayloadKind::Playbook(PlaybookRef {
                playbook: PathBuf::from(&pb.value),
                hosts: spec.hosts.as_ref().and_then(|h| self.tmpl(h)),
                origin: self.src.origin(pb),
            }),
            (Some(_), Some(pb)) => {
                self.error(
                    self.src
                        .diag_at("a payload is either `rest` or `playbook`, not both", pb),
                );
                return None;
            }
            (None, None) => {
                self.error(
                    self.src
                        .diag_at("a payload needs `rest:` or `playbook:`", p),
                );
                return None;
            }
        };
        Some(Payload { kind, vars })
    }

    fn rest(&mut self, r: &Spanned<RestSpec>, is_delete: bool) -> Option<Rest> {
        let spec = &r.value;
        let simple = spec.method.is_some() || spec.url.is_some();
        let delta = spec.observe.is_some() || spec.create.is_some() || spec.update.is_some();
        // A delete's `expect` defaults to 2xx plus 404: gone already is gone.
        let default_expect = is_delete.then(|| (200..300).chain([404]).collect::<Vec<u16>>());
        match (simple, delta) {
            (true, true) => {
                self.error(self.src.diag_at(
                    "mix of the simple form (`method`/`url`) and the delta form (`observe`/`create`/`update`)",
                    r,
                ));
                None
            }
            (false, false) => {
                self.error(self.src.diag_at("a rest payload needs `url:` (simple form) or `observe:` and `update:` (delta form)", r));
                None
            }
            (true, false) => {
                let fields = RequestSpec {
                    method: spec.method.clone(),
                    url: spec.url.clone(),
                    headers: spec.headers.clone(),
                    auth: spec.auth.clone(),
                    body: spec.body.clone(),
                    timeout: spec.timeout,
                    expect: spec.expect.clone(),
                };
                let req = self.request(&fields, r, default_expect)?;
                if let Some(c) = &spec.compare {
                    self.error(
                        self.src
                            .diag_at("`compare` applies to the delta form only", c),
                    );
                }
                Some(Rest::Simple(req))
            }
            (false, true) => {
                let Some(observe) = &spec.observe else {
                    self.error(self.src.diag_at("the delta form needs `observe:`", r));
                    return None;
                };
                let Some(update) = &spec.update else {
                    self.error(self.src.diag_at(
                        "the delta form needs `update:` (and optionally `create:`)",
                        r,
                    ));
                    return None;
                };
                let o = &observe.value;
                let fields = RequestSpec {
                    method: o.method.clone(),
                    url: Some(o.url.clone()),
                    headers: o.headers.clone(),
                    auth: o.auth.clone(),
                    body: None,
                    timeout: o.timeout,
                    expect: None,
                };
                let mut obs = self.request(&fields, observe, None);
                if let Some(o) = &mut obs
                    && o.method != reqwest::Method::GET
                    && o.method != reqwest::Method::HEAD
                {
                    self.error(
                        self.src
                            .diag_at("`observe` must be a read-only GET or HEAD request", observe),
                    );
                }
                let create = spec.create.as_ref().and_then(|c| self.request_spec(c));
                let update = self.request_spec(update);
                let compare = spec
                    .compare
                    .as_ref()
                    .and_then(|c| self.jsonpath(&c.value.observed.jsonpath));
                Some(Rest::Delta {
                    observe: obs?,
                    absent: observe.value.absent.clone().unwrap_or_else(|| vec![404]),
                    create,
                    update: update?,
                    compare,
                })
            }
        }
    }

    fn request_spec(&mut self, r: &Spanned<RequestSpec>) -> Option<Request> {
        self.request(&r.value, r, None)
    }

    pub(super) fn request<T>(
        &mut self,
        f: &RequestSpec,
        at: &Spanned<T>,
        default_expect: Option<Vec<u16>>,
    ) -> Option<Request> {
        let method = match &f.method {
            None => reqwest::Method::GET,
            Some(m) => match reqwest::Method::from_bytes(m.value.to_ascii_uppercase().as_bytes()) {
                Ok(m) => m,
                Err(_) => {
                    self.error(
                        self.src
                            .diag_at(format!("invalid HTTP method `{}`", m.value), m),
                    );
                    return None;
                }
            },
        };
        let Some(url) = &f.url else {
            self.error(self.src.diag_at("a request needs `url:`", at));
            return None;
        };
        let url = self.tmpl(url)?;
        let defaults = self.rest_defaults.clone();
        let mut headers = Vec::new();
        // The defaults' headers first, then the request's own; a header the request sets
        // replaces the default of the same name (header names are case-insensitive).
        let own = |name: &str| f.headers.keys().any(|k| k.value.eq_ignore_ascii_case(name));
        let default_headers = defaults
            .iter()
            .flat_map(|d| &d.headers)
            .filter(|(k, _)| !own(&k.value));
        for (k, v) in default_headers.chain(&f.headers) {
            if reqwest::header::HeaderName::from_bytes(k.value.as_bytes()).is_err() {
                self.error(
                    self.src
                        .diag_at(format!("invalid header name `{}`", k.value), k),
                );
                continue;
            }
            if let Some(t) = self.tmpl(v) {
                headers.push((k.value.clone(), t));
            }
        }
        let auth = match f
            .auth
            .as_ref()
            .or(defaults.as_ref().and_then(|d| d.auth.as_ref()))
        {
            Some(a) => self.auth(a),
            None => None,
        };
        let body = match &f.body {
            Some(b) => Some(self.value(b)?),
            None => None,
        };
        Some(Request {
            method,
            url,
            headers,
            auth,
            body,
            timeout: f.timeout.or(defaults.and_then(|d| d.timeout)),
            expect: f.expect.clone().or(default_expect),
        })
    }

    fn auth(&mut self, a: &Spanned<AuthSpec>) -> Option<Auth> {
        match &a.value {
            AuthSpec::Bearer(t) => self.tmpl(t).map(Auth::Bearer),
            AuthSpec::Basic(b) => Some(Auth::Basic {
                user: self.tmpl(&b.user)?,
                password: self.tmpl(&b.password)?,
            }),
        }
    }
}

/// A parser's multi-line report (a quoted line, a caret, `= expected ...`) as one line: the
/// diagnostic quotes the line itself.
fn one_line(report: &str) -> String {
    let expected = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("= "))
        .map(str::to_owned);
    let at = report.lines().find_map(|l| {
        let (_, loc) = l.split_once("--> ")?;
        loc.trim().split(':').nth(1).map(str::to_owned)
    });
    match (expected, at) {
        (Some(e), Some(c)) => format!("{e} at character {c}"),
        (Some(e), None) => e,
        _ => report.lines().next().unwrap_or(report).trim().to_owned(),
    }
}
