//! The executor of the built-in runner: plays, roles, tasks, loops, conditions, handlers and
//! blocks, with an Ansible-style log (`TASK [...]`, `ok:`/`changed:`, `PLAY RECAP`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::load::{
    Action, LoopKind, Play, RoleFiles, Roles, Task, TaskFlag, load_playbook, load_task_file,
};
use super::ssh::{Dest, SshPool};
use super::target::{Local, LocalShell, Shell, ShellTarget, Target};
use super::vars::{OMIT, Scope, Templar, Val, data_layer, task_magic, tmpl_layer};
use super::vars_file::{load_vars_file, resolve};
use crate::diag::Origin;
use crate::inventory::Inventory;
use crate::payload::playbook::PlaybookResult;
use crate::template::single_expression;

mod facts;
mod imports;
mod sequence;
mod task;

/// How often the play's last flush may start over (see `run_play`).
const MAX_LAST_FLUSHES: usize = 100;

/// What a run needs from the service and the object.
pub struct Options<'a> {
    pub playbooks_dir: &'a Path,
    pub inventory: &'a Inventory,
    pub attributes: &'a Map<String, Json>,
    pub hosts: Option<&'a str>,
    /// Open SSH masters; `None` makes every host that is not local unreachable.
    pub ssh_pool: Option<&'a SshPool>,
    /// The `ssh:` defaults of stepsync.yaml, under the inventory's `ansible_*` vars.
    pub ssh: &'a crate::config::Ssh,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    ok: u64,
    changed: u64,
    failed: u64,
    skipped: u64,
    rescued: u64,
    ignored: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    HostFailed,
    Unreachable,
    EndPlay,
    /// An error that stops the whole run, as ansible-playbook stops (a handler that does
    /// not exist): no rescue catches it, no later host or play runs.
    Abort,
}

/// Results of `run_once` tasks, by task and occurrence, for the hosts after the first.
type OnceResults = BTreeMap<(String, usize), (super::modules::ModResult, Json)>;

/// `become` as set by an enclosing block or include: (become, become_user).
type Become = (Option<bool>, Option<String>);

struct Exec {
    templar: Arc<Templar>,
    roles: Roles,
    playbook_dir: PathBuf,
    log: String,
    counts: Counts,
    stats: Map<String, Json>,
    facts: Map<String, Json>,
    message: Option<String>,
    host: String,
    /// How tasks reach the host; `None`: the engine's own host.
    shell: Option<Arc<dyn Shell>>,
    /// Play-level (and host var) `become`, and what enclosing blocks set.
    play_become: Become,
    host_become: Become,
    inherited_become: Become,
    environment: Vec<(String, Json)>,
    once: OnceResults,
    first_host: bool,
    seen: BTreeMap<String, usize>,
    unreachable: Option<String>,
    /// Notified handlers, by their index in `handlers`: a flush runs them in the order
    /// they are listed, as Ansible does, whatever the order of the notifications.
    pending: Vec<usize>,
    handlers: Vec<Task>,
    /// `notify` of the enclosing blocks and imports, which Ansible gives to their tasks.
    inherited_notify: Vec<String>,
    /// Running handlers: their log says `RUNNING HANDLER`, and a flush within is none.
    in_handler: bool,
    /// The task that failed last and its result, for `rescue`'s `ansible_failed_task` and
    /// `ansible_failed_result`.
    last_failure: Option<(Json, Json)>,
    /// The run stops after this host (see [`Flow::Abort`]).
    aborted: bool,
    /// set_fact and register: the highest precedence.
    facts_layer: BTreeMap<String, Val>,
    /// `check_mode` of the play and of the enclosing blocks and imports.
    play_check: Option<bool>,
    inherited_check: Option<bool>,
}

