//! Templates (SPEC §6.1): Jinja2 through minijinja with Ansible-flavoured filters, strict
//! undefined, native values for single-expression templates, lazy refs on `object`, and
//! `secret()`. Every template is compiled once, when its stepdef is loaded.

use std::collections::BTreeSet;
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr, Value};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};

use crate::diag::{Diagnostic, Origin};
use crate::model::FieldType;
use crate::secrets::Secrets;
use crate::snapshot::Snapshot;
use crate::store::ObjectRecord;
use crate::yaml::{Node, Source, Spanned};

/// The steps (minijinja instructions) one render may take: a loop that runs away ends in an
/// error saying so instead of a hang. Far above what a real template needs.
pub const FUEL: u64 = 20_000_000;

/// The text one render may produce: a loop printing a big value ends in an error instead of
/// exhausting memory.
pub const MAX_OUTPUT: usize = 16 * 1024 * 1024;

/// How deep macros, includes and lazily rendered variables may recurse.
pub const RECURSION_LIMIT: usize = 64;

/// The bounds every template environment of stepsync runs with.
pub(crate) fn set_bounds(env: &mut Environment<'_>) {
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_fuel(Some(FUEL));
}

/// Renders `tmpl` into a string of at most [`MAX_OUTPUT`] bytes.
pub(crate) fn render_bounded<V: Into<Value>>(
    tmpl: &minijinja::Template<'_, '_>,
    ctx: V,
) -> Result<String, minijinja::Error> {
    struct Capped(Vec<u8>);
    impl std::io::Write for Capped {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0.len() + buf.len() > MAX_OUTPUT {
                return Err(std::io::Error::other("output limit"));
            }
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = Capped(Vec::new());
    tmpl.render_captured_to(ctx, &mut out)?;
    // minijinja writes only what it has as `str`.
    String::from_utf8(out.0).map_err(|e| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("output is not UTF-8: {e}"),
        )
    })
}

/// Names a template may not use for an attribute: they are the context's own.
pub const RESERVED: &[&str] = &["object", "vars", "result", "secret"];

