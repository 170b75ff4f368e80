//! Variables and templating for the built-in runner: layered scopes with Ansible's
//! precedence (role defaults < play vars < role vars < attributes < set_fact/register), play
//! and role vars rendered lazily when used, attributes and facts kept as data.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Rest, Value};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value as Json;

use crate::template::{
    add_filters, defined_chains, defined_chains_in, describe, from_serde, render_bounded,
    set_bounds, single_expression,
};

/// What Ansible's `template` action defines as `ansible_managed` (its `DEFAULT_MANAGED_STR`
/// since ansible-core 2.19 dropped the date and user from it).
pub const ANSIBLE_MANAGED: &str = "Ansible managed";

/// The value of `omit`: a module argument that renders to it exactly is dropped, as Ansible
/// drops its omit placeholder (`{{ mode | default(omit) }}`).
pub const OMIT: &str = "__omit_place_holder__stepsync";

/// Module arguments without the ones set to [`OMIT`], in nested maps and lists too.
pub fn drop_omitted(v: Json) -> Json {
    match v {
        Json::Object(m) => Json::Object(
            m.into_iter()
                .filter(|(_, v)| v.as_str() != Some(OMIT))
                .map(|(k, v)| (k, drop_omitted(v)))
                .collect(),
        ),
        Json::Array(items) => Json::Array(
            items
                .into_iter()
                .filter(|v| v.as_str() != Some(OMIT))
                .map(drop_omitted)
                .collect(),
        ),
        other => other,
    }
}

/// The magic variables of one task: `role_path` (in a role) and `ansible_search_path`, the
/// directories Ansible's lookups search in order — the role's, the task file's, the
/// playbook's.
pub fn task_magic(
    playbook_dir: &Path,
    role_dir: Option<&Path>,
    task_file: &Path,
) -> BTreeMap<String, Val> {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut search: Vec<PathBuf> = Vec::new();
    let mut layer = BTreeMap::new();
    if let Some(r) = role_dir {
        let r = abs(r);
        layer.insert(
            "role_path".to_owned(),
            Val::Data(Json::String(r.display().to_string())),
        );
        search.push(r);
    }
    for d in [task_file.parent().map(abs), Some(abs(playbook_dir))]
        .into_iter()
        .flatten()
    {
        if !search.contains(&d) {
            search.push(d);
        }
    }
    layer.insert(
        "ansible_search_path".to_owned(),
        Val::Data(Json::Array(
            search
                .iter()
                .map(|d| Json::String(d.display().to_string()))
                .collect(),
        )),
    );
    layer
}

/// A variable: a template (from a playbook or role) or data (attributes, facts, results).
#[derive(Debug, Clone)]
pub enum Val {
    Tmpl(Json),
    Data(Json),
}

/// Variables in precedence order, lowest first.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    layers: Vec<Arc<BTreeMap<String, Val>>>,
}

impl Scope {
    pub fn push(&mut self, layer: BTreeMap<String, Val>) {
        self.layers.push(Arc::new(layer));
    }

    pub fn with(&self, layer: BTreeMap<String, Val>) -> Scope {
        let mut s = self.clone();
        s.push(layer);
        s
    }

    pub fn get(&self, name: &str) -> Option<&Val> {
        self.layers.iter().rev().find_map(|l| l.get(name))
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.layers.iter().flat_map(|l| l.keys().cloned()).collect();
        v.sort();
        v.dedup();
        v
    }
}

pub fn tmpl_layer(vars: &[(String, Json)]) -> BTreeMap<String, Val> {
    vars.iter()
        .map(|(k, v)| (k.clone(), Val::Tmpl(v.clone())))
        .collect()
}

pub fn data_layer(vars: impl IntoIterator<Item = (String, Json)>) -> BTreeMap<String, Val> {
    vars.into_iter().map(|(k, v)| (k, Val::Data(v))).collect()
}

/// The template engine of the built-in runner.
pub struct Templar {
    env: Environment<'static>,
}