/// Runs `playbook` natively. `Err` when it cannot be loaded (with file and line).
pub fn run(playbook: &Path, opts: &Options) -> Result<(PlaybookResult, String), String> {
    let roles = Roles {
        dir: opts.playbooks_dir.join("roles"),
    };
    let plays = load_playbook(playbook, &roles).map_err(|d| d.to_string())?;
    let mut total = PlaybookResult::default();
    let mut log = String::new();
    'plays: for play in plays {
        let pattern = opts.hosts.map_or_else(|| play.hosts.clone(), str::to_owned);
        let hosts = opts.inventory.resolve(&pattern);
        log.push_str(&banner(&format!(
            "PLAY [{}]",
            play.name.clone().unwrap_or(pattern)
        )));
        let mut recap = String::new();
        let mut once = OnceResults::new();
        for (i, host) in hosts.iter().enumerate() {
            let hvars = opts.inventory.hosts.get(host).cloned().unwrap_or_default();
            let local = play.connection.as_deref() == Some("local")
                || hvars.get("ansible_connection").and_then(Json::as_str) == Some("local")
                || (!opts.inventory.hosts.contains_key(host)
                    && matches!(host.as_str(), "localhost" | "127.0.0.1"));
            let shell = if local {
                Ok(None)
            } else {
                match opts.ssh_pool {
                    None => Err("no SSH connection is configured".to_owned()),
                    Some(pool) => pool
                        .shell(&Dest::for_host(
                            host,
                            &hvars,
                            play.remote_user.as_deref(),
                            opts.ssh,
                        ))
                        .map(Some),
                }
            };
            let shell = match shell {
                Ok(s) => s,
                Err(msg) => {
                    log.push_str(&format!(
                        "fatal: [{host}]: UNREACHABLE! => {}\n",
                        serde_json::json!({"changed": false, "msg": msg, "unreachable": true})
                    ));
                    recap.push_str(&recap_line(host, Counts::default(), 1));
                    total.unreachable += 1;
                    total
                        .message
                        .get_or_insert(format!("{host}: unreachable: {msg}"));
                    continue;
                }
            };
            let host_become = (
                // A string that is no boolean word means no, as before.
                hvars.get("ansible_become").and_then(|v| match v {
                    Json::Bool(_) | Json::String(_) => {
                        Some(crate::boolean::from_json(v).unwrap_or(false))
                    }
                    _ => None,
                }),
                hvars
                    .get("ansible_become_user")
                    .and_then(Json::as_str)
                    .map(str::to_owned),
            );
            let mut ex = Exec {
                templar: Arc::new(Templar::new()),
                roles: Roles {
                    dir: roles.dir.clone(),
                },
                playbook_dir: playbook.parent().unwrap_or(Path::new(".")).to_path_buf(),
                log: String::new(),
                counts: Counts::default(),
                stats: Map::new(),
                facts: Map::new(),
                message: None,
                host: host.clone(),
                shell,
                play_become: (play.become_, play.become_user.clone()),
                host_become,
                inherited_become: (None, None),
                environment: play.environment.clone(),
                once: std::mem::take(&mut once),
                first_host: i == 0,
                seen: BTreeMap::new(),
                unreachable: None,
                pending: Vec::new(),
                handlers: play.handlers.clone(),
                inherited_notify: Vec::new(),
                in_handler: false,
                last_failure: None,
                aborted: false,
                facts_layer: BTreeMap::new(),
                play_check: play.check_mode,
                inherited_check: None,
            };
            ex.run_play(&play, opts, &hvars);
            once = std::mem::take(&mut ex.once);
            log.push_str(&ex.log);
            let lost = u64::from(ex.unreachable.is_some());
            recap.push_str(&recap_line(host, ex.counts, lost));
            total.unreachable += lost;
            if let Some(why) = ex.unreachable.take() {
                total.message.get_or_insert(why);
            }
            total.ok += ex.counts.ok;
            total.changed += ex.counts.changed;
            total.failed += ex.counts.failed;
            total.skipped += ex.counts.skipped;
            total.stats.extend(ex.stats);
            total.facts.extend(ex.facts);
            if total.message.is_none() {
                total.message = ex.message;
            }
            if ex.aborted {
                log.push_str(&banner("PLAY RECAP"));
                log.push_str(&recap);
                log.push('\n');
                break 'plays;
            }
        }
        log.push_str(&banner("PLAY RECAP"));
        log.push_str(&recap);
        log.push('\n');
    }
    Ok((total, log))
}

fn banner(title: &str) -> String {
    let stars = 80usize.saturating_sub(title.len() + 1).max(3);
    format!("\n{title} {}\n", "*".repeat(stars))
}

fn recap_line(host: &str, c: Counts, unreachable: u64) -> String {
    format!(
        "{host:<27}: ok={:<5}changed={:<5}unreachable={unreachable:<5}failed={:<5}skipped={:<5}rescued={:<5}ignored={:<5}\n",
        c.ok, c.changed, c.failed, c.skipped, c.rescued, c.ignored
    )
}

/// A vars file's variables as a layer; a problem with it fails the host.
fn vars_layer(path: &Path, named_at: Option<&Origin>) -> Result<BTreeMap<String, Val>, String> {
    load_vars_file(path, named_at)
        .map(|vars| tmpl_layer(&vars))
        .map_err(|d| d.to_string())
}

impl Exec {
    fn run_play(&mut self, play: &Play, opts: &Options, host_vars: &Map<String, Json>) {
        let scope = match self.play_scope(play, opts, host_vars) {
            Ok(s) => s,
            Err(e) => {
                self.fail_host(&e);
                return;
            }
        };
        let mut flow = if play.gather_facts {
            self.gather_facts()
        } else {
            Flow::Continue
        };
        if flow == Flow::Continue {
            flow = self.run_tasks(&play.pre_tasks, &scope, &[]);
        }
        if flow == Flow::Continue {
            flow = self.flush_handlers(&scope);
        }
        if flow == Flow::Continue {
            for r in &play.roles {
                let Some(main) = self.roles.main(&r.name, "tasks") else {
                    continue;
                };
                let tasks = match load_task_file(&main, Some(&r.name)) {
                    Ok(t) => t,
                    Err(d) => {
                        self.fail_host(&d.to_string());
                        flow = Flow::HostFailed;
                        break;
                    }
                };
                let role_scope = scope.with(tmpl_layer(&r.vars));
                flow = self.run_tasks(&tasks, &role_scope, &r.when);
                if flow != Flow::Continue {
                    break;
                }
            }
        }
        if flow == Flow::Continue {
            flow = self.run_tasks(&play.tasks, &scope, &[]);
        }
        if flow == Flow::Continue {
            flow = self.flush_handlers(&scope);
        }
        if flow == Flow::Continue {
            flow = self.run_tasks(&play.post_tasks, &scope, &[]);
        }
        // The play's last flush goes on until no handler is left notified: one notified by
        // a handler listed after it runs here too, as in Ansible (a flush before the end
        // leaves it for the next one). A cycle of handlers that keep notifying each other
        // ends after a bound instead of running forever.
        let mut passes = 0;
        while flow == Flow::Continue && !self.pending.is_empty() && passes < MAX_LAST_FLUSHES {
            flow = self.flush_handlers(&scope);
            passes += 1;
        }
    }

