//! The executor of the built-in runner: plays, roles, tasks, loops, conditions, handlers and
//! blocks, with an Ansible-style log (`TASK [...]`, `ok:`/`changed:`, `PLAY RECAP`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::load::{Action, Play, Roles, Task, load_playbook, load_task_file};
use super::ssh::{Dest, SshPool};
use super::target::{Local, LocalShell, Shell, ShellTarget, Target};
use super::vars::{Scope, Templar, Val, data_layer, tmpl_layer};
use super::vars_file::{load_vars_file, resolve};
use crate::diag::Origin;
use crate::inventory::Inventory;
use crate::payload::playbook::PlaybookResult;

mod facts;
mod task;

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
    notified: Vec<String>,
    handlers: Vec<Task>,
    /// set_fact and register: the highest precedence.
    facts_layer: BTreeMap<String, Val>,
}

/// Runs `playbook` natively. `Err` when it cannot be loaded (with file and line).
pub fn run(playbook: &Path, opts: &Options) -> Result<(PlaybookResult, String), String> {
    let roles = Roles {
        dir: opts.playbooks_dir.join("roles"),
    };
    let plays = load_playbook(playbook, &roles).map_err(|d| d.to_string())?;
    let mut total = PlaybookResult::default();
    let mut log = String::new();
    for play in plays {
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
                notified: Vec::new(),
                handlers: play.handlers.clone(),
                facts_layer: BTreeMap::new(),
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
        if flow == Flow::Continue {
            self.flush_handlers(&scope);
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
        scope.push(data_layer(
            opts.attributes.iter().map(|(k, v)| (k.clone(), v.clone())),
        ));
        Ok(scope)
    }

    fn fail_host(&mut self, msg: &str) {
        self.counts.failed += 1;
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

    /// Runs `f` with the `become` of an enclosing block or include in force.
    fn with_become<T>(&mut self, task: &Task, f: impl FnOnce(&mut Self) -> T) -> T {
        let saved = self.inherited_become.clone();
        if task.become_.is_some() {
            self.inherited_become.0 = task.become_;
        }
        if task.become_user.is_some() {
            self.inherited_become.1 = task.become_user.clone();
        }
        let out = f(self);
        self.inherited_become = saved;
        out
    }

    fn scope_for(&self, base: &Scope, task: &Task) -> Scope {
        let mut s = base.clone();
        if !task.vars.is_empty() {
            s.push(tmpl_layer(&task.vars));
        }
        s.push(self.facts_layer.clone());
        s
    }

    fn when_holds(&self, conds: &[String], scope: &Scope) -> Result<bool, String> {
        let ctx = self.templar.context(scope);
        for c in conds {
            if !self.templar.condition(c, &ctx)? {
                return Ok(false);
            }
        }
        Ok(true)
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

    fn header(&mut self, task: &Task, kind: &str) {
        let name = task.name.clone().unwrap_or_else(|| match &task.action {
            Action::Module { name, .. } => name.clone(),
            Action::IncludeTasks { file, .. } => format!("include_tasks: {file}"),
            Action::IncludeRole { role, .. } => format!("include_role: {role}"),
            Action::Meta(m) => format!("meta: {m}"),
            Action::Block { .. } => "block".to_owned(),
        });
        let title = match &task.role {
            Some(r) => format!("{kind} [{r} : {name}]"),
            None => format!("{kind} [{name}]"),
        };
        self.log.push_str(&banner(&title));
    }

    fn run_task(&mut self, task: &Task, base: &Scope, inherited_when: &[String]) -> Flow {
        if matches!(task.action, Action::Module { .. }) {
            self.run_task_inner(task, base, inherited_when)
        } else {
            self.with_become(task, |me| me.run_task_inner(task, base, inherited_when))
        }
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
                let mut flow = self.run_tasks(block, base, &conds);
                if flow == Flow::Unreachable {
                    return flow;
                }
                if flow == Flow::HostFailed && !rescue.is_empty() {
                    // A rescued failure is not a failed host.
                    self.counts.failed = self.counts.failed.saturating_sub(1);
                    self.counts.rescued += 1;
                    self.message = None;
                    flow = self.run_tasks(rescue, base, &conds);
                    if flow == Flow::Unreachable {
                        return flow;
                    }
                }
                let after = self.run_tasks(always, base, &conds);
                if flow == Flow::Continue { after } else { flow }
            }
            Action::Meta(m) => match m.as_str() {
                "flush_handlers" => self.flush_handlers(base),
                "end_play" => Flow::EndPlay,
                _ => Flow::Continue,
            },
            Action::IncludeTasks {
                file,
                base: dir,
                dynamic,
            } => {
                // A dynamic include is a task of its own: its `when` decides whether it runs.
                // An import is static: its `when` goes down to every imported task.
                let inner_when: &[String] = if *dynamic { inherited_when } else { &conds };
                if *dynamic && !self.include_runs(task, &conds, &scope) {
                    return if self.message.is_some() {
                        Flow::HostFailed
                    } else {
                        Flow::Continue
                    };
                }
                let ctx = self.templar.context(&scope);
                let file = match self.templar.render_str(file, &ctx) {
                    Ok(Json::String(f)) => f,
                    Ok(other) => other.to_string(),
                    Err(e) => {
                        self.fail_host(&e);
                        return Flow::HostFailed;
                    }
                };
                match load_task_file(&dir.join(&file), task.role.as_deref()) {
                    Ok(tasks) => self.run_tasks(&tasks, base, inner_when),
                    Err(d) => {
                        self.fail_host(&d.to_string());
                        Flow::HostFailed
                    }
                }
            }
            Action::IncludeRole { role, dynamic } => {
                let inner_when: &[String] = if *dynamic { inherited_when } else { &conds };
                if *dynamic && !self.include_runs(task, &conds, &scope) {
                    return if self.message.is_some() {
                        Flow::HostFailed
                    } else {
                        Flow::Continue
                    };
                }
                let mut s = base.clone();
                for part in ["defaults", "vars"] {
                    if let Some(p) = self.roles.main(role, part) {
                        match vars_layer(&p, None) {
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
                    for handler in hs {
                        let known = self
                            .handlers
                            .iter()
                            .any(|x| x.name == handler.name && x.role == handler.role);
                        if !known {
                            self.handlers.push(handler);
                        }
                    }
                }
                match self
                    .roles
                    .main(role, "tasks")
                    .map(|p| load_task_file(&p, Some(role)))
                {
                    Some(Ok(tasks)) => self.run_tasks(&tasks, &s, inner_when),
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
            Action::Module { name, args } => {
                self.run_module_task(task, name, args, &scope, &conds, "TASK")
            }
        }
    }

    /// Evaluates a dynamic include's `when`, logging and counting it as Ansible does.
    fn include_runs(&mut self, task: &Task, conds: &[String], scope: &Scope) -> bool {
        self.header(task, "TASK");
        let host = self.host.clone();
        match self.when_holds(conds, scope) {
            Ok(true) => {
                self.counts.ok += 1;
                self.log.push_str(&format!("included: [{host}]\n"));
                true
            }
            Ok(false) => {
                self.counts.skipped += 1;
                self.log.push_str(&format!("skipping: [{host}]\n"));
                false
            }
            Err(e) => {
                self.fail_host(&e);
                false
            }
        }
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

    fn flush_handlers(&mut self, base: &Scope) -> Flow {
        let notified = std::mem::take(&mut self.notified);
        if notified.is_empty() {
            return Flow::Continue;
        }
        let handlers = self.handlers.clone();
        for h in &handlers {
            let named = h.name.as_ref().is_some_and(|n| notified.contains(n));
            let listens = h.listen.iter().any(|l| notified.contains(l));
            if !(named || listens) {
                continue;
            }
            if let Action::Module { name, args } = &h.action {
                let scope = self.scope_for(base, h);
                let flow = self.run_module_task(h, name, args, &scope, &h.when, "RUNNING HANDLER");
                if flow != Flow::Continue {
                    return flow;
                }
            }
        }
        Flow::Continue
    }
}