/// A compiled template string and where it was written.
#[derive(Debug, Clone)]
pub struct Tmpl {
    kind: Kind,
    pub text: String,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
enum Kind {
    /// No template syntax: the string as it is.
    Literal,
    /// A single `{{ expr }}`: yields the expression's native value.
    Native(String),
    /// Anything else: yields a string.
    Text(String),
}

/// A YAML value whose strings are templates (a REST body, payload `vars`).
#[derive(Debug, Clone)]
pub enum TValue {
    Lit(serde_json::Value),
    Tmpl(Tmpl),
    Seq(Vec<TValue>),
    Map(Vec<(String, TValue)>),
}

/// A template that failed to render, with where it was written (as data: the CLI shows
/// the source line from it, nothing parses it back out of the message).
#[derive(Debug, Clone, thiserror::Error)]
pub struct RenderError {
    /// The template's place in its file; `None` for a failure of the rendered value as a
    /// whole (a body that is not JSON), whose message says what.
    pub origin: Option<Origin>,
    pub message: String,
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.origin {
            Some(o) => write!(f, "{}: {}", o.short(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl RenderError {
    /// A diagnostic at the template, its message passed through `clean` (secret masking).
    pub fn diagnostic(&self, clean: impl Fn(&str) -> String) -> Diagnostic {
        let message = clean(&self.message);
        match &self.origin {
            Some(o) => o.diag(message),
            None => Diagnostic::error(message),
        }
    }
}

pub struct Templates {
    env: Environment<'static>,
    count: usize,
}

impl Templates {
    pub fn new(secrets: Arc<Secrets>) -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        set_bounds(&mut env);
        // A template's last newline is part of the value, as written in the stepdef.
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        env.add_function(
            "secret",
            move |name: &str| -> Result<String, minijinja::Error> {
                secrets
                    .get(name)
                    .map(str::to_owned)
                    .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e))
            },
        );
        add_filters(&mut env);
        // Schema fields an object leaves unset are `none` (SPEC §5.1): rendered as nothing in
        // a string, and replaced by `default(x)` as an undefined value would be.
        env.set_formatter(|out, state, value| {
            if value.is_none() {
                Ok(())
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        env.add_filter("default", default_filter);
        env.add_filter("d", default_filter);
        Templates { env, count: 0 }
    }

    /// Compiles `text`; syntax errors point at where the string was written.
    pub fn compile(&mut self, text: &str, origin: Origin) -> Result<Tmpl, Diagnostic> {
        let kind = if !text.contains("{{") && !text.contains("{%") && !text.contains("{#") {
            Kind::Literal
        } else {
            self.count += 1;
            let name = format!("{}#{}", origin.short(), self.count);
            let (source, kind) = match single_expression(text) {
                Some(expr) => (
                    format!("{{% set __native = ({}) %}}", defined_chains(expr)),
                    Kind::Native(name.clone()),
                ),
                None => (
                    defined_chains_in(text).into_owned(),
                    Kind::Text(name.clone()),
                ),
            };
            self.env.add_template_owned(name, source).map_err(|e| {
                origin.diag(format!(
                    "template syntax error: {}",
                    e.detail().unwrap_or(&e.to_string())
                ))
            })?;
            kind
        };
        Ok(Tmpl {
            kind,
            text: text.to_owned(),
            origin,
        })
    }

    /// The variables `t` reads without setting them, with trivial attribute paths spelled
    /// out (`object.site.name`); what `validate` checks against the schema and attributes.
    pub fn free_variables(&self, t: &Tmpl) -> BTreeSet<String> {
        let name = match &t.kind {
            Kind::Literal => return BTreeSet::new(),
            Kind::Native(n) | Kind::Text(n) => n,
        };
        self.env
            .get_template(name)
            .map(|tmpl| tmpl.undeclared_variables(true).into_iter().collect())
            .unwrap_or_default()
    }

    /// Whether a filter of that name exists. minijinja looks filters up only when it renders,
    /// so this applies one to `none`: what is missing fails as unknown, whatever else happens.
    pub fn has_filter(&self, name: &str) -> bool {
        env_has_filter(&self.env, name)
    }

    /// Whether a test (`x is defined`) of that name exists; see [`Templates::has_filter`].
    pub fn has_test(&self, name: &str) -> bool {
        env_has_test(&self.env, name)
    }

    /// A function or value every template has (`range`, `lookup`, `secret`, ...).
    pub fn is_global(&self, name: &str) -> bool {
        self.env.globals().any(|(k, _)| k == name)
    }

    /// Compiles a YAML string value.
    pub fn compile_spanned(
        &mut self,
        src: &Source,
        s: &Spanned<String>,
    ) -> Result<Tmpl, Diagnostic> {
        self.compile(&s.value, src.origin(s))
    }

    /// Compiles every string of a YAML tree.
    pub fn compile_value(
        &mut self,
        src: &Source,
        node: &Spanned<Node>,
    ) -> Result<TValue, Diagnostic> {
        Ok(match &node.value {
            Node::Str(s) => match self.compile(s, src.origin(node))? {
                t if matches!(t.kind, Kind::Literal) => {
                    TValue::Lit(serde_json::Value::String(t.text))
                }
                t => TValue::Tmpl(t),
            },
            Node::Seq(items) => TValue::Seq(
                items
                    .iter()
                    .map(|i| self.compile_value(src, i))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Map(entries) => TValue::Map(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.value.clone(), self.compile_value(src, v)?)))
                    .collect::<Result<_, Diagnostic>>()?,
            ),
            other => TValue::Lit(other.to_json()),
        })
    }

    /// Renders `t` in `ctx`: the native value for a single expression, else a string.
    pub fn render(&self, t: &Tmpl, ctx: &Value) -> Result<serde_json::Value, RenderError> {
        let err = |e: minijinja::Error| RenderError {
            origin: Some(t.origin.clone()),
            message: describe(&e),
        };
        // An undefined value is named by the expression that read it: the error's range in
        // the compiled source.
        let err_in = |source: &str| {
            let source = source.to_owned();
            move |e: minijinja::Error| {
                let mut message = describe(&e);
                if e.kind() == ErrorKind::UndefinedError
                    && let Some(expr) = e.range().and_then(|r| source.get(r))
                {
                    message = format!("{message}: `{}` is undefined", expr.trim());
                }
                RenderError {
                    origin: Some(t.origin.clone()),
                    message,
                }
            }
        };
        match &t.kind {
            Kind::Literal => Ok(serde_json::Value::String(t.text.clone())),
            Kind::Text(name) => {
                let tmpl = self.env.get_template(name).map_err(err)?;
                render_bounded(&tmpl, ctx)
                    .map(serde_json::Value::String)
                    .map_err(err_in(tmpl.source()))
            }
            Kind::Native(name) => {
                let tmpl = self.env.get_template(name).map_err(err)?;
                let captured = tmpl.render_captured(ctx).map_err(err_in(tmpl.source()))?;
                let value = captured
                    .state()
                    .lookup("__native")
                    .unwrap_or(Value::UNDEFINED);
                to_json(&value).map_err(|message| RenderError {
                    origin: Some(t.origin.clone()),
                    // Say which expression: the location points at the string only.
                    message: match single_expression(&t.text) {
                        Some(expr) if value.is_undefined() => format!("`{expr}` is undefined"),
                        _ => message,
                    },
                })
            }
        }
    }

    /// Renders `t` and insists on a string (URLs, headers).
    pub fn render_string(&self, t: &Tmpl, ctx: &Value) -> Result<String, RenderError> {
        match self.render(t, ctx)? {
            serde_json::Value::String(s) => Ok(s),
            other => Ok(other.to_string()),
        }
    }

    pub fn render_value(&self, v: &TValue, ctx: &Value) -> Result<serde_json::Value, RenderError> {
        Ok(match v {
            TValue::Lit(l) => l.clone(),
            TValue::Tmpl(t) => self.render(t, ctx)?,
            TValue::Seq(items) => serde_json::Value::Array(
                items
                    .iter()
                    .map(|i| self.render_value(i, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            TValue::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.render_value(v, ctx)?)))
                    .collect::<Result<_, RenderError>>()?,
            ),
        })
    }
}

/// The filters (`x | name`) and tests (`x is name`) a template's tags use, read off its
/// text: strings and comments skipped. What `validate` checks exist.
pub fn filters_and_tests(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut filters, mut tests) = (Vec::new(), Vec::new());
    let chars: Vec<char> = text.chars().collect();
    let ident = |i: &mut usize| -> String {
        while chars.get(*i).is_some_and(|c| c.is_whitespace()) {
            *i += 1;
        }
        let start = *i;
        while chars
            .get(*i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            *i += 1;
        }
        chars[start..*i].iter().collect()
    };
    let mut i = 0;
    let mut in_tag = false;
    while i < chars.len() {
        let two = (chars[i], chars.get(i + 1).copied().unwrap_or(' '));
        if !in_tag {
            match two {
                ('{', '{') | ('{', '%') => {
                    in_tag = true;
                    i += 2;
                }
                ('{', '#') => {
                    // A comment ends at `#}`.
                    i += 2;
                    while i < chars.len() && !(chars[i] == '#' && chars.get(i + 1) == Some(&'}')) {
                        i += 1;
                    }
                    i += 2;
                }
                _ => i += 1,
            }
            continue;
        }
        match two {
            ('}', '}') | ('%', '}') => {
                in_tag = false;
                i += 2;
            }
            (q @ ('\'' | '"'), _) => {
                i += 1;
                while i < chars.len() && chars[i] != q {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            ('|', _) => {
                i += 1;
                let name = ident(&mut i);
                if !name.is_empty() {
                    filters.push(name);
                }
            }
            (c, _) if c.is_ascii_alphabetic() || c == '_' => {
                let after_dot = i > 0 && chars[i - 1] == '.';
                let word = ident(&mut i);
                if word == "is" && !after_dot {
                    let mut name = ident(&mut i);
                    if name == "not" {
                        name = ident(&mut i);
                    }
                    if !name.is_empty() {
                        tests.push(name);
                    }
                }
            }
            _ => i += 1,
        }
    }
    (filters, tests)
}

/// Whether `env` has a filter of that name. minijinja looks filters up only when it renders,
/// so this applies one to `none`: what is missing fails as unknown, whatever else happens.
pub fn env_has_filter(env: &Environment<'_>, name: &str) -> bool {
    let result = env
        .compile_expression_owned(format!("none | {name}"))
        .and_then(|e| e.eval(()));
    !matches!(result, Err(e) if e.kind() == ErrorKind::UnknownFilter)
}

/// Whether `env` has a test of that name; see [`env_has_filter`].
pub fn env_has_test(env: &Environment<'_>, name: &str) -> bool {
    let result = env
        .compile_expression_owned(format!("none is {name}"))
        .and_then(|e| e.eval(()));
    !matches!(result, Err(e) if e.kind() == ErrorKind::UnknownTest)
}

/// The lookups a template calls by a literal name: `lookup('file', ...)`, `query('x')`,
/// `q('x')`, with their byte offsets in `text`.
pub fn lookups_called(text: &str) -> Vec<(usize, String)> {
    static RE: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"\b(?:lookup|query|q)\(\s*(?:'([\w.]+)'|"([\w.]+)")"#).ok()
    });
    let Some(re) = RE.as_ref() else {
        return Vec::new();
    };
    re.captures_iter(text)
        .filter_map(|c| {
            let m = c.get(1).or_else(|| c.get(2))?;
            Some((m.start(), m.as_str().to_owned()))
        })
        .collect()
}

/// The expression inside `{{ ... }}` when that is the whole template.
/// Exactly `{{ expr }}`, nothing around it: text around the braces (even a newline) makes the
/// result a string, as in Ansible.
pub(crate) fn single_expression(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%"))
        .then_some(inner.trim())
}

pub(crate) fn describe(e: &minijinja::Error) -> String {
    // The bounds of `set_bounds` and `render_bounded`, said with their values.
    match e.kind() {
        ErrorKind::OutOfFuel => {
            return format!(
                "the template ran out of fuel: more than {FUEL} steps in one render (a loop \
                 that is too long or never ends?)"
            );
        }
        ErrorKind::WriteFailure => {
            return format!(
                "the template's output exceeds {} MB, the most one render may produce",
                MAX_OUTPUT / (1024 * 1024)
            );
        }
        _ if e.detail() == Some("recursion limit exceeded") => {
            return format!(
                "recursion limit exceeded: more than {RECURSION_LIMIT} levels (a macro or \
                 include that calls itself?)"
            );
        }
        _ => {}
    }
    let mut msg = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(src) = std::error::Error::source(e) {
        msg.push_str(&format!(": {src}"));
    }
    msg
}

/// A template value as JSON. Undefined is an error: strict undefined applies to native
/// values too.
fn to_json(v: &Value) -> Result<serde_json::Value, String> {
    if v.is_undefined() {
        return Err("the expression is undefined".to_owned());
    }
    serde_json::to_value(v).map_err(|e| format!("value cannot be represented as JSON: {e}"))
}

/// Any serializable value as a template value.
pub fn from_serde<T: serde::Serialize>(v: T) -> Value {
    Value::from(minijinja::value::Serde(v))
}

mod defined;
mod filters;
pub(crate) use filters::python_backrefs;

pub(crate) use defined::{in_expression as defined_chains, in_template as defined_chains_in};
pub(crate) use filters::add_filters;
use filters::default_filter;
pub use filters::shell_quote;

// ---- the object view ------------------------------------------------------------------------

/// `object` in templates: fields by name, `ref` fields followed lazily, `refs` as lists.
/// What a plan renders for a value only the backend will know (SPEC §9).
pub const KNOWN_AFTER_APPLY: &str = "(known after apply)";

pub struct ObjectView {
    pub rec: Arc<ObjectRecord>,
    pub world: Arc<Snapshot>,
}

impl ObjectView {
    pub fn value(rec: Arc<ObjectRecord>, world: Arc<Snapshot>) -> Value {
        Value::from_object(ObjectView { rec, world })
    }