    /// The play's variables in precedence order, as Ansible layers them.
    fn play_scope(
        &self,
        play: &Play,
        opts: &Options,
        host_vars: &Map<String, Json>,
    ) -> Result<Scope, String> {
        let mut scope = Scope::default();
        for r in &play.roles {
            if let Some(p) = self.roles.main(&r.name, "defaults") {
                scope.push(vars_layer(&p, None)?);
            }
        }
        for p in self.imported_role_parts(play, "defaults") {
            scope.push(vars_layer(&p, None)?);
        }
        scope.push(tmpl_layer(
            &host_vars
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>(),
        ));
        scope.push(data_layer([
            (
                "inventory_hostname".to_owned(),
                Json::String(self.host.clone()),
            ),
            (
                "playbook_dir".to_owned(),
                Json::String(self.playbook_dir.display().to_string()),
            ),
            ("omit".to_owned(), Json::String(OMIT.to_owned())),
            // Whether the run is a check run (ansible-playbook --check), which a stepdef run
            // never is: a task's `check_mode: true` leaves it false, as in Ansible.
            ("ansible_check_mode".to_owned(), Json::Bool(false)),
        ]));
        scope.push(tmpl_layer(&play.vars));
        for f in &play.vars_files {
            // A templated name is rendered with the variables so far, as Ansible does.
            let name = if f.templated() {
                match self
                    .templar
                    .render_str(&f.path, &self.templar.context(&scope))?
                {
                    Json::String(s) => s,
                    other => other.to_string(),
                }
            } else {
                f.path.clone()
            };
            scope.push(vars_layer(
                &resolve(&self.playbook_dir, &name),
                Some(&f.origin),
            )?);
        }
        for r in &play.roles {
            if let Some(p) = self.roles.main(&r.name, "vars") {
                scope.push(vars_layer(&p, None)?);
            }
        }
        for p in self.imported_role_parts(play, "vars") {
            scope.push(vars_layer(&p, None)?);
        }
        scope.push(data_layer(
            opts.attributes.iter().map(|(k, v)| (k.clone(), v.clone())),
        ));
        Ok(scope)
    }

    fn fail_host(&mut self, msg: &str) {
        self.counts.failed += 1;
        self.last_failure = Some((
            serde_json::json!({"name": ""}),
            serde_json::json!({"failed": true, "msg": msg}),
        ));
        self.message
            .get_or_insert_with(|| format!("{}: {msg}", self.host));
        self.log.push_str(&format!(
            "fatal: [{}]: FAILED! => {}\n",
            self.host,
            serde_json::json!({ "msg": msg })
        ));
    }

    /// A broken connection makes the host unreachable (not failed), as in Ansible.
    fn lost_or_failed(&mut self, msg: &str) -> Flow {
        let lost = self.shell.as_ref().and_then(|s| s.lost());
        match lost {
            Some(why) => {
                self.log.push_str(&format!(
                    "fatal: [{}]: UNREACHABLE! => {}\n",
                    self.host,
                    serde_json::json!({"changed": false, "msg": msg, "unreachable": true})
                ));
                self.unreachable = Some(format!("{}: unreachable: {why}", self.host));
                Flow::Unreachable
            }
            None => {
                self.fail_host(msg);
                Flow::HostFailed
            }
        }
    }

    /// Where a task acts: the host (or the engine's host for `delegate_to: localhost`), as
    /// the `become_user` when `become` is on. Host vars outrank keywords, as in Ansible.
    fn target_for(&self, task: Option<&Task>) -> Box<dyn Target> {
        let pick = |f: fn(&Become) -> Option<bool>, t: Option<bool>| {
            f(&self.host_become)
                .or(t)
                .or(f(&self.inherited_become))
                .or(f(&self.play_become))
                .unwrap_or(false)
        };
        let become_on = pick(|b| b.0, task.and_then(|t| t.become_));
        let become_user = become_on.then(|| {
            self.host_become
                .1
                .clone()
                .or_else(|| task.and_then(|t| t.become_user.clone()))
                .or_else(|| self.inherited_become.1.clone())
                .or_else(|| self.play_become.1.clone())
                .unwrap_or_else(|| "root".to_owned())
        });
        let delegated = task
            .and_then(|t| t.delegate_to.as_deref())
            .is_some_and(|d| matches!(d, "localhost" | "127.0.0.1"));
        let shell = if delegated { None } else { self.shell.clone() };
        match (shell, become_user) {
            (None, None) => Box::new(Local {
                name: self.host.clone(),
            }),
            (None, Some(u)) => Box::new(ShellTarget {
                name: self.host.clone(),
                shell: Arc::new(LocalShell),
                become_user: Some(u),
            }),
            (Some(shell), become_user) => Box::new(ShellTarget {
                name: self.host.clone(),
                shell,
                become_user,
            }),
        }
    }

    /// Runs `f` with the `become` of an enclosing block or include in force, and the
    /// `notify` of a block or a static import (a dynamic include's keywords are its own).
    fn with_inherited<T>(&mut self, task: &Task, f: impl FnOnce(&mut Self) -> T) -> T {
        let saved = self.inherited_become.clone();
        let saved_check = self.inherited_check;
        if task.check_mode.is_some() {
            self.inherited_check = task.check_mode;
        }
        if task.become_.is_some() {
            self.inherited_become.0 = task.become_;
        }
        if task.become_user.is_some() {
            self.inherited_become.1 = task.become_user.clone();
        }
        let passes_notify = match &task.action {
            Action::Block { .. } => true,
            Action::IncludeTasks { dynamic, .. } | Action::IncludeRole { dynamic, .. } => !dynamic,
            _ => false,
        };
        let notified = self.inherited_notify.len();
        if passes_notify {
            self.inherited_notify.extend(task.notify.iter().cloned());
        }
        let out = f(self);
        self.inherited_notify.truncate(notified);
        self.inherited_become = saved;
        self.inherited_check = saved_check;
        out
    }

