//! Reading playbooks and roles into typed plays and tasks, positions kept.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::ansible_names;
use super::modules::{self, BUILTIN_PREFIX, Registered};
use super::vars_file::VarsFile;
use crate::diag::{Diagnostic, Diagnostics, Origin};
use crate::yaml::{Node, Source, Spanned};

/// The hint of everything outside the built-in subset.
pub(crate) const RUNNER_HINT: &str =
    "set `runner: ansible` in stepsync.yaml to run this playbook with ansible-playbook";

/// The task keywords the runner reads, its loops aside ([`LOOPS`]).
const TASK_KEYWORDS: &[&str] = &[
    "name",
    "when",
    "loop_control",
    "until",
    "retries",
    "delay",
    "async",
    "poll",
    "register",
    "changed_when",
    "failed_when",
    "ignore_errors",
    "notify",
    "listen",
    "no_log",
    "become",
    "become_user",
    "check_mode",
    "block",
    "rescue",
    "always",
    "include_tasks",
    "import_tasks",
    "include_role",
    "import_role",
    "delegate_to",
    "run_once",
    "vars",
    "args",
    "tags",
    "environment",
    "meta",
];

/// The task keywords Ansible takes on `include_tasks` and `include_role` (its
/// `VALID_INCLUDE_KEYWORDS`, with a handler's `listen`; every loop of [`LOOPS`] too).
const INCLUDE_KEYWORDS: &[&str] = &[
    "name",
    "when",
    "loop_control",
    "register",
    "ignore_errors",
    "no_log",
    "run_once",
    "vars",
    "args",
    "tags",
    "listen",
    "include_tasks",
    "include_role",
];

/// The play keywords the built-in runner reads, for suggestions.
const PLAY_KEYWORDS: &[&str] = &[
    "name",
    "hosts",
    "connection",
    "gather_facts",
    "vars",
    "vars_files",
    "roles",
    "pre_tasks",
    "tasks",
    "post_tasks",
    "handlers",
    "become",
    "become_user",
    "remote_user",
    "environment",
    "check_mode",
    "tags",
];

#[derive(Debug, Clone)]
pub struct Play {
    pub name: Option<String>,
    pub hosts: String,
    pub connection: Option<String>,
    pub gather_facts: bool,
    pub vars: Vec<(String, Json)>,
    pub vars_files: Vec<VarsFile>,
    pub roles: Vec<RoleRef>,
    pub pre_tasks: Vec<Task>,
    pub tasks: Vec<Task>,
    pub post_tasks: Vec<Task>,
    pub handlers: Vec<Task>,
    pub become_: Option<bool>,
    pub become_user: Option<String>,
    pub remote_user: Option<String>,
    pub environment: Vec<(String, Json)>,
    /// `check_mode:` of the play, which its tasks inherit unless they set their own.
    pub check_mode: Option<bool>,
}

impl Play {
    /// Every task of the play in the order Ansible runs its sections, handlers last (role
    /// tasks are among them, loaded in place).
    pub fn all_tasks(&self) -> impl Iterator<Item = &Task> {
        self.pre_tasks
            .iter()
            .chain(&self.tasks)
            .chain(&self.post_tasks)
            .chain(&self.handlers)
    }
}

#[derive(Debug, Clone)]
pub struct RoleRef {
    pub name: String,
    pub when: Vec<String>,
    pub vars: Vec<(String, Json)>,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// A module call; `args` is a map, or a string for free-form modules.
    Module {
        name: String,
        args: Json,
    },
    Block {
        block: Vec<Task>,
        rescue: Vec<Task>,
        always: Vec<Task>,
    },
    /// `include_tasks`/`import_tasks` of a file, relative to where the including file lives.
    /// A dynamic include counts as a task of its own (ok or skipped); an import does not.
    IncludeTasks {
        file: String,
        base: PathBuf,
        dynamic: bool,
    },
    IncludeRole {
        role: String,
        dynamic: bool,
        from: RoleFiles,
    },
    Meta(String),
}

/// `tasks_from`, `vars_from` and `defaults_from` of an include or import of a role: the
/// files of the role to read instead of its `main.yml` (names may be templates).
#[derive(Debug, Clone, Default)]
pub struct RoleFiles {
    pub tasks: Option<String>,
    pub vars: Option<String>,
    pub defaults: Option<String>,
}

impl RoleFiles {
    /// The file named for a part (`tasks`, `vars`, `defaults`), if one is.
    pub fn of(&self, part: &str) -> Option<&str> {
        match part {
            "tasks" => self.tasks.as_deref(),
            "vars" => self.vars.as_deref(),
            "defaults" => self.defaults.as_deref(),
            _ => None,
        }
    }
}

/// A boolean task keyword that may be a template (`ignore_errors: "{{ tolerate }}"`):
/// rendered when the task runs, as Ansible renders it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TaskFlag {
    #[default]
    Off,
    On,
    Template(String),
}

impl Task {
    /// The tasks of a block, rescue and always in order; none for any other task.
    pub fn inner(&self) -> impl Iterator<Item = &Task> {
        let (block, rescue, always): (&[Task], &[Task], &[Task]) = match &self.action {
            Action::Block {
                block,
                rescue,
                always,
            } => (block, rescue, always),
            _ => (&[], &[], &[]),
        };
        block.iter().chain(rescue).chain(always)
    }
}

impl TaskFlag {
    /// Whether it is on; a template counts once rendered (see `Exec::run_task`).
    pub fn on(&self) -> bool {
        *self == TaskFlag::On
    }

    fn of(src: &Source, n: &Spanned<Node>, what: &str) -> Result<TaskFlag, Diagnostic> {
        match &n.value {
            Node::Str(s) if templated(&n.value) => Ok(TaskFlag::Template(s.clone())),
            _ => Ok(if boolean(src, n, what)? {
                TaskFlag::On
            } else {
                TaskFlag::Off
            }),
        }
    }
}

