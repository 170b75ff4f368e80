//! Actuator step definitions (`stepdefs/*.yaml`, SPEC §6): parsed once into typed
//! structures whose templates are already compiled.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::in_dir;
use crate::diag::{Diagnostic, Diagnostics, Origin, expected_hint};
use crate::duration::Dur;
use crate::model::Schema;
use crate::model::schema::yaml_files;
use crate::template::{RESERVED, TValue, Templates, Tmpl};
use crate::yaml::{Node, Source, Spanned};

pub const STEPDEFS_DIR: &str = "stepdefs";

/// One actuator: how objects of `model` reach the backend.
#[derive(Debug)]
pub struct Actuator {
    pub model: String,
    pub attributes: Vec<(String, TValue)>,
    pub sync: Option<Payload>,
    pub delete: Option<Payload>,
    pub feedback: Vec<(String, Feedback)>,
    pub defer_when: Option<Tmpl>,
    pub concurrency: Option<NonZeroU32>,
    pub resync: Option<Dur>,
    pub file: PathBuf,
}

#[derive(Debug)]
pub struct Payload {
    pub kind: PayloadKind,
    /// Extra attributes for this payload only.
    pub vars: Vec<(String, TValue)>,
}

// Parsed once per stepdef and never copied, so the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum PayloadKind {
    Rest(Rest),
    Playbook(PlaybookRef),
}

impl PayloadKind {
    pub fn name(&self) -> &'static str {
        match self {
            PayloadKind::Rest(_) => "rest",
            PayloadKind::Playbook(_) => "playbook",
        }
    }
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Rest {
    /// One request, sent on every run.
    Simple(Request),
    /// Observe first, then create, update or nothing.
    Delta {
        observe: Request,
        absent: Vec<u16>,
        create: Option<Request>,
        update: Request,
        /// A JSONPath selecting the part of the observed body compared with the desired body.
        compare: Option<String>,
    },
}

#[derive(Debug)]
pub struct Request {
    pub method: reqwest::Method,
    pub url: Tmpl,
    pub headers: Vec<(String, Tmpl)>,
    pub auth: Option<Auth>,
    pub body: Option<TValue>,
    pub timeout: Option<Dur>,
    pub expect: Option<Vec<u16>>,
}

#[derive(Debug)]
pub enum Auth {
    Bearer(Tmpl),
    Basic { user: Tmpl, password: Tmpl },
}

#[derive(Debug)]
pub struct PlaybookRef {
    /// Relative to `playbooks/`.
    pub playbook: PathBuf,
    pub hosts: Option<Tmpl>,
    /// Where the stepdef names the playbook, for "does not exist".
    pub origin: Origin,
}

#[derive(Debug)]
pub enum Feedback {
    Template(Tmpl),
    JsonPath(String),
}

/// Every actuator of a service, with the templates they compiled.
pub struct Stepdefs {
    pub actuators: IndexMap<String, Actuator>,
    pub templates: Templates,
}

impl Stepdefs {
    pub fn actuator(&self, model: &str) -> Option<&Actuator> {
        self.actuators.get(model)
    }

    /// Reads every file of `stepdefs/`, reporting every problem found.
    pub fn load(
        dir: &Path,
        schema: &Schema,
        mut templates: Templates,
    ) -> Result<Stepdefs, Diagnostics> {
        let root = in_dir(dir, Path::new(STEPDEFS_DIR));
        let mut diags = Diagnostics::default();
        let mut actuators: IndexMap<String, Actuator> = IndexMap::new();
        let files = if root.is_dir() {
            yaml_files(&root)
                .map_err(|e| Diagnostic::in_file(format!("cannot list: {e}"), &root))?
        } else {
            Vec::new()
        };
        for file in files {
            let src = match Source::read(&file) {
                Ok(s) => s,
                Err(d) => {
                    diags.push(d);
                    continue;
                }
            };
            if src.is_blank() {
                continue;
            }
            let spec: StepdefSpec = match src.parse() {
                Ok(s) => s,
                Err(d) => {
                    diags.push(d);
                    continue;
                }
            };
            let mut cx = Cx {
                src: &src,
                templates: &mut templates,
                diags: &mut diags,
            };
            let model_at = src.origin(&spec.model);
            if let Some(a) = cx.actuator(spec, schema) {
                if let Some(prev) = actuators.get(&a.model) {
                    diags.push(
                        model_at
                            .diag(format!(
                                "a second actuator for model `{}` (the first is in {})",
                                a.model,
                                prev.file.display()
                            ))
                            .with_hint("each model has exactly one actuator"),
                    );
                } else {
                    actuators.insert(a.model.clone(), a);
                }
            }
        }
        diags.into_result()?;
        Ok(Stepdefs {
            actuators,
            templates,
        })
    }
}

// ---- the file format ----------------------------------------------------------------------