    fn scope_for(&self, base: &Scope, task: &Task) -> Scope {
        let mut s = base.clone();
        let role_dir = task.role.as_ref().map(|r| self.roles.dir.join(r));
        s.push(task_magic(
            &self.playbook_dir,
            role_dir.as_deref(),
            &task.origin.file,
        ));
        if !task.vars.is_empty() {
            s.push(tmpl_layer(&task.vars));
        }
        s.push(self.facts_layer.clone());
        s
    }

    /// Whether every condition holds. An undefined name is an error, not false, and the
    /// message names it, as Ansible's "Error while evaluating conditional" does.
    fn when_holds(&self, conds: &[String], scope: &Scope) -> Result<bool, String> {
        let ctx = self.templar.context(scope);
        for c in conds {
            let failed = |why: String| format!("Error while evaluating conditional ({c}): {why}");
            match self.templar.condition(c, &ctx) {
                Ok(true) => {}
                Ok(false) => {
                    // The engine calls an undefined value false; Ansible refuses it.
                    let expr = single_expression(c).unwrap_or(c);
                    if self
                        .templar
                        .eval(expr, &ctx)
                        .is_ok_and(|v| v.is_undefined())
                    {
                        let why = self
                            .undefined_name(expr, &ctx)
                            .unwrap_or_else(|| format!("`{expr}` is undefined"));
                        return Err(failed(why));
                    }
                    return Ok(false);
                }
                Err(e) => {
                    let expr = single_expression(c).unwrap_or(c);
                    return Err(failed(self.name_undefined(expr, &ctx, e)));
                }
            }
        }
        Ok(true)
    }

    /// An error of the engine about an undefined value, said as Ansible says it ("'x' is
    /// undefined"): the engine does not tell which name it was.
    fn name_undefined(&self, text: &str, ctx: &minijinja::Value, err: String) -> String {
        if !err.contains("undefined") {
            return err;
        }
        self.undefined_name(text, ctx).unwrap_or(err)
    }

    /// The first name (or attribute) that `text`, an expression or a template, reads and
    /// that is not defined. The real environment resolves each one, so its functions
    /// (`lookup`, `range`) count as defined.
    fn undefined_name(&self, text: &str, ctx: &minijinja::Value) -> Option<String> {
        let env = minijinja::Environment::new();
        let mut names: Vec<String> = if text.contains("{{") || text.contains("{%") {
            env.template_from_str(text).ok()?.undeclared_variables(true)
        } else {
            env.compile_expression(text)
                .ok()?
                .undeclared_variables(true)
        }
        .into_iter()
        .collect();
        names.sort();
        let missing = |path: &str| {
            self.templar
                .eval(path, ctx)
                .map_or(true, |v| v.is_undefined())
        };
        for name in names {
            let parts: Vec<&str> = name.split('.').collect();
            for n in 1..=parts.len() {
                if !missing(&parts[..n].join(".")) {
                    continue;
                }
                return Some(if n == 1 {
                    format!("'{}' is undefined", parts[0])
                } else {
                    format!(
                        "'{}' has no attribute '{}'",
                        parts[..n - 1].join("."),
                        parts[n - 1]
                    )
                });
            }
        }
        None
    }

    fn run_tasks(&mut self, tasks: &[Task], base: &Scope, inherited_when: &[String]) -> Flow {
        for t in tasks {
            let flow = self.run_task(t, base, inherited_when);
            if flow != Flow::Continue {
                return flow;
            }
        }
        Flow::Continue
    }