/// The loop keywords the runner has, with how each makes its items.
const LOOPS: &[(&str, LoopKind)] = &[
    ("loop", LoopKind::Loop),
    ("with_list", LoopKind::Loop),
    ("with_items", LoopKind::Items),
    ("with_dict", LoopKind::Dict),
    ("with_together", LoopKind::Together),
    ("with_indexed_items", LoopKind::IndexedItems),
    ("with_sequence", LoopKind::Sequence),
];

impl LoopKind {
    /// The loop a task keyword asks for, if it is one (valid on includes too).
    fn of(key: &str) -> Option<LoopKind> {
        LOOPS.iter().find(|(k, _)| *k == key).map(|(_, l)| *l)
    }
}

/// How a task's loop turns its value into items: `loop` and `with_list` take the list as it
/// is, the `with_<lookup>` keywords as their lookup plugins do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoopKind {
    #[default]
    Loop,
    /// `with_items`: one level of nested lists flattened.
    Items,
    /// `with_dict`: a map's entries as `{key, value}`.
    Dict,
    /// `with_together`: lists zipped, the shorter ones padded with nulls.
    Together,
    /// `with_indexed_items`: `[index, item]`, flattened as `with_items`.
    IndexedItems,
    /// `with_sequence`: numbers as text, see `run/sequence.rs`.
    Sequence,
}

/// `loop_control` beyond `loop_var`. Values that may be templates are kept as written and
/// rendered when the loop runs.
#[derive(Debug, Clone, Default)]
pub struct LoopControl {
    pub index_var: Option<String>,
    pub label: Option<String>,
    pub pause: Option<Json>,
    pub extended: Option<Json>,
    pub extended_allitems: Option<Json>,
    pub break_when: Vec<String>,
}

/// `until` / `retries` / `delay`: retries and delay as written (they may be templates);
/// `async` (seconds the module may take) and `poll` with them, as they are written too.
#[derive(Debug, Clone, Default)]
pub struct Retry {
    pub until: Vec<String>,
    pub retries: Option<Json>,
    pub delay: Option<Json>,
    pub async_: Option<Json>,
    pub poll: Option<Json>,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub name: Option<String>,
    pub action: Action,
    pub when: Vec<String>,
    pub loop_items: Option<Json>,
    pub loop_kind: LoopKind,
    pub loop_var: String,
    pub loop_control: LoopControl,
    pub retry: Retry,
    pub register: Option<String>,
    pub changed_when: Option<Vec<String>>,
    pub failed_when: Option<Vec<String>>,
    pub ignore_errors: TaskFlag,
    pub notify: Vec<String>,
    pub listen: Vec<String>,
    pub no_log: TaskFlag,
    pub become_: Option<bool>,
    pub become_user: Option<String>,
    /// `check_mode:` of the task, or of a block or import for its tasks.
    pub check_mode: Option<bool>,
    pub delegate_to: Option<String>,
    pub run_once: bool,
    pub vars: Vec<(String, Json)>,
    pub environment: Vec<(String, Json)>,
    /// The role the task came from, for `TASK [role : name]` and file lookups.
    pub role: Option<String>,
    pub origin: Origin,
}

/// Where role parts live.
pub struct Roles {
    pub dir: PathBuf,
}

impl Roles {
    pub fn path(&self, role: &str, part: &str) -> PathBuf {
        self.dir.join(role).join(part)
    }

    /// `tasks/main.yml` (or `.yaml`) of a role part, if present.
    pub fn main(&self, role: &str, part: &str) -> Option<PathBuf> {
        ["main.yml", "main.yaml"]
            .iter()
            .map(|m| self.path(role, part).join(m))
            .find(|p| p.exists())
    }

    /// A named file of a role part (`tasks_from: other`), with or without its `.yml`/`.yaml`,
    /// as Ansible finds it. A name that climbs out of the part is none.
    pub fn file(&self, role: &str, part: &str, name: &str) -> Option<PathBuf> {
        let rel = Path::new(name);
        if rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return None;
        }
        let dir = self.path(role, part);
        [
            name.to_owned(),
            format!("{name}.yml"),
            format!("{name}.yaml"),
        ]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
    }
}

type Map = Vec<(Spanned<String>, Spanned<Node>)>;

fn as_map<'a>(src: &Source, n: &'a Spanned<Node>, what: &str) -> Result<&'a Map, Diagnostic> {
    match &n.value {
        Node::Map(m) => Ok(m),
        other => Err(src.diag_at(format!("{what} must be a map, not a {}", other.kind()), n)),
    }
}

fn string_of(src: &Source, n: &Spanned<Node>, what: &str) -> Result<String, Diagnostic> {
    match &n.value {
        Node::Str(s) => Ok(s.clone()),
        Node::Int(i) => Ok(i.to_string()),
        Node::Float(f) => Ok(f.to_string()),
        Node::Bool(b) => Ok(b.to_string()),
        other => Err(src.diag_at(
            format!("{what} must be a string, not a {}", other.kind()),
            n,
        )),
    }
}

fn strings(src: &Source, n: &Spanned<Node>, what: &str) -> Result<Vec<String>, Diagnostic> {
    match &n.value {
        Node::Seq(items) => items.iter().map(|i| string_of(src, i, what)).collect(),
        Node::Null => Ok(Vec::new()),
        _ => Ok(vec![string_of(src, n, what)?]),
    }
}

/// A keyword's boolean, as Ansible reads one (`yes`, `on`, `1`, ...: see [`crate::boolean`]).
fn boolean(src: &Source, n: &Spanned<Node>, what: &str) -> Result<bool, Diagnostic> {
    crate::boolean::from_json(&n.value.to_json()).ok_or_else(|| {
        src.diag_at(
            format!("{what} must be true or false, not a {}", n.value.kind()),
            n,
        )
    })
}