// The derived JSON Schemas (`stepsync schema stepdef`, see `crate::json_schema`) describe
// the values inside the `Spanned` wrappers, which carry positions only. The `extend`s state
// the checks of `Cx` that a schema can express, so editors flag them while typing.

/// A stepsync step definition: how the objects of one model reach their backend. Strings
/// in `attributes`, payloads and `feedback` are Jinja2 templates.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "stepsync step definition (stepdefs/*.yaml)")]
pub(crate) struct StepdefSpec {
    /// The step kind. Only `Actuator` for now; `Watcher`, `Policy`, `PullStep` and
    /// `EventStep` are planned.
    #[schemars(with = "String", extend("enum" = ["Actuator"]))]
    kind: Spanned<String>,
    /// The model whose objects this actuator synchronizes (one actuator per model).
    #[schemars(with = "String")]
    model: Spanned<String>,
    /// Template variables (the `get_extra_attributes` role): name -> template or value, with
    /// `object`, `vars` and `secret()` in context. The names `object`, `vars`, `result` and
    /// `secret` are reserved.
    #[serde(default)]
    #[schemars(
        with = "IndexMap<String, serde_json::Value>",
        transform = crate::json_schema::forbid_reserved
    )]
    attributes: IndexMap<Spanned<String>, Spanned<Node>>,
    /// What creates or updates the backend object.
    #[serde(default)]
    #[schemars(with = "Option<PayloadSpec>")]
    sync: Option<Spanned<PayloadSpec>>,
    /// What deletes the backend object.
    #[serde(default)]
    #[schemars(with = "Option<PayloadSpec>")]
    delete: Option<Spanned<PayloadSpec>>,
    /// Feedback field -> a template (with `result` in context) or `{jsonpath: ...}`, applied
    /// to the REST body or to the playbook result.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, FeedbackSpec>")]
    feedback: IndexMap<Spanned<String>, Spanned<FeedbackSpec>>,
    /// A template that classifies an outcome as deferred (REST default:
    /// `result.status in [429, 503]`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    defer_when: Option<Spanned<String>>,
    /// Runs of this actuator in flight at once.
    #[serde(default, deserialize_with = "crate::config::opt_nonzero")]
    concurrency: Option<NonZeroU32>,
    /// Re-actuate in-sync objects of this model this often.
    #[serde(default)]
    resync: Option<Dur>,
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
struct PayloadSpec {
    /// HTTP requests: the simple form (`method`, `url`, ...) or the delta form (`observe`,
    /// `create`, `update`).
    #[serde(default)]
    #[schemars(with = "Option<RestSpec>")]
    rest: Option<Spanned<RestSpec>>,
    /// A playbook, relative to `playbooks/`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    playbook: Option<Spanned<String>>,
    /// A template overriding the play's `hosts` (playbooks only).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    hosts: Option<Spanned<String>>,
    /// Extra attributes for this payload only.
    #[serde(default)]
    #[schemars(
        with = "IndexMap<String, serde_json::Value>",
        transform = crate::json_schema::forbid_reserved
    )]
    vars: IndexMap<Spanned<String>, Spanned<Node>>,
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
struct RestSpec {
    /// Simple form: the HTTP method (default GET).
    #[serde(default)]
    #[schemars(with = "Option<String>", extend(
            "pattern" = crate::json_schema::HTTP_METHOD,
            "patternErrorMessage" = "not an HTTP method",
            "examples" = crate::json_schema::HTTP_METHODS
        ))]
    method: Option<Spanned<String>>,
    /// Simple form: the URL (a template).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    url: Option<Spanned<String>>,
    /// Header name -> value (a template).
    #[serde(default)]
    #[schemars(with = "IndexMap<String, String>", extend("propertyNames" = {
            "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
            "patternErrorMessage": "not a valid header name"
        }))]
    headers: IndexMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<AuthSpec>")]
    auth: Option<Spanned<AuthSpec>>,
    /// The request body, sent as JSON; strings in it are templates.
    #[serde(default)]
    #[schemars(with = "serde_json::Value")]
    body: Option<Spanned<Node>>,
    #[serde(default)]
    timeout: Option<Dur>,
    /// The statuses that mean success (default: any 2xx; for a delete also 404).
    #[serde(default)]
    expect: Option<Vec<u16>>,
    /// Delta form: the read-only request that fetches the backend's current state.
    #[serde(default)]
    #[schemars(with = "Option<ObserveSpec>")]
    observe: Option<Spanned<ObserveSpec>>,
    /// Delta form: sent when the observed object is absent (else `update` is).
    #[serde(default)]
    #[schemars(with = "Option<RequestSpec>")]
    create: Option<Spanned<RequestSpec>>,
    /// Delta form: sent when the observed object differs from the desired body.
    #[serde(default)]
    #[schemars(with = "Option<RequestSpec>")]
    update: Option<Spanned<RequestSpec>>,
    /// Delta form: the part of the observed body compared with the desired body (default:
    /// the whole body).
    #[serde(default)]
    #[schemars(with = "Option<CompareSpec>")]
    compare: Option<Spanned<CompareSpec>>,
}