    /// `TASK`, or `RUNNING HANDLER` while handlers run.
    fn kind(&self) -> &'static str {
        if self.in_handler {
            "RUNNING HANDLER"
        } else {
            "TASK"
        }
    }

    fn header(&mut self, task: &Task) {
        let name = task.name.clone().unwrap_or_else(|| match &task.action {
            Action::Module { name, .. } => name.clone(),
            Action::IncludeTasks { file, .. } => format!("include_tasks: {file}"),
            Action::IncludeRole { role, .. } => format!("include_role: {role}"),
            Action::Meta(m) => format!("meta: {m}"),
            Action::Block { .. } => "block".to_owned(),
        });
        let kind = self.kind();
        let title = match &task.role {
            Some(r) => format!("{kind} [{r} : {name}]"),
            None => format!("{kind} [{name}]"),
        };
        self.log.push_str(&banner(&title));
    }

    fn run_task(&mut self, task: &Task, base: &Scope, inherited_when: &[String]) -> Flow {
        // Templated `ignore_errors` / `no_log` are rendered with the task's variables first.
        let resolved;
        let task = match self.resolve_flags(task, base) {
            Ok(Some(t)) => {
                resolved = t;
                &resolved
            }
            Ok(None) => task,
            Err(e) => {
                self.header(task);
                let host = self.host.clone();
                return self.task_error(task, &host, e);
            }
        };
        if matches!(task.action, Action::Module { .. }) {
            self.run_task_inner(task, base, inherited_when)
        } else {
            self.with_inherited(task, |me| me.run_task_inner(task, base, inherited_when))
        }
    }

    /// `task` with its templated flags rendered, if it has any. A flag that does not render
    /// fails the task, and is not itself ignored (the task's flag is still a template then).
    fn resolve_flags(&self, task: &Task, base: &Scope) -> Result<Option<Task>, String> {
        let templated = |f: &TaskFlag| matches!(f, TaskFlag::Template(_));
        if !templated(&task.ignore_errors) && !templated(&task.no_log) {
            return Ok(None);
        }
        let ctx = self.templar.context(&self.scope_for(base, task));
        let render = |f: &TaskFlag, what: &str| -> Result<TaskFlag, String> {
            let TaskFlag::Template(t) = f else {
                return Ok(f.clone());
            };
            let v = self.templar.render_str(t, &ctx)?;
            match crate::boolean::from_json(&v) {
                Some(true) => Ok(TaskFlag::On),
                Some(false) => Ok(TaskFlag::Off),
                None => Err(format!("{what}: {v} is not a boolean")),
            }
        };
        let mut t = task.clone();
        t.no_log = render(&task.no_log, "no_log")?;
        t.ignore_errors = render(&task.ignore_errors, "ignore_errors")?;
        Ok(Some(t))
    }

    fn run_task_inner(&mut self, task: &Task, base: &Scope, inherited_when: &[String]) -> Flow {
        let scope = self.scope_for(base, task);
        let mut conds: Vec<String> = inherited_when.to_vec();
        conds.extend(task.when.iter().cloned());
        match &task.action {
            Action::Block {
                block,
                rescue,
                always,
            } => {
                // A block's vars are its tasks' vars, as in Ansible.
                let inner = base.with(tmpl_layer(&task.vars));
                let base = &inner;
                let mut flow = self.run_tasks(block, base, &conds);
                if matches!(flow, Flow::Unreachable | Flow::Abort) {
                    return flow;
                }
                if flow == Flow::HostFailed && !rescue.is_empty() {
                    // A rescued failure is not a failed host.
                    self.counts.failed = self.counts.failed.saturating_sub(1);
                    self.counts.rescued += 1;
                    self.message = None;
                    // What failed, for the rescue; Ansible keeps them after it too.
                    if let Some((t, r)) = self.last_failure.take() {
                        self.facts_layer
                            .insert("ansible_failed_task".into(), Val::Data(t));
                        self.facts_layer
                            .insert("ansible_failed_result".into(), Val::Data(r));
                    }
                    flow = self.run_tasks(rescue, base, &conds);
                    if matches!(flow, Flow::Unreachable | Flow::Abort) {
                        return flow;
                    }
                }
                let after = self.run_tasks(always, base, &conds);
                if flow == Flow::Continue { after } else { flow }
            }
            Action::Meta(m) => {
                // A meta task obeys its `when`; Ansible logs the skip but does not count it.
                match self.when_holds(&conds, &scope) {
                    Ok(true) => {}
                    Ok(false) => {
                        self.header(task);
                        self.log.push_str(&format!("skipping: [{}]\n", self.host));
                        return Flow::Continue;
                    }
                    Err(e) => {
                        self.header(task);
                        let host = self.host.clone();
                        return self.task_error(task, &host, e);
                    }
                }
                match m.as_str() {
                    "flush_handlers" => self.flush_handlers(base),
                    "end_play" => Flow::EndPlay,
                    _ => Flow::Continue,
                }
            }
            Action::IncludeTasks {
                file,
                base: dir,
                dynamic,
            } => {
                // A dynamic include is a task of its own: its `when` decides whether it runs,
                // per item of its loop. An import is static: its `when` goes down to every
                // imported task.
                if !*dynamic {
                    return self.include_file(task, file, dir, base, &scope, &conds);
                }
                let items = match self.include_items(task, &conds, &scope) {
                    Ok(items) => items,
                    Err(flow) => return flow,
                };
                for item in items {
                    let (ibase, iscope) = self.with_item(base, &scope, item);
                    let flow = self.include_file(task, file, dir, &ibase, &iscope, inherited_when);
                    if flow != Flow::Continue {
                        return flow;
                    }
                }
                Flow::Continue
            }
            Action::IncludeRole {
                role,
                dynamic,
                from,
            } => {
                if !*dynamic {
                    return self.include_role(task, (role, from), base, &scope, &conds, true);
                }
                let items = match self.include_items(task, &conds, &scope) {
                    Ok(items) => items,
                    Err(flow) => return flow,
                };
                for item in items {
                    let (ibase, iscope) = self.with_item(base, &scope, item);
                    let flow = self.include_role(
                        task,
                        (role, from),
                        &ibase,
                        &iscope,
                        inherited_when,
                        false,
                    );
                    if flow != Flow::Continue {
                        return flow;
                    }
                }
                Flow::Continue
            }
            Action::Module { name, args } => self.run_module_task(task, name, args, &scope, &conds),
        }
    }

    /// The scopes of one item of a dynamic include: the tasks it includes see the item (and
    /// the loop's other variables, see [`item_layer`]).
    fn with_item(
        &self,
        base: &Scope,
        scope: &Scope,
        item: Option<BTreeMap<String, Val>>,
    ) -> (Scope, Scope) {
        match item {
            Some(layer) => (base.with(layer.clone()), scope.with(layer)),
            None => (base.clone(), scope.clone()),
        }
    }

    /// A task's `loop_control` settings that may be templates, rendered once for its loop.
    fn loop_settings(&self, task: &Task, scope: &Scope) -> Result<LoopSettings, String> {
        let lc = &task.loop_control;
        let ctx = self.templar.context(scope);
        let flag = |v: &Option<Json>, default: bool| -> Result<bool, String> {
            let Some(v) = v else {
                return Ok(default);
            };
            let r = self.templar.render(v, &ctx)?;
            crate::boolean::from_json(&r)
                .ok_or_else(|| format!("loop_control: {r} is not a boolean"))
        };
        let pause = match &lc.pause {
            None => 0.0,
            Some(v) => {
                let r = self.templar.render(v, &ctx)?;
                seconds(&r).ok_or_else(|| format!("loop_control.pause: {r} is not a number"))?
            }
        };
        Ok(LoopSettings {
            extended: flag(&lc.extended, false)?,
            allitems: flag(&lc.extended_allitems, true)?,
            pause,
        })
    }

    /// The tasks of an include or import (its file name rendered), run in `base`.
    fn include_file(
        &mut self,
        task: &Task,
        file: &str,
        dir: &Path,
        base: &Scope,
        scope: &Scope,
        when: &[String],
    ) -> Flow {
        let ctx = self.templar.context(scope);
        // The include's (or import's) vars are the included tasks' too, as in Ansible.
        let inner = if task.vars.is_empty() {
            base.clone()
        } else {
            base.with(tmpl_layer(&task.vars))
        };
        let file = match self.templar.render_str(file, &ctx) {
            Ok(Json::String(f)) => f,
            Ok(other) => other.to_string(),
            Err(e) => {
                let msg = self.name_undefined(file, &ctx, e);
                self.fail_host(&msg);
                return Flow::HostFailed;
            }
        };
        match load_task_file(&dir.join(&file), task.role.as_deref()) {
            Ok(tasks) => self.run_tasks(&tasks, &inner, when),
            Err(d) => {
                self.fail_host(&d.to_string());
                Flow::HostFailed
            }
        }
    }

    /// A role's tasks (its name rendered), with its defaults, vars and handlers. An import's
    /// `notify` goes to the role's handlers too, as Ansible gives them the import's keywords.
    fn include_role(
        &mut self,
        task: &Task,
        (role, from): (&str, &RoleFiles),
        base: &Scope,
        scope: &Scope,
        when: &[String],
        imported: bool,
    ) -> Flow {
        let ctx = self.templar.context(scope);
        let role = match self.templar.render_str(role, &ctx) {
            Ok(Json::String(r)) => r,
            Ok(other) => other.to_string(),
            Err(e) => {
                let msg = self.name_undefined(role, &ctx, e);
                self.fail_host(&msg);
                return Flow::HostFailed;
            }
        };
        let role = role.as_str();
        let mut files = match self.role_files(role, from, &ctx) {
            Ok(f) => f,
            Err(msg) => {
                self.fail_host(&msg);
                return Flow::HostFailed;
            }
        };
        let mut s = base.clone();
        for part in ["defaults", "vars"] {
            if let Some(Some(p)) = files.get(part) {
                match vars_layer(p, None) {
                    Ok(layer) => s.push(layer),
                    Err(e) => {
                        self.fail_host(&e);
                        return Flow::HostFailed;
                    }
                }
            }
        }
        // The include's own vars are role parameters: above the role's vars.
        if !task.vars.is_empty() {
            s.push(tmpl_layer(&task.vars));
        }
        if let Some(h) = self.roles.main(role, "handlers")
            && let Ok(hs) = load_task_file(&h, Some(role))
        {
            for mut handler in hs {
                if imported {
                    handler.notify.extend(self.inherited_notify.iter().cloned());
                }
                let known = self
                    .handlers
                    .iter()
                    .any(|x| x.name == handler.name && x.role == handler.role);
                if !known {
                    self.handlers.push(handler);
                }
            }
        }
        match files
            .remove("tasks")
            .flatten()
            .map(|p| load_task_file(&p, Some(role)))
        {
            Some(Ok(tasks)) => self.run_tasks(&tasks, &s, when),
            Some(Err(d)) => {
                self.fail_host(&d.to_string());
                Flow::HostFailed
            }
            None => {
                self.fail_host(&format!("role `{role}` has no tasks/main.yml"));
                Flow::HostFailed
            }
        }
    }

    /// The files of a role's tasks, defaults and vars: their main.yml, or what `tasks_from:`
    /// and the like name (rendered), which must exist.
    fn role_files(
        &self,
        role: &str,
        from: &RoleFiles,
        ctx: &minijinja::Value,
    ) -> Result<BTreeMap<&'static str, Option<PathBuf>>, String> {
        let mut files = BTreeMap::new();
        for part in ["tasks", "defaults", "vars"] {
            let Some(name) = from.of(part) else {
                files.insert(part, self.roles.main(role, part));
                continue;
            };
            let name = match self.templar.render_str(name, ctx) {
                Ok(Json::String(n)) => n,
                Ok(other) => other.to_string(),
                Err(e) => return Err(self.name_undefined(name, ctx, e)),
            };
            match self.roles.file(role, part, &name) {
                Some(p) => files.insert(part, Some(p)),
                None => {
                    return Err(format!(
                        "Could not find specified file in role: {part}/{name}"
                    ));
                }
            };
        }
        Ok(files)
    }

    /// A dynamic include's loop and `when` (per item), logged and counted as Ansible does:
    /// each included item is ok, the task is skipped when nothing is included. The items to
    /// include (`None`: no loop), or the flow to go on with when it cannot be evaluated.
    fn include_items(
        &mut self,
        task: &Task,
        conds: &[String],
        scope: &Scope,
    ) -> Result<Vec<Option<BTreeMap<String, Val>>>, Flow> {
        self.header(task);
        let host = self.host.clone();
        let items = match self.loop_items(task, scope) {
            Ok(items) => items,
            Err(e) => return Err(self.task_error(task, &host, e)),
        };
        let settings = match self.loop_settings(task, scope) {
            Ok(s) => s,
            Err(e) => return Err(self.task_error(task, &host, e)),
        };
        let runs: Vec<Option<(usize, &Json)>> = match &items {
            None => vec![None],
            Some(items) => items.iter().enumerate().map(Some).collect(),
        };
        let mut included = Vec::new();
        let all = items.as_deref().unwrap_or_default();
        for run in runs {
            let shown = run
                .map(|(_, i)| format!(" => (item={})", task::short(i, task.no_log.on())))
                .unwrap_or_default();
            let item = run.map(|(n, _)| item_layer(task, &settings, n, all));
            if run.is_some_and(|(n, _)| n > 0) {
                pause(settings.pause);
            }
            let (_, iscope) = self.with_item(scope, scope, item.clone());
            match self.when_holds(conds, &iscope) {
                Ok(true) => {
                    self.counts.ok += 1;
                    self.log.push_str(&format!("included: [{host}]{shown}\n"));
                    included.push(item);
                }
                Ok(false) => self.log.push_str(&format!("skipping: [{host}]{shown}\n")),
                Err(e) => return Err(self.task_error(task, &host, e)),
            }
            // The executor decides on `break_when` per item, before any included task runs.
            if run.is_some() && !task.loop_control.break_when.is_empty() {
                match self.when_holds(&task.loop_control.break_when, &iscope) {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => return Err(self.task_error(task, &host, e)),
                }
            }
        }
        if included.is_empty() {
            self.counts.skipped += 1;
            if task.loop_items.is_some() {
                self.log.push_str(&format!("skipping: [{host}]\n"));
            }
        }
        Ok(included)
    }

    /// A task's loop, rendered: `None` without one. An error names the undefined variable.
    fn loop_items(&self, task: &Task, scope: &Scope) -> Result<Option<Vec<Json>>, String> {
        let Some(l) = &task.loop_items else {
            return Ok(None);
        };
        let ctx = self.templar.context(scope);
        let rendered = match self.templar.render(l, &ctx) {
            Ok(v) => v,
            Err(e) => {
                return Err(match l {
                    Json::String(text) => self.name_undefined(text, &ctx, e),
                    _ => e,
                });
            }
        };
        if task.loop_kind == LoopKind::Loop {
            return match rendered {
                Json::Array(a) => Ok(Some(a)),
                Json::Null => Ok(Some(Vec::new())),
                other => Err(format!(
                    "Invalid data passed to 'loop', it requires a list, got this instead: {other}"
                )),
            };
        }
        lookup_items(task.loop_kind, rendered).map(Some)
    }

    /// A task that fails before its module runs (its `when` or `loop` cannot be evaluated):
    /// a task failure like any other, which `ignore_errors` ignores and `register` records.
    fn task_error(&mut self, task: &Task, host: &str, msg: String) -> Flow {
        let result = serde_json::json!({"changed": false, "failed": true, "msg": msg});
        self.log
            .push_str(&format!("fatal: [{host}]: FAILED! => {result}\n"));
        if let Some(reg) = &task.register {
            self.facts_layer
                .insert(reg.clone(), Val::Data(result.clone()));
        }
        if task.ignore_errors.on() {
            self.counts.ignored += 1;
            self.counts.ok += 1;
            self.log.push_str("...ignoring\n");
            return Flow::Continue;
        }
        self.counts.failed += 1;
        self.message.get_or_insert_with(|| {
            format!("{host}: {}: {msg}", task.name.as_deref().unwrap_or("task"))
        });
        self.last_failure = Some((task::failed_task(task), result));
        Flow::HostFailed
    }

    /// Marks the handlers that answer to `names` (by name, `role : name` or `listen`).
    /// A name no handler answers to is an error, as in Ansible, which stops there.
    fn notify(&mut self, names: &[String]) -> Result<(), String> {
        for n in names {
            let answers: Vec<usize> = self
                .handlers
                .iter()
                .enumerate()
                .filter(|(_, h)| {
                    let named = h.name.as_deref() == Some(n.as_str())
                        || h.role
                            .as_ref()
                            .zip(h.name.as_ref())
                            .is_some_and(|(r, name)| *n == format!("{r} : {name}"));
                    named || h.listen.contains(n)
                })
                .map(|(i, _)| i)
                .collect();
            if answers.is_empty() {
                return Err(format!(
                    "The requested handler '{n}' was not found in either the main handlers \
                     list nor in the listening handlers list"
                ));
            }
            for i in answers {
                if !self.pending.contains(&i) {
                    self.pending.push(i);
                }
            }
        }
        Ok(())
    }

    /// The play's `environment` under the task's, rendered for one run of the task.
    fn environment_for(
        &self,
        task: &Task,
        ctx: &minijinja::Value,
    ) -> Result<Vec<(String, String)>, String> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in self.environment.iter().chain(task.environment.iter()) {
            let v = match self.templar.render(v, ctx)? {
                Json::String(s) => s,
                Json::Null => String::new(),
                other => other.to_string(),
            };
            out.retain(|(old, _)| old != k);
            out.push((k.clone(), v));
        }
        Ok(out)
    }

    /// Runs the notified handlers in the order they are listed. A handler notified by one
    /// that runs comes in this flush if it is listed later, else in the next, as in Ansible.
    fn flush_handlers(&mut self, base: &Scope) -> Flow {
        if self.in_handler {
            return Flow::Continue;
        }
        self.in_handler = true;
        let mut flow = Flow::Continue;
        let mut i = 0;
        while i < self.handlers.len() && !self.pending.is_empty() {
            if let Some(at) = self.pending.iter().position(|&p| p == i) {
                self.pending.remove(at);
                let h = self.handlers[i].clone();
                flow = self.run_task(&h, base, &[]);
                if flow != Flow::Continue {
                    break;
                }
            }
            i += 1;
        }
        self.in_handler = false;
        flow
    }
}