/// `check_mode:` decides at load which modules may run (those whose check mode the runner
/// mirrors), so a templated one is outside the subset rather than a type error.
fn check_mode_of(src: &Source, n: &Spanned<Node>) -> Result<bool, Diagnostic> {
    if matches!(n.value, Node::Str(_)) && templated(&n.value) {
        return Err(src
            .diag_at("a templated `check_mode` is not in the built-in subset", n)
            .with_hint(RUNNER_HINT));
    }
    boolean(src, n, "check_mode")
}

fn vars_files(src: &Source, n: &Spanned<Node>) -> Result<Vec<VarsFile>, Diagnostic> {
    let items: Vec<&Spanned<Node>> = match &n.value {
        Node::Seq(items) => items.iter().collect(),
        Node::Null => Vec::new(),
        _ => vec![n],
    };
    items
        .into_iter()
        .map(|i| {
            Ok(VarsFile {
                path: string_of(src, i, "vars_files")?,
                origin: src.origin(i),
            })
        })
        .collect()
}

fn var_map(src: &Source, n: &Spanned<Node>, what: &str) -> Result<Vec<(String, Json)>, Diagnostic> {
    match &n.value {
        Node::Null => Ok(Vec::new()),
        _ => Ok(as_map(src, n, what)?
            .iter()
            .map(|(k, v)| (k.value.clone(), v.value.to_json()))
            .collect()),
    }
}

/// Reads a playbook: a list of plays.
/// How strictly to load: at run time every problem is an error; `validate` also wants the
/// structure around a bad task (its roles, includes, files) to check them too.
#[derive(Default)]
struct Cx {
    partial: bool,
    skipped: std::cell::RefCell<Diagnostics>,
    /// The `check_mode` the tasks being loaded inherit (their play's, their block's).
    check_mode: std::cell::Cell<Option<bool>>,
    /// The `ignore_errors` and `no_log` of the blocks being loaded, which their tasks inherit
    /// unless they set their own.
    flags: std::cell::RefCell<(TaskFlag, TaskFlag)>,
}

/// Puts back the inherited `ignore_errors` and `no_log` when the block that set them is loaded.
struct FlagsScope<'a>(&'a Cx, (TaskFlag, TaskFlag));

impl Drop for FlagsScope<'_> {
    fn drop(&mut self) {
        *self.0.flags.borrow_mut() = std::mem::take(&mut self.1);
    }
}

/// Puts back the inherited `check_mode` when the play or block that set it is loaded.
struct CheckModeScope<'a>(&'a Cx, Option<bool>);

impl Drop for CheckModeScope<'_> {
    fn drop(&mut self) {
        self.0.check_mode.set(self.1);
    }
}

impl Cx {
    /// `own` (when set) is the `check_mode` of what loads until the scope is dropped.
    /// `flags` are what the tasks that load until the scope is dropped inherit.
    fn flags_of(&self, flags: (TaskFlag, TaskFlag)) -> FlagsScope<'_> {
        let saved = std::mem::replace(&mut *self.flags.borrow_mut(), flags);
        FlagsScope(self, saved)
    }

    fn check_mode_of(&self, own: Option<bool>) -> CheckModeScope<'_> {
        let saved = self.check_mode.get();
        if own.is_some() {
            self.check_mode.set(own);
        }
        CheckModeScope(self, saved)
    }
}

pub fn load_playbook(path: &Path, roles: &Roles) -> Result<Vec<Play>, Diagnostics> {
    load_playbook_with(&Cx::default(), path, roles)
}

/// The plays with the tasks that load, and the problems of those that do not.
pub fn load_playbook_partial(path: &Path, roles: &Roles) -> (Vec<Play>, Diagnostics) {
    let cx = Cx {
        partial: true,
        ..Cx::default()
    };
    let plays = load_playbook_with(&cx, path, roles);
    let mut diags = cx.skipped.take();
    match plays {
        Ok(p) => (p, diags),
        Err(d) => {
            diags.0.extend(d.0);
            (Vec::new(), diags)
        }
    }
}

/// A task file's tasks that load, and the problems of those that do not.
pub fn load_task_file_partial(path: &Path, role: Option<&str>) -> (Vec<Task>, Diagnostics) {
    let cx = Cx {
        partial: true,
        ..Cx::default()
    };
    let tasks = load_task_file_with(&cx, path, role);
    let mut diags = cx.skipped.take();
    match tasks {
        Ok(t) => (t, diags),
        Err(d) => {
            diags.0.extend(d.0);
            (Vec::new(), diags)
        }
    }
}

fn load_playbook_with(cx: &Cx, path: &Path, roles: &Roles) -> Result<Vec<Play>, Diagnostics> {
    let src = Source::read_ansible(path)?;
    let docs = src.documents()?;
    // Ansible refuses an empty playbook too: it is a file someone forgot to write.
    let Some(doc) = docs.first().filter(|d| d.value != Node::Null) else {
        return Err(src
            .diag(
                "the playbook is empty",
                Some(crate::diag::Pos { line: 1, col: 1 }),
            )
            .with_hint("a playbook is a list of plays, each with `hosts:` and `tasks:`")
            .into());
    };
    let Node::Seq(plays) = &doc.value else {
        return Err(src.diag_at("a playbook is a list of plays", doc).into());
    };
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    collect_all(plays.iter().map(|p| load_play(cx, &src, p, &base, roles)))
}

/// Every item's value, or every item's problems: one bad task does not hide the next.
fn collect_all<T>(
    items: impl Iterator<Item = Result<T, Diagnostics>>,
) -> Result<Vec<T>, Diagnostics> {
    let mut out = Vec::new();
    let mut diags = Diagnostics::default();
    for item in items {
        match item {
            Ok(v) => out.push(v),
            Err(mut d) => diags.0.append(&mut d.0),
        }
    }
    diags.into_result().map(|()| out)
}