/// One HTTP request.
#[derive(Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Request", extend("required" = ["url"]))]
struct RequestSpec {
    /// The HTTP method (default GET).
    #[serde(default)]
    #[schemars(with = "Option<String>", extend(
            "pattern" = crate::json_schema::HTTP_METHOD,
            "patternErrorMessage" = "not an HTTP method",
            "examples" = crate::json_schema::HTTP_METHODS
        ))]
    method: Option<Spanned<String>>,
    /// The URL (a template).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    url: Option<Spanned<String>>,
    /// Header name -> value (a template).
    #[serde(default)]
    #[schemars(with = "IndexMap<String, String>", extend("propertyNames" = {
            "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
            "patternErrorMessage": "not a valid header name"
        }))]
    headers: IndexMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<AuthSpec>")]
    auth: Option<Spanned<AuthSpec>>,
    /// The request body, sent as JSON; strings in it are templates.
    #[serde(default)]
    #[schemars(with = "serde_json::Value")]
    body: Option<Spanned<Node>>,
    #[serde(default)]
    timeout: Option<Dur>,
    /// The statuses that mean success (default: any 2xx).
    #[serde(default)]
    expect: Option<Vec<u16>>,
}

/// The delta form's read-only request (GET or HEAD).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Observe")]
struct ObserveSpec {
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
    method: Option<Spanned<String>>,
    /// The URL (a template).
    #[schemars(with = "String")]
    url: Spanned<String>,
    /// Header name -> value (a template).
    #[serde(default)]
    #[schemars(with = "IndexMap<String, String>", extend("propertyNames" = {
            "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
            "patternErrorMessage": "not a valid header name"
        }))]
    headers: IndexMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<AuthSpec>")]
    auth: Option<Spanned<AuthSpec>>,
    #[serde(default)]
    timeout: Option<Dur>,
    /// The statuses that mean the object does not exist (default: 404).
    #[serde(default)]
    absent: Option<Vec<u16>>,
}

/// What part of the observed body to compare.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Compare")]
struct CompareSpec {
    observed: JsonPathSpec,
}

/// A JSONPath expression such as `$.id`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "JsonPath")]
struct JsonPathSpec {
    #[schemars(
        with = "String",
        extend("pattern" = "^\\$", "patternErrorMessage" = "a JSONPath starts with `$`, e.g. `$.id`")
    )]
    jsonpath: Spanned<String>,
}

/// Request authentication.
#[derive(Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
#[schemars(rename = "Auth")]
enum AuthSpec {
    /// `Authorization: Bearer <token>` (a template, e.g. `{{ secret('token') }}`).
    Bearer(#[schemars(with = "String")] Spanned<String>),
    /// HTTP basic authentication.
    Basic(BasicSpec),
}

#[derive(Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BasicAuth")]
struct BasicSpec {
    /// The user (a template).
    #[schemars(with = "String")]
    user: Spanned<String>,
    /// The password (a template, e.g. `{{ secret('password') }}`).
    #[schemars(with = "String")]
    password: Spanned<String>,
}

/// How a feedback field gets its value: a template, or a JSONPath into the result.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Feedback")]
enum FeedbackSpec {
    Template(String),
    JsonPath(JsonPathSpec),
}

// ---- checking -----------------------------------------------------------------------------

struct Cx<'a> {
    src: &'a Source,
    templates: &'a mut Templates,
    diags: &'a mut Diagnostics,
}

impl Cx<'_> {
    fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn tmpl(&mut self, s: &Spanned<String>) -> Option<Tmpl> {
        match self.templates.compile_spanned(self.src, s) {
            Ok(t) => Some(t),
            Err(d) => {
                self.error(d);
                None
            }
        }
    }

    fn value(&mut self, n: &Spanned<Node>) -> Option<TValue> {
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

    fn actuator(&mut self, spec: StepdefSpec, schema: &Schema) -> Option<Actuator> {
        match spec.kind.value.as_str() {
            "Actuator" => {}
            k @ ("Watcher" | "Policy" | "PullStep" | "EventStep") => {
                self.error(self.src.diag_at(
                    format!("`kind: {k}` is planned but not supported yet"),
                    &spec.kind,
                ));
                return None;
            }
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

    fn jsonpath(&mut self, s: &Spanned<String>) -> Option<String> {
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

    fn payload(&mut self, p: &Spanned<PayloadSpec>, is_delete: bool) -> Option<Payload> {
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

    fn request<T>(
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
        let mut headers = Vec::new();
        for (k, v) in &f.headers {
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
        let auth = f.auth.as_ref().and_then(|a| self.auth(a));
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
            timeout: f.timeout,
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