/// `loop_control`'s rendered settings: `extended` (with `allitems`) and `pause` in seconds.
pub(super) struct LoopSettings {
    pub extended: bool,
    pub allitems: bool,
    pub pause: f64,
}

/// Sleeps `secs` seconds (loop_control's `pause`, `delay` between retries).
pub(super) fn pause(secs: f64) {
    if secs > 0.0 {
        std::thread::sleep(std::time::Duration::from_secs_f64(secs.min(86_400.0)));
    }
}

/// A number of seconds as Ansible reads one (a number or its text); never negative.
pub(super) fn seconds(v: &Json) -> Option<f64> {
    let f = match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }?;
    f.is_finite().then_some(f.max(0.0))
}

/// The variables of item `index` of a loop over `items`: the loop variable, its name in
/// `ansible_loop_var`, `index_var` (named in `ansible_index_var`) and, when extended,
/// `ansible_loop`, as Ansible's task executor sets them.
pub(super) fn item_layer(
    task: &Task,
    settings: &LoopSettings,
    index: usize,
    items: &[Json],
) -> BTreeMap<String, Val> {
    let item = items.get(index).cloned().unwrap_or(Json::Null);
    let mut vars = vec![
        (task.loop_var.clone(), item),
        (
            "ansible_loop_var".to_owned(),
            Json::String(task.loop_var.clone()),
        ),
    ];
    if let Some(iv) = &task.loop_control.index_var {
        vars.push((iv.clone(), Json::from(index)));
        vars.push(("ansible_index_var".to_owned(), Json::String(iv.clone())));
    }
    if let Some(l) = loop_info(settings, index, items) {
        vars.push(("ansible_loop".to_owned(), l));
    }
    data_layer(vars)
}