fn load_play(
    cx: &Cx,
    src: &Source,
    n: &Spanned<Node>,
    base: &Path,
    roles: &Roles,
) -> Result<Play, Diagnostics> {
    let m = as_map(src, n, "a play")?;
    let mut play = Play {
        name: None,
        hosts: String::new(),
        connection: None,
        gather_facts: true,
        vars: Vec::new(),
        vars_files: Vec::new(),
        roles: Vec::new(),
        pre_tasks: Vec::new(),
        tasks: Vec::new(),
        post_tasks: Vec::new(),
        handlers: Vec::new(),
        become_: None,
        become_user: None,
        remote_user: None,
        environment: Vec::new(),
        check_mode: None,
    };
    // The play's check_mode reaches its tasks however its keys are ordered.
    if let Some((_, v)) = m.iter().find(|(k, _)| k.value == "check_mode") {
        play.check_mode = Some(check_mode_of(src, v)?);
    }
    let _check = cx.check_mode_of(play.check_mode);
    let mut has_hosts = false;
    for (k, v) in m {
        match k.value.as_str() {
            "name" => play.name = Some(string_of(src, v, "name")?),
            "hosts" => {
                play.hosts = strings(src, v, "hosts")?.join(",");
                has_hosts = true;
            }
            "connection" => play.connection = Some(string_of(src, v, "connection")?),
            "gather_facts" => play.gather_facts = boolean(src, v, "gather_facts")?,
            "vars" => play.vars = var_map(src, v, "vars")?,
            "vars_files" => play.vars_files = vars_files(src, v)?,
            "roles" => {
                let Node::Seq(items) = &v.value else {
                    return Err(src.diag_at("roles must be a list", v).into());
                };
                for r in items {
                    play.roles.push(load_role_ref(src, r)?);
                }
            }
            "pre_tasks" => play.pre_tasks = load_tasks(cx, src, v, base, None)?,
            "tasks" => play.tasks = load_tasks(cx, src, v, base, None)?,
            "post_tasks" => play.post_tasks = load_tasks(cx, src, v, base, None)?,
            "handlers" => play.handlers = load_tasks(cx, src, v, base, None)?,
            "become" => play.become_ = Some(boolean(src, v, "become")?),
            "become_user" => play.become_user = Some(string_of(src, v, "become_user")?),
            "remote_user" => play.remote_user = Some(string_of(src, v, "remote_user")?),
            "environment" => play.environment = var_map(src, v, "environment")?,
            "check_mode" | "tags" => {}
            other => {
                // A real Ansible keyword is outside the subset, never a typo of another one.
                let close = (!ansible_names::is_play_keyword(other))
                    .then(|| crate::diag::suggest(other, PLAY_KEYWORDS.iter().copied()))
                    .flatten();
                let d = match close {
                    Some(s) => src
                        .diag_at(format!("unknown play keyword `{other}`"), k)
                        .with_hint(format!("did you mean `{s}`?")),
                    None => src
                        .diag_at(
                            format!("play keyword `{other}` is not in the built-in subset"),
                            k,
                        )
                        .with_hint(RUNNER_HINT),
                };
                return Err(d.into());
            }
        }
    }
    if !has_hosts {
        return Err(src.diag_at("a play needs `hosts:`", n).into());
    }
    // Role handlers belong to the play, once per role however often it is listed.
    let mut seen: Vec<&str> = Vec::new();
    for r in &play.roles {
        if seen.contains(&r.name.as_str()) {
            continue;
        }
        seen.push(&r.name);
        if let Some(h) = roles.main(&r.name, "handlers") {
            let hsrc = Source::read_ansible(&h)?;
            let docs = hsrc.documents()?;
            if let Some(doc) = docs.first() {
                let hbase = h.parent().unwrap_or(Path::new(".")).to_path_buf();
                play.handlers
                    .extend(load_tasks(cx, &hsrc, doc, &hbase, Some(&r.name))?);
            }
        }
    }
    Ok(play)
}

fn load_role_ref(src: &Source, n: &Spanned<Node>) -> Result<RoleRef, Diagnostics> {
    match &n.value {
        Node::Str(s) => Ok(RoleRef {
            name: s.clone(),
            when: Vec::new(),
            vars: Vec::new(),
            origin: src.origin(n),
        }),
        Node::Map(m) => {
            let mut r = RoleRef {
                name: String::new(),
                when: Vec::new(),
                vars: Vec::new(),
                origin: src.origin(n),
            };
            for (k, v) in m {
                match k.value.as_str() {
                    "role" | "name" => r.name = string_of(src, v, "role")?,
                    "when" => r.when = strings(src, v, "when")?,
                    "vars" => r.vars = var_map(src, v, "vars")?,
                    "tags" => {}
                    // Anything else is a role parameter, as in Ansible.
                    other => r.vars.push((other.to_owned(), v.value.to_json())),
                }
            }
            if r.name.is_empty() {
                return Err(src.diag_at("a role entry needs `role:`", n).into());
            }
            Ok(r)
        }
        other => Err(src
            .diag_at(
                format!("a role is a name or a map, not a {}", other.kind()),
                n,
            )
            .into()),
    }
}

/// Reads a task file (a list of tasks).
pub fn load_task_file(path: &Path, role: Option<&str>) -> Result<Vec<Task>, Diagnostics> {
    load_task_file_with(&Cx::default(), path, role)
}

fn load_task_file_with(cx: &Cx, path: &Path, role: Option<&str>) -> Result<Vec<Task>, Diagnostics> {
    let src = Source::read_ansible(path)?;
    let docs = src.documents()?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    match docs.first() {
        Some(doc) => load_tasks(cx, &src, doc, &base, role),
        None => Ok(Vec::new()),
    }
}