    fn field_names(&self) -> Vec<String> {
        match self.world.schema.model(&self.rec.model) {
            Some(m) => m
                .fields
                .keys()
                .filter(|f| self.rec.fields.contains_key(*f) || self.rec.feedback.contains_key(*f))
                .cloned()
                .collect(),
            None => self.rec.fields.keys().cloned().collect(),
        }
    }
}

impl std::fmt::Debug for ObjectView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.rec.name())
    }
}

impl Object for ObjectView {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        let raw = self
            .rec
            .fields
            .get(name)
            .or_else(|| self.rec.feedback.get(name));
        let field = self
            .world
            .schema
            .model(&self.rec.model)
            .and_then(|m| m.fields.get(name));
        match (field.map(|f| &f.ty), raw) {
            (Some(FieldType::Ref(to)), Some(serde_json::Value::String(k))) => self
                .world
                .get(to, k)
                .map(|r| ObjectView::value(r, self.world.clone())),
            (Some(FieldType::Refs(to)), Some(serde_json::Value::Array(keys))) => Some(Value::from(
                keys.iter()
                    .filter_map(|k| k.as_str())
                    .filter_map(|k| self.world.get(to, k))
                    .map(|r| ObjectView::value(r, self.world.clone()))
                    .collect::<Vec<_>>(),
            )),
            (_, Some(v)) => Some(from_serde(v)),
            (None, None) => match name {
                "key" => Some(Value::from(self.rec.key.clone())),
                "model" => Some(Value::from(self.rec.model.clone())),
                _ => None,
            },
            // Feedback the backend has not given yet: a plan shows what it will be.
            (Some(_), None)
                if self.world.is_planning()
                    && field.is_some_and(|f| f.feedback)
                    && self.rec.book.last_success_at.is_none() =>
            {
                Some(Value::from(KNOWN_AFTER_APPLY))
            }
            // A schema field the object leaves unset is `none`; `default()` replaces it.
            (Some(_), None) => Some(Value::from(())),
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Iter(Box::new(self.field_names().into_iter().map(Value::from)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;
    use std::path::PathBuf;

    fn origin() -> Origin {
        Origin {
            file: PathBuf::from("stepdefs/x.yaml"),
            pos: Some(crate::diag::Pos { line: 3, col: 5 }),
            text: None,
        }
    }

    fn render(text: &str, ctx: Value) -> Result<serde_json::Value, RenderError> {
        let mut t = Templates::new(Arc::new(Secrets::default()));
        let tmpl = t.compile(text, origin()).unwrap();
        t.render(&tmpl, &ctx)
    }

    #[test]
    fn python_methods_and_defined_chains_in_stepdefs() {
        let ctx = context! { labels => context! { app => "web" }, csv => "a,b" };
        assert_eq!(
            render(
                "{% for k, v in labels.items() %}{{ k }}={{ v }}{% endfor %} {{ csv.split(',') | last }} {{ csv.upper() }}",
                ctx.clone()
            )
            .unwrap(),
            serde_json::json!("app=web b A,B")
        );
        assert_eq!(
            render("{{ nope.a.b is not defined }}", ctx.clone()).unwrap(),
            serde_json::json!(true)
        );
        // Anything else undefined is still an error.
        assert!(render("{{ nope.a }}", ctx).is_err());
    }

    #[test]
    fn single_expression_yields_native_values() {
        let ctx = context! { n => 8080, xs => vec![1, 2] };
        assert_eq!(
            render("{{ n }}", ctx.clone()).unwrap(),
            serde_json::json!(8080)
        );
        assert_eq!(
            render("{{ xs }}", ctx.clone()).unwrap(),
            serde_json::json!([1, 2])
        );
        // Text around the braces, even a newline, makes it a string, as in Ansible.
        assert_eq!(
            render(" {{ xs }} ", ctx.clone()).unwrap(),
            serde_json::json!(" [1, 2] ")
        );
        assert_eq!(
            render("{{ n }}\n", ctx.clone()).unwrap(),
            serde_json::json!("8080\n")
        );
        assert_eq!(
            render("port {{ n }}", ctx.clone()).unwrap(),
            serde_json::json!("port 8080")
        );
        assert_eq!(render("plain", ctx).unwrap(), serde_json::json!("plain"));
    }

    #[test]
    fn undefined_is_an_error_naming_the_stepdef() {
        let e = render("{{ nope }}", context! {}).unwrap_err();
        assert_eq!(
            e.origin.map(|o| o.short()).as_deref(),
            Some("stepdefs/x.yaml:3:5")
        );
        assert!(e.message.contains("undefined"), "{}", e.message);
        let e = render("a {{ nope.x }}", context! {}).unwrap_err();
        assert!(e.message.contains("undefined"));
        // The expression that read the undefined value is named.
        let ctx = context! { vars => context! { controller => "http://c" } };
        let e = render("{{ vars.controler }}/x", ctx).unwrap_err();
        assert!(e.message.contains("`vars.controler`"), "{}", e.message);
    }

    #[test]
    fn none_renders_as_nothing_and_takes_defaults() {
        let ctx = context! { x => () };
        assert_eq!(
            render("[{{ x }}]", ctx.clone()).unwrap(),
            serde_json::json!("[]")
        );
        assert_eq!(
            render("{{ x }}", ctx.clone()).unwrap(),
            serde_json::Value::Null
        );
        assert_eq!(
            render("{{ x | default(5) }}", ctx.clone()).unwrap(),
            serde_json::json!(5)
        );
        assert_eq!(
            render("{{ y | default('u') }}", ctx.clone()).unwrap(),
            serde_json::json!("u")
        );
        assert_eq!(
            render("{{ '' | default('e', true) }}", ctx).unwrap(),
            serde_json::json!("e")
        );
    }

    #[test]
    fn urlencode_keeps_a_value_in_one_path_segment() {
        let ctx = context! { k => "../admin x&y=é" };
        assert_eq!(
            render("/sites/{{ k | urlencode }}", ctx).unwrap(),
            serde_json::json!("/sites/..%2Fadmin%20x%26y%3D%C3%A9")
        );
    }

    #[test]
    fn values_are_never_rendered_twice() {
        let v = render("{{ x }}", context! { x => "{{ 7 * 7 }}" }).unwrap();
        assert_eq!(v, serde_json::json!("{{ 7 * 7 }}"));
    }

    #[test]
    fn ansible_filters() {
        let ctx = context! { s => "a b", m => context!{ k => 1 } };
        assert_eq!(
            render("{{ s | quote }}", ctx.clone()).unwrap(),
            serde_json::json!("'a b'")
        );
        assert_eq!(
            render("{{ m | to_json }}", ctx.clone()).unwrap(),
            serde_json::json!("{\"k\":1}")
        );
        assert_eq!(
            render(
                "{{ 'x1y22' | regex_replace('(\\\\d+)', '<\\\\1>') }}",
                ctx.clone()
            )
            .unwrap(),
            serde_json::json!("x<1>y<22>")
        );
        assert_eq!(
            render("{{ 'hi' | b64encode }}", ctx.clone()).unwrap(),
            serde_json::json!("aGk=")
        );
        assert_eq!(
            render("{{ '{\"a\": 2}' | from_json }}", ctx.clone()).unwrap(),
            serde_json::json!({"a": 2})
        );
        assert_eq!(
            render("{{ missing | default('d') }}", ctx).unwrap(),
            serde_json::json!("d")
        );
    }

    #[test]
    fn syntax_errors_are_located() {
        let mut t = Templates::new(Arc::new(Secrets::default()));
        let d = t.compile("{{ a + }}", origin()).unwrap_err();
        assert_eq!(d.pos, origin().pos);
        assert!(d.message.contains("syntax"), "{}", d.message);
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("abc"), "abc");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(shell_quote(""), "''");
    }
}