/// `ansible_loop` of item `index` when the loop is extended.
pub(super) fn loop_info(settings: &LoopSettings, index: usize, items: &[Json]) -> Option<Json> {
    if !settings.extended {
        return None;
    }
    let len = items.len();
    let mut l = serde_json::json!({
        "index": index + 1,
        "index0": index,
        "first": index == 0,
        "last": index + 1 == len,
        "length": len,
        "revindex": len.saturating_sub(index),
        "revindex0": len.saturating_sub(index + 1),
    });
    if let Json::Object(m) = &mut l {
        if settings.allitems {
            m.insert("allitems".into(), Json::Array(items.to_vec()));
        }
        if let Some(next) = items.get(index + 1) {
            m.insert("nextitem".into(), next.clone());
        }
        if let Some(prev) = index.checked_sub(1).and_then(|p| items.get(p)) {
            m.insert("previtem".into(), prev.clone());
        }
    }
    Some(l)
}

/// The items of a `with_<lookup>` loop from its rendered value, as the lookup plugin makes
/// them: its terms are the value, a list as it is and anything else as a list of one.
fn lookup_items(kind: LoopKind, value: Json) -> Result<Vec<Json>, String> {
    let terms = match value {
        Json::Array(a) => a,
        other => vec![other],
    };
    // Lookups flatten one level: a list among the terms gives its elements.
    let flatten = |terms: Vec<Json>| -> Vec<Json> {
        terms
            .into_iter()
            .flat_map(|t| match t {
                Json::Array(a) => a,
                other => vec![other],
            })
            .collect()
    };
    match kind {
        LoopKind::Loop => Ok(terms),
        LoopKind::Items => Ok(flatten(terms)),
        LoopKind::IndexedItems => Ok(flatten(terms)
            .into_iter()
            .enumerate()
            .map(|(i, x)| Json::Array(vec![Json::from(i), x]))
            .collect()),
        LoopKind::Dict => {
            let mut out = Vec::new();
            for t in terms {
                let Json::Object(m) = t else {
                    return Err(format!(
                        "the 'dict' lookup plugin expects a dictionary, got '{t}'"
                    ));
                };
                out.extend(
                    m.into_iter()
                        .map(|(k, v)| serde_json::json!({"key": k, "value": v})),
                );
            }
            Ok(out)
        }
        LoopKind::Sequence => {
            let mut out = Vec::new();
            for t in terms {
                let Json::String(term) = t else {
                    return Err(format!("with_sequence takes `key=value` words, not {t}"));
                };
                out.extend(sequence::sequence(&term)?);
            }
            Ok(out)
        }
        LoopKind::Together => {
            if terms.is_empty() {
                return Err("with_together requires at least one element in each list".into());
            }
            let lists: Vec<Vec<Json>> = terms
                .into_iter()
                .map(|t| match t {
                    Json::Array(a) => a,
                    other => vec![other],
                })
                .collect();
            let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
            Ok((0..longest)
                .map(|i| {
                    let row = lists
                        .iter()
                        .map(|l| l.get(i).cloned().unwrap_or(Json::Null))
                        .collect();
                    Json::Array(flatten(row))
                })
                .collect())
        }
    }
}