thread_local! {
    // Lazily rendered vars may refer to each other; a cycle must end in an error.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

const MAX_DEPTH: u32 = 64;

impl Default for Templar {
    fn default() -> Self {
        Templar::new()
    }
}

impl Templar {
    pub fn new() -> Templar {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        set_bounds(&mut env);
        // Ansible's Jinja settings: a block tag's newline is dropped, a file's last one kept.
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        add_filters(&mut env);
        // Jinja's result tests on registered results: `x is changed`, `x is failed`, ...
        fn attr(v: &Value, name: &str) -> bool {
            v.get_attr(name).map(|a| a.is_true()).unwrap_or(false)
        }
        env.add_test("changed", |v: Value| attr(&v, "changed"));
        env.add_test("failed", |v: Value| attr(&v, "failed"));
        env.add_test("skipped", |v: Value| attr(&v, "skipped"));
        env.add_test("success", |v: Value| !attr(&v, "failed"));
        env.add_test("succeeded", |v: Value| !attr(&v, "failed"));
        env.add_test("successful", |v: Value| !attr(&v, "failed"));
        // Python's spelling when a value is printed into text: True, False, None.
        env.set_formatter(|out, state, value| {
            if value.kind() == minijinja::value::ValueKind::Bool {
                return out
                    .write_str(if value.is_true() { "True" } else { "False" })
                    .map_err(minijinja::Error::from);
            }
            if value.is_none() {
                return out.write_str("None").map_err(minijinja::Error::from);
            }
            minijinja::escape_formatter(out, state, value)
        });
        // Lookups run on the controller (see `super::lookup`); `query`/`q` always give lists.
        env.add_function(
            "lookup",
            |state: &minijinja::State, kind: &str, terms: Rest<Value>, kw: Kwargs| {
                super::lookup::call(state, kind, terms, kw, false)
            },
        );
        for name in ["query", "q"] {
            env.add_function(
                name,
                |state: &minijinja::State, kind: &str, terms: Rest<Value>, kw: Kwargs| {
                    super::lookup::call(state, kind, terms, kw, true)
                },
            );
        }
        Templar { env }
    }

    pub fn context(self: &Arc<Self>, scope: &Scope) -> Value {
        Value::from_object(Ctx {
            scope: scope.clone(),
            templar: self.clone(),
        })
    }

    /// Renders every string of `v` (a single `{{ expr }}` keeps its type).
    pub fn render(&self, v: &Json, ctx: &Value) -> Result<Json, String> {
        Ok(match v {
            Json::String(s) => self.render_str(s, ctx)?,
            Json::Array(items) => Json::Array(
                items
                    .iter()
                    .map(|i| self.render(i, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Json::Object(m) => Json::Object(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), self.render(v, ctx)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    pub fn render_str(&self, s: &str, ctx: &Value) -> Result<Json, String> {
        if !s.contains("{{") && !s.contains("{%") {
            return Ok(Json::String(s.to_owned()));
        }
        if let Some(expr) = single_expression(s) {
            let v = self.eval(expr, ctx)?;
            if v.is_undefined() {
                return Err(format!("`{expr}` is undefined"));
            }
            return serde_json::to_value(&v).map_err(|e| e.to_string());
        }
        let out = self.render_template(s, ctx)?;
        Ok(literal(&out).unwrap_or(Json::String(out)))
    }

    /// Renders a template file's text (the `template` module), within the bounds of
    /// [`render_bounded`].
    pub fn render_template(&self, text: &str, ctx: &Value) -> Result<String, String> {
        self.env
            .template_from_str(&defined_chains_in(text))
            .and_then(|t| render_bounded(&t, ctx))
            .map_err(|e| describe(&e))
    }

    /// Renders a template file for the `template` module as Ansible's template action does:
    /// `{% include %}`, `{% import %}` and `{% extends %}` find their files in `search`, in
    /// order, and `ansible_managed` is defined.
    pub fn render_template_file(
        &self,
        text: &str,
        ctx: &Value,
        search: Vec<PathBuf>,
    ) -> Result<String, String> {
        // The loader belongs to the environment, and each task has its own search path (its
        // role's); an environment per file also keeps one role's `child.j2` out of the next
        // role's cache.
        let mut env = self.env.clone();
        env.set_loader(search_loader(search));
        let ctx = Value::from_object(TemplateVars { base: ctx.clone() });
        // Ansible renders the file as Jinja2 reads it, without its last newline (so a final
        // `{% endfor %}\n` has no newline for trim_blocks to take), then tops the result's
        // trailing newlines up to the file's.
        let mut out = env
            .template_from_str(&defined_chains_in(without_last_newline(text)))
            .and_then(|t| render_bounded(&t, ctx))
            .map_err(|e| describe(&e))?;
        let newlines = |s: &str| s.len() - s.trim_end_matches('\n').len();
        let missing = newlines(text).saturating_sub(newlines(&out));
        out.push_str(&"\n".repeat(missing));
        Ok(out)
    }

    pub fn eval(&self, expr: &str, ctx: &Value) -> Result<Value, String> {
        let code = defined_chains(expr);
        let e = self
            .env
            .compile_expression(&code)
            .map_err(|e| format!("`{expr}`: {}", describe(&e)))?;
        e.eval(ctx)
            .map_err(|e| format!("`{expr}`: {}", describe(&e)))
    }

    /// A `when`/`changed_when`/`failed_when` condition: a bare expression (braces tolerated).
    pub fn condition(&self, expr: &str, ctx: &Value) -> Result<bool, String> {
        let e = single_expression(expr).unwrap_or(expr);
        Ok(self.eval(e, ctx)?.is_true())
    }
}

/// Jinja2's FileSystemLoader over `search`, in order, for `{% include %}`, `{% import %}` and
/// `{% extends %}`: names are relative, `..` may not climb out.
pub(super) fn search_loader(
    search: Vec<PathBuf>,
) -> impl Fn(&str) -> Result<Option<String>, minijinja::Error> + Send + Sync + 'static {
    move |name: &str| -> Result<Option<String>, minijinja::Error> {
        // Jinja2's FileSystemLoader: names are relative, `..` may not climb out.
        let rel = Path::new(name);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Ok(None);
        }
        for dir in &search {
            let p = dir.join(rel);
            if p.is_file() {
                // Jinja2 drops a template's last newline (Ansible keeps only the
                // outer file's): `{% include %}` of "a\n" inserts "a".
                return std::fs::read_to_string(&p)
                    .map(|t| Some(defined_chains_in(without_last_newline(&t)).into_owned()))
                    .map_err(|e| {
                        minijinja::Error::new(
                            ErrorKind::TemplateNotFound,
                            format!("cannot read {}: {e}", p.display()),
                        )
                    });
            }
        }
        Ok(None)
    }
}

/// The text as Jinja2's lexer takes it without `keep_trailing_newline`: one last line break
/// dropped.
pub(super) fn without_last_newline(t: &str) -> &str {
    t.strip_suffix("\r\n")
        .or_else(|| t.strip_suffix(['\n', '\r']))
        .unwrap_or(t)
}

/// Ansible turns a rendered template that reads as a Python literal into that value (its
/// "native" templating): `"{{ n }}\n"` with `n = 3` is the integer 3, `"{{ ok }}"` a bool.
/// Numbers, `True`/`False`/`None` and JSON-shaped lists and maps are recognised.
fn literal(text: &str) -> Option<Json> {
    let t = text.trim();
    match t {
        "True" => return Some(Json::Bool(true)),
        "False" => return Some(Json::Bool(false)),
        "None" => return Some(Json::Null),
        _ => {}
    }
    let digits = t.strip_prefix('-').unwrap_or(t);
    let leading_zero = digits.len() > 1 && digits.starts_with('0') && !digits.starts_with("0.");
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) && !leading_zero {
        return t.parse::<i64>().ok().map(Json::from);
    }
    if digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.matches('.').count() == 1
        && !leading_zero
    {
        return t
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Json::Number);
    }
    if (t.starts_with('[') && t.ends_with(']')) || (t.starts_with('{') && t.ends_with('}')) {
        return serde_json::from_str(t).ok();
    }
    None
}

struct Ctx {
    scope: Scope,
    templar: Arc<Templar>,
}

/// The variables of a `template` task plus those Ansible's template action adds on top.
struct TemplateVars {
    base: Value,
}

impl std::fmt::Debug for TemplateVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("vars")
    }
}

impl Object for TemplateVars {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        if key.as_str() == Some("ansible_managed") {
            return Some(Value::from(ANSIBLE_MANAGED));
        }
        self.base.get_item(key).ok().filter(|v| !v.is_undefined())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut names: Vec<Value> = self
            .base
            .try_iter()
            .map(|i| i.collect())
            .unwrap_or_default();
        names.push(Value::from("ansible_managed"));
        Enumerator::Values(names)
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("vars")
    }
}