fn load_tasks(
    cx: &Cx,
    src: &Source,
    n: &Spanned<Node>,
    base: &Path,
    role: Option<&str>,
) -> Result<Vec<Task>, Diagnostics> {
    match &n.value {
        Node::Null => Ok(Vec::new()),
        Node::Seq(items) if cx.partial => {
            let mut out = Vec::new();
            for t in items {
                match load_task(cx, src, t, base, role) {
                    Ok(t) => out.push(t),
                    Err(d) => cx.skipped.borrow_mut().0.extend(d.0),
                }
            }
            Ok(out)
        }
        Node::Seq(items) => collect_all(items.iter().map(|t| load_task(cx, src, t, base, role))),
        other => Err(src
            .diag_at(format!("tasks must be a list, not a {}", other.kind()), n)
            .into()),
    }
}

fn load_task(
    cx: &Cx,
    src: &Source,
    n: &Spanned<Node>,
    base: &Path,
    role: Option<&str>,
) -> Result<Task, Diagnostics> {
    let m = as_map(src, n, "a task")?;
    let mut t = Task {
        name: None,
        action: Action::Meta("noop".into()),
        when: Vec::new(),
        loop_items: None,
        loop_kind: LoopKind::Loop,
        loop_var: "item".into(),
        loop_control: LoopControl::default(),
        retry: Retry::default(),
        register: None,
        changed_when: None,
        failed_when: None,
        ignore_errors: cx.flags.borrow().0.clone(),
        notify: Vec::new(),
        listen: Vec::new(),
        no_log: cx.flags.borrow().1.clone(),
        become_: None,
        become_user: None,
        check_mode: None,
        delegate_to: None,
        run_once: false,
        environment: Vec::new(),
        vars: Vec::new(),
        role: role.map(str::to_owned),
        origin: src.origin(n),
    };
    // A block's check_mode reaches the tasks inside however its keys are ordered.
    if let Some((_, v)) = m.iter().find(|(k, _)| k.value == "check_mode") {
        t.check_mode = Some(check_mode_of(src, v)?);
    }
    let _check = cx.check_mode_of(t.check_mode);
    // So do its ignore_errors and no_log (Ansible's block inheritance).
    for (k, v) in m {
        match k.value.as_str() {
            "ignore_errors" => t.ignore_errors = TaskFlag::of(src, v, "ignore_errors")?,
            "no_log" => t.no_log = TaskFlag::of(src, v, "no_log")?,
            _ => {}
        }
    }
    let _flags = cx.flags_of((t.ignore_errors.clone(), t.no_log.clone()));
    let mut module: Option<(String, &'static dyn Registered, &Spanned<Node>)> = None;
    let mut extra_args: Option<&Spanned<Node>> = None;
    let (mut block, mut rescue, mut always) = (None, Vec::new(), Vec::new());
    let mut include: Option<Action> = None;
    for (k, v) in m {
        let key = k.value.strip_prefix(BUILTIN_PREFIX).unwrap_or(&k.value);
        match key {
            "name" => t.name = Some(string_of(src, v, "name")?),
            "when" => t.when = strings(src, v, "when")?,
            l if let Some(kind) = LoopKind::of(l) => {
                if t.loop_items.is_some() {
                    return Err(src
                        .diag_at("a task has one loop (`loop` or one `with_*`)", k)
                        .into());
                }
                t.loop_items = Some(v.value.to_json());
                t.loop_kind = kind;
            }
            "loop_control" => {
                for (lk, lv) in as_map(src, v, "loop_control")? {
                    let lc = &mut t.loop_control;
                    match lk.value.as_str() {
                        "loop_var" => t.loop_var = string_of(src, lv, "loop_var")?,
                        "index_var" => lc.index_var = Some(string_of(src, lv, "index_var")?),
                        "label" => lc.label = Some(string_of(src, lv, "label")?),
                        "pause" => lc.pause = Some(lv.value.to_json()),
                        "extended" => lc.extended = Some(lv.value.to_json()),
                        "extended_allitems" => lc.extended_allitems = Some(lv.value.to_json()),
                        "break_when" => lc.break_when = strings(src, lv, "break_when")?,
                        other => {
                            // Dropping it would silently change the loop.
                            return Err(src
                                .diag_at(format!("unknown loop_control option `{other}`"), lk)
                                .with_hint(crate::diag::expected_hint(
                                    other,
                                    &[
                                        "loop_var",
                                        "index_var",
                                        "label",
                                        "pause",
                                        "extended",
                                        "extended_allitems",
                                        "break_when",
                                    ],
                                ))
                                .into());
                        }
                    }
                }
            }
            "until" => t.retry.until = strings(src, v, "until")?,
            "retries" => t.retry.retries = Some(v.value.to_json()),
            "delay" => t.retry.delay = Some(v.value.to_json()),
            "async" => t.retry.async_ = Some(v.value.to_json()),
            "poll" => {
                // Fire and forget needs async_status and jobs left running on the host.
                if matches!(v.value, Node::Int(0)) {
                    return Err(src
                        .diag_at(
                            "`poll: 0` (a job left running, for `async_status`) is not in the \
                             built-in subset; `poll` above 0 is",
                            v,
                        )
                        .with_hint(RUNNER_HINT)
                        .into());
                }
                t.retry.poll = Some(v.value.to_json());
            }
            "register" => t.register = Some(string_of(src, v, "register")?),
            "changed_when" => t.changed_when = Some(strings(src, v, "changed_when")?),
            "failed_when" => t.failed_when = Some(strings(src, v, "failed_when")?),
            "notify" => t.notify = strings(src, v, "notify")?,
            "listen" => t.listen = strings(src, v, "listen")?,
            "become" => t.become_ = Some(boolean(src, v, "become")?),
            "become_user" => t.become_user = Some(string_of(src, v, "become_user")?),
            // Read above.
            "check_mode" | "ignore_errors" | "no_log" => {}
            "delegate_to" => t.delegate_to = Some(string_of(src, v, "delegate_to")?),
            "run_once" => t.run_once = boolean(src, v, "run_once")?,
            "vars" => t.vars = var_map(src, v, "vars")?,
            "args" => extra_args = Some(v),
            "environment" => t.environment = var_map(src, v, "environment")?,
            // Tags select tasks on ansible-playbook's command line; a stepdef run has none.
            "tags" => {}
            "block" => block = Some(load_tasks(cx, src, v, base, role)?),
            "rescue" => rescue = load_tasks(cx, src, v, base, role)?,
            "always" => always = load_tasks(cx, src, v, base, role)?,
            "include_tasks" | "import_tasks" => {
                let file = match &v.value {
                    Node::Map(mm) => match mm.iter().find(|(kk, _)| kk.value == "file") {
                        Some((_, f)) => {
                            only_args(src, key, mm, &["file"])?;
                            string_of(src, f, "file")?
                        }
                        None => return Err(src.diag_at("include_tasks needs `file:`", v).into()),
                    },
                    _ => string_of(src, v, key)?,
                };
                include = Some(Action::IncludeTasks {
                    file,
                    base: base.to_path_buf(),
                    dynamic: key == "include_tasks",
                });
            }
            "include_role" | "import_role" => {
                let mut from = RoleFiles::default();
                let role = match &v.value {
                    Node::Map(mm) => match mm.iter().find(|(kk, _)| kk.value == "name") {
                        Some((_, r)) => {
                            only_args(
                                src,
                                key,
                                mm,
                                &["name", "tasks_from", "vars_from", "defaults_from"],
                            )?;
                            for (kk, vv) in mm {
                                let slot = match kk.value.as_str() {
                                    "tasks_from" => &mut from.tasks,
                                    "vars_from" => &mut from.vars,
                                    "defaults_from" => &mut from.defaults,
                                    _ => continue,
                                };
                                *slot = Some(string_of(src, vv, &kk.value)?);
                            }
                            string_of(src, r, "name")?
                        }
                        None => return Err(src.diag_at(format!("{key} needs `name:`"), v).into()),
                    },
                    // `name=x tasks_from=y`, as Ansible splits it; a bare name is refused, as
                    // Ansible refuses it ("'name' is a required field").
                    Node::Str(raw) if raw.contains('=') => {
                        let Json::Object(kv) = key_values(src, key, raw, v)? else {
                            return Err(src.diag_at(format!("{key} needs `name=`"), v).into());
                        };
                        let allowed = ["name", "tasks_from", "vars_from", "defaults_from"];
                        if let Some(k) = kv.keys().find(|k| !allowed.contains(&k.as_str())) {
                            return Err(src
                                .diag_at(format!("`{k}` of {key} is not in the built-in subset"), v)
                                .with_hint(RUNNER_HINT)
                                .into());
                        }
                        let text = |k: &str| kv.get(k).and_then(Json::as_str).map(str::to_owned);
                        from.tasks = text("tasks_from");
                        from.vars = text("vars_from");
                        from.defaults = text("defaults_from");
                        text("name")
                            .ok_or_else(|| src.diag_at(format!("{key} needs `name=`"), v))?
                    }
                    _ => {
                        return Err(src
                            .diag_at(
                                format!("{key} needs `name:` (Ansible takes no bare role name)"),
                                v,
                            )
                            .with_hint(format!("write `{key}: {{name: ...}}`"))
                            .into());
                    }
                };
                include = Some(Action::IncludeRole {
                    role,
                    dynamic: key == "include_role",
                    from,
                });
            }
            "meta" => include = Some(Action::Meta(string_of(src, v, "meta")?)),
            m if let Some(found) = modules::lookup(m) => {
                if let Some((prev, _, _)) = &module {
                    return Err(src
                        .diag_at(
                            format!("a task calls one module; this one has `{prev}` and `{m}`"),
                            k,
                        )
                        .into());
                }
                // A module whose check mode the runner does not mirror is refused here.
                if cx.check_mode.get() == Some(true) && modules::check::check_mode(m).is_none() {
                    return Err(src
                        .diag_at(
                            format!("module `{m}` in check mode is not in the built-in subset"),
                            k,
                        )
                        .with_hint(RUNNER_HINT)
                        .into());
                }
                module = Some((m.to_owned(), found, v));
            }
            other => {
                // A real Ansible keyword or module is outside the subset (said as what it
                // is, never "corrected" into another real name); a near miss of a supported
                // one is a typo; anything else is taken for a module of some collection.
                let known = ansible_names::task_name(other);
                let close = known
                    .is_none()
                    .then(|| {
                        crate::diag::suggest(
                            other,
                            TASK_KEYWORDS
                                .iter()
                                .copied()
                                .chain(LOOPS.iter().map(|(k, _)| *k))
                                .chain(modules::names()),
                        )
                    })
                    .flatten();
                let what = match known {
                    Some(ansible_names::Known::Keyword) => "task keyword",
                    Some(ansible_names::Known::LoopKeyword) => "loop keyword",
                    _ => "module",
                };
                let d = match close {
                    Some(s) => src
                        .diag_at(format!("unknown task keyword or module `{other}`"), k)
                        .with_hint(format!("did you mean `{s}`?")),
                    None => src
                        .diag_at(format!("{what} `{other}` is not in the built-in subset"), k)
                        .with_hint(RUNNER_HINT),
                };
                return Err(d.into());
            }
        }
    }
    // Ansible refuses the keywords of a task on a dynamic include (its tasks do not inherit
    // them; `apply:` would give them): the built-in runner must not accept and drop them.
    if let Some(
        Action::IncludeTasks { dynamic: true, .. } | Action::IncludeRole { dynamic: true, .. },
    ) = &include
    {
        let what = if matches!(include, Some(Action::IncludeTasks { .. })) {
            ("include_tasks", "import_tasks")
        } else {
            ("include_role", "import_role")
        };
        for (k, _) in m {
            let key = k.value.strip_prefix(BUILTIN_PREFIX).unwrap_or(&k.value);
            if TASK_KEYWORDS.contains(&key) && !INCLUDE_KEYWORDS.contains(&key) {
                return Err(src
                    .diag_at(
                        format!(
                            "`{key}` is not a valid keyword of {} (Ansible refuses it too)",
                            what.0
                        ),
                        k,
                    )
                    .with_hint(format!(
                        "set it on the included tasks, or use {}, whose tasks inherit it",
                        what.1
                    ))
                    .into());
            }
        }
    }
    // `until`/`retries`/`delay` repeat a module call and `async`/`poll` run one as a job;
    // Ansible refuses them on a block, and an include would be repeated only in name.
    if (block.is_some() || include.is_some())
        && let Some((k, _)) = m.iter().find(|(k, _)| {
            matches!(
                k.value.as_str(),
                "until" | "retries" | "delay" | "async" | "poll"
            )
        })
    {
        return Err(src
            .diag_at(
                format!(
                    "`{}` is for a module call (repeated or run as a job); this task has none",
                    k.value
                ),
                k,
            )
            .with_hint("set it on the tasks inside")
            .into());
    }
    t.action = match (block, include, module) {
        (Some(block), None, None) => Action::Block {
            block,
            rescue,
            always,
        },
        (None, Some(a), None) => a,
        (None, None, Some((name, found, v))) => {
            let args = module_args(src, &name, found, v, extra_args)?;
            Action::Module { name, args }
        }
        (None, None, None) => {
            return Err(src
                .diag_at("a task needs a module (or block/include)", n)
                .into());
        }
        _ => {
            return Err(src
                .diag_at("a task has one action: a module, a block or an include", n)
                .into());
        }
    };
    Ok(t)
}

/// The arguments of an include or import given as a map: the ones the built-in runner
/// reads. Others (`apply`, `tasks_from`, ...) would be dropped, so they are refused.
fn only_args(src: &Source, what: &str, args: &Map, known: &[&str]) -> Result<(), Diagnostics> {
    match args
        .iter()
        .find(|(k, _)| !known.contains(&k.value.as_str()))
    {
        Some((k, _)) => Err(src
            .diag_at(
                format!("`{}` of {what} is not in the built-in subset", k.value),
                k,
            )
            .with_hint(RUNNER_HINT)
            .into()),
        None => Ok(()),
    }
}

/// A module's arguments, checked against its parameters: every key must be one of them, and
/// every value that holds no template must read as its type. Values with templates are
/// known only at run time, where the rendered arguments are read into the same struct.
fn module_args(
    src: &Source,
    name: &str,
    module: &dyn Registered,
    v: &Spanned<Node>,
    extra: Option<&Spanned<Node>>,
) -> Result<Json, Diagnostics> {
    let mut args = match &v.value {
        Node::Str(raw) if module.free_form() => Json::String(raw.clone()),
        Node::Str(raw) => key_values(src, name, raw, v)?,
        Node::Map(_) | Node::Null => v.value.to_json(),
        other => {
            return Err(src
                .diag_at(
                    format!(
                        "the arguments of `{name}` are a map or `key=value` words, not a {}",
                        other.kind()
                    ),
                    v,
                )
                .into());
        }
    };
    if let Some(extra) = extra {
        let Json::Object(more) = extra.value.to_json() else {
            return Err(src
                .diag_at(
                    format!("args must be a map, not a {}", extra.value.kind()),
                    extra,
                )
                .into());
        };
        match &mut args {
            Json::Object(a) => a.extend(more),
            Json::String(raw) => {
                let mut a = more;
                a.insert("_raw_params".into(), Json::String(raw.clone()));
                args = Json::Object(a);
            }
            _ => args = Json::Object(more),
        }
    }
    let mut diags = Diagnostics::default();
    for n in [Some(v), extra].into_iter().flatten() {
        match &n.value {
            Node::Map(entries) => {
                for (k, val) in entries {
                    if let Err(d) = check_arg(src, name, module, &k.value, k, val) {
                        diags.push(d);
                    }
                }
            }
            // `key=value` words: their place is the string's.
            Node::Str(_) if !module.free_form() => {
                if let Json::Object(words) = &args {
                    for (k, val) in words {
                        let val = Spanned {
                            value: Node::Str(val.as_str().unwrap_or_default().to_owned()),
                            referenced: n.referenced,
                            defined: n.defined,
                        };
                        if let Err(d) = check_arg(src, name, module, k, n, &val) {
                            diags.push(d);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    diags.into_result().map(|()| args)
}

/// One argument: a known parameter, and a value of its type when the value is literal.
fn check_arg<K>(
    src: &Source,
    name: &str,
    module: &dyn Registered,
    key: &str,
    k: &Spanned<K>,
    val: &Spanned<Node>,
) -> Result<(), Diagnostic> {
    let Some(known) = module.param_names() else {
        return Ok(());
    };
    if !known.contains(&key) {
        // `_raw_params` and the like are the runner's own; a user never writes them.
        let shown: Vec<&str> = known
            .iter()
            .copied()
            .filter(|p| !p.starts_with('_'))
            .collect();
        // Ansible's own argument is outside the subset, never a typo of another one.
        if ansible_names::is_module_arg(name, key) {
            return Err(src
                .diag_at(
                    format!("argument `{key}` of module `{name}` is not in the built-in subset"),
                    k,
                )
                .with_hint(RUNNER_HINT));
        }
        return Err(src
            .diag_at(format!("unknown argument `{key}` of module `{name}`"), k)
            .with_hint(crate::diag::expected_hint(key, &shown)));
    }
    if templated(&val.value) {
        return Ok(());
    }
    if let Some(why) = module.refused(key, &val.value.to_json()) {
        return Err(src
            .diag_at(format!("module `{name}`: {why}"), val)
            .with_hint(RUNNER_HINT));
    }
    module
        .check(key, &val.value.to_json())
        .map_err(|e| src.diag_at(format!("module `{name}`: {e}"), val))
}

/// Whether a value holds a template anywhere, and so is known only at run time.
fn templated(n: &Node) -> bool {
    match n {
        Node::Str(s) => s.contains("{{") || s.contains("{%"),
        Node::Seq(items) => items.iter().any(|i| templated(&i.value)),
        Node::Map(entries) => entries.iter().any(|(_, v)| templated(&v.value)),
        _ => false,
    }
}

/// Splits `key=value` words as Ansible's `split_args`/`parse_kv` do: on blanks, except inside
/// quotes and inside `{{ }}`, `{% %}` and `{# #}` (a template keeps its blanks); quotes outside
/// templates are removed. `None` when a quote or a template is left open.
fn split_args(raw: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut depth = 0usize;
    let chars: Vec<char> = raw.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if matches!((c, next), ('{', Some('{' | '%' | '#'))) {
            depth += 1;
            cur.push(c);
            cur.extend(next);
            i += 2;
            continue;
        }
        if depth > 0 && matches!((c, next), ('}' | '%' | '#', Some('}'))) {
            depth -= 1;
            cur.push(c);
            cur.push('}');
            i += 2;
            continue;
        }
        if depth > 0 {
            cur.push(c);
        } else if let Some(q) = quote {
            if c == q {
                quote = None;
            } else {
                cur.push(c);
            }
        } else if c == '"' || c == '\'' {
            quote = Some(c);
        } else if c.is_whitespace() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
        i += 1;
    }
    if quote.is_some() || depth > 0 {
        return None;
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    Some(words)
}

/// Ansible's `key=value` form of a module's arguments (`debug: msg=hello`), for modules that
/// take no command line. Values are strings, as Ansible reads them.
fn key_values(
    src: &Source,
    name: &str,
    raw: &str,
    at: &Spanned<Node>,
) -> Result<Json, Diagnostics> {
    let Some(words) = split_args(raw) else {
        return Err(src
            .diag_at(format!("cannot split the arguments of `{name}`: {raw}"), at)
            .into());
    };
    let mut m = serde_json::Map::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(src
                .diag_at(
                    format!(
                        "module `{name}` takes a map of arguments or `key=value` words, not `{w}`"
                    ),
                    at,
                )
                .into());
        };
        m.insert(k.to_owned(), Json::String(v.to_owned()));
    }
    Ok(Json::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Vec<Task>, Diagnostics> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.yml");
        std::fs::write(&path, text).unwrap();
        load_task_file(&path, None)
    }

    #[test]
    fn check_mode_refuses_modules_it_does_not_mirror_wherever_it_is_set() {
        // In a block, whatever the order of its keys; a task's own `false` wins.
        let e = load_str("- block:\n    - service: {name: x}\n  check_mode: true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("module `service` in check mode"), "{e}");
        assert!(e.contains("runner: ansible"), "{e}");
        load_str("- check_mode: true\n  block:\n    - service: {name: x}\n      check_mode: false\n    - copy: {dest: /x, content: y}\n").unwrap();
        // Outside the block, nothing is inherited.
        load_str("- block:\n    - debug: {}\n  check_mode: true\n- service: {name: x}\n").unwrap();
    }

    #[test]
    fn loop_keywords_and_retries_load_and_unknowns_are_refused() {
        let t = load_str(
            "- debug: {}\n  with_dict: {a: 1}\n  until: r is success\n  retries: 2\n  delay: 0\n  register: r\n  loop_control: {index_var: i, extended: true, break_when: [i > 1]}\n",
        )
        .unwrap();
        assert_eq!(t[0].loop_kind, LoopKind::Dict);
        assert_eq!(t[0].retry.until, ["r is success"]);
        assert_eq!(t[0].loop_control.index_var.as_deref(), Some("i"));
        let e = load_str("- debug: {}\n  loop: [1]\n  loop_control: {indx_var: i}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown loop_control option `indx_var`"), "{e}");
        let e = load_str("- debug: {}\n  loop: [1]\n  with_items: [2]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("one loop"), "{e}");
        let e = load_str("- block: [{debug: {}}]\n  until: true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`until` is for a module call"), "{e}");
        let e = load_str("- command: sleep 9\n  async: 10\n  poll: 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`poll: 0`") && e.contains("runner: ansible"),
            "{e}"
        );
        load_str("- command: sleep 1\n  async: 10\n  poll: 1\n").unwrap();
    }

    #[test]
    fn key_value_words_keep_templates_and_quoted_blanks_together() {
        assert_eq!(
            split_args("path={{ target }}/x state=touch msg=\"two words\" k='a b'").unwrap(),
            [
                "path={{ target }}/x",
                "state=touch",
                "msg=two words",
                "k=a b"
            ]
        );
        assert_eq!(
            split_args("msg={{ 'a' if x else \"b c\" }} n={% if y %}1{% endif %}").unwrap(),
            [
                "msg={{ 'a' if x else \"b c\" }}",
                "n={% if y %}1{% endif %}"
            ]
        );
        assert!(split_args("msg=\"open").is_none());
        assert!(split_args("msg={{ open").is_none());
    }
}