impl Object for Ctx {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        if name == super::lookup::VARS_KEY {
            return Some(Value::from_dyn_object(self.clone()));
        }
        match self.scope.get(name)? {
            Val::Data(v) => Some(from_serde(v)),
            Val::Tmpl(v) => {
                let depth = DEPTH.with(|d| {
                    d.set(d.get() + 1);
                    d.get()
                });
                let out = if depth > MAX_DEPTH {
                    None
                } else {
                    let ctx = Value::from_dyn_object(self.clone());
                    self.templar.render(v, &ctx).ok().map(from_serde)
                };
                DEPTH.with(|d| d.set(d.get() - 1));
                out
            }
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Iter(Box::new(self.scope.names().into_iter().map(Value::from)))
    }
}

/// What `validate` asks of the built-in runner's templates: whether a filter, test or lookup
/// used in a playbook is one the runner has.
impl Templar {
    pub fn has_filter(&self, name: &str) -> bool {
        crate::template::env_has_filter(&self.env, name)
    }

    pub fn has_test(&self, name: &str) -> bool {
        crate::template::env_has_test(&self.env, name)
    }

    pub fn has_lookup(name: &str) -> bool {
        crate::playbook::lookup::LOOKUPS
            .contains(&name.strip_prefix("ansible.builtin.").unwrap_or(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn precedence_and_lazy_templates() {
        let t = Arc::new(Templar::new());
        let mut s = Scope::default();
        s.push(tmpl_layer(&[
            ("dir".into(), json!("{{ base }}/x")),
            ("port".into(), json!(1)),
        ]));
        s.push(data_layer([
            ("base".to_owned(), json!("/srv")),
            ("port".to_owned(), json!(8080)),
        ]));
        let ctx = t.context(&s);
        assert_eq!(t.render_str("{{ dir }}", &ctx).unwrap(), json!("/srv/x"));
        assert_eq!(t.render_str("{{ port }}", &ctx).unwrap(), json!(8080));
        assert!(t.condition("port > 8000", &ctx).unwrap());
    }

    #[test]
    fn data_is_never_rendered() {
        let t = Arc::new(Templar::new());
        let mut s = Scope::default();
        s.push(data_layer([("g".to_owned(), json!("{{ 7 * 7 }}"))]));
        let ctx = t.context(&s);
        assert_eq!(t.render_str("{{ g }}", &ctx).unwrap(), json!("{{ 7 * 7 }}"));
        assert_eq!(
            t.render_str("say {{ g }}", &ctx).unwrap(),
            json!("say {{ 7 * 7 }}")
        );
    }

    #[test]
    fn template_files_include_from_the_search_path() {
        let t = Arc::new(Templar::new());
        let dir = tempfile::tempdir().unwrap();
        let (role, play) = (dir.path().join("role"), dir.path().join("play"));
        std::fs::create_dir_all(&role).unwrap();
        std::fs::create_dir_all(&play).unwrap();
        std::fs::write(role.join("part.j2"), "role {{ x }}\n").unwrap();
        std::fs::write(play.join("part.j2"), "playbook\n").unwrap();
        std::fs::write(play.join("other.j2"), "other\n").unwrap();
        let mut s = Scope::default();
        s.push(data_layer([("x".to_owned(), json!(1))]));
        let ctx = t.context(&s);
        let text = "{{ ansible_managed }}\n{% include 'part.j2' %}|{% include 'other.j2' %}\n{% if 1 %}\nend\n{% endif %}\n";
        assert_eq!(
            t.render_template_file(text, &ctx, vec![role.clone(), play.clone()])
                .unwrap(),
            "Ansible managed\nrole 1|otherend\n"
        );
        // Names may not climb out of the search path.
        assert!(
            t.render_template_file("{% include '../play/other.j2' %}", &ctx, vec![role])
                .is_err()
        );
        assert!(t.condition("x.y.z is not defined", &ctx).unwrap());
        assert!(t.condition("nope.y is defined", &ctx).is_ok_and(|b| !b));
    }

    #[test]
    fn omitted_arguments_are_dropped() {
        let args = json!({"a": OMIT, "b": 1, "c": {"d": OMIT, "e": [OMIT, "f"]}});
        assert_eq!(drop_omitted(args), json!({"b": 1, "c": {"e": ["f"]}}));
    }

    #[test]
    fn lookups_join_as_ansible_and_query_gives_lists() {
        let t = Arc::new(Templar::new());
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("templates")).unwrap();
        std::fs::write(
            dir.path().join("templates/t.j2"),
            "v={{ v }}\n{% include 'part.j2' %}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("templates/part.j2"), "part {{ v }}\n").unwrap();
        let mut s = Scope::default();
        s.push(task_magic(dir.path(), None, &dir.path().join("play.yml")));
        s.push(data_layer([
            ("v".to_owned(), json!(5)),
            (
                "playbook_dir".to_owned(),
                json!(dir.path().display().to_string()),
            ),
        ]));
        let ctx = t.context(&s);
        let r = |e: &str| t.render_str(e, &ctx).unwrap();
        assert_eq!(r("{{ lookup('list', 'a', 'b') }}"), json!("a,b"));
        assert_eq!(r("{{ lookup('list', ['a', 'b']) }}"), json!(["a", "b"]));
        assert_eq!(r("{{ lookup('list', 1, 2) }}"), json!([1, 2]));
        assert_eq!(r("{{ query('list', [1, 2]) }}"), json!([[1, 2]]));
        assert_eq!(r("{{ q('pipe', 'echo a; echo') }}"), json!(["a"]));
        assert_eq!(
            r("{{ lookup('pipe', 'echo a', wantlist=True) }}"),
            json!(["a"])
        );
        assert_eq!(
            r("{{ lookup('template', 't.j2') }}"),
            json!("v=5\npart 5\n")
        );
        assert!(
            t.render_str("{{ lookup('pipe', 'exit 3') }}", &ctx)
                .is_err()
        );
        assert!(t.render_str("{{ lookup('nope', 'x') }}", &ctx).is_err());
        assert_eq!(
            r("{{ lookup('env', 'STEPSYNC_NO_SUCH_VAR', default='d') }}"),
            json!("d")
        );
        // `default` is the env lookup's only.
        assert!(
            t.render_str("{{ lookup('pipe', 'true', default='x') }}", &ctx)
                .is_err()
        );
        assert!(
            t.render_str("{{ lookup('template', '../t.j2') }}", &ctx)
                .is_err()
        );
    }

    #[test]
    fn self_reference_is_an_error_not_a_hang() {
        let t = Arc::new(Templar::new());
        let mut s = Scope::default();
        s.push(tmpl_layer(&[("a".into(), json!("{{ a }}"))]));
        assert!(t.render_str("{{ a }}", &t.context(&s)).is_err());
    }
}
