//! The executor of the built-in runner: plays, roles, tasks, loops, conditions, handlers and
//! blocks, with an Ansible-style log (`TASK [...]`, `ok:`/`changed:`, `PLAY RECAP`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::load::{Action, Play, Roles, Task, load_playbook, load_task_file};
use super::modules::{ModCtx, run_module};
use super::target::{Local, Target};
use super::vars::{Scope, Templar, Val, data_layer, tmpl_layer};
use crate::inventory::Inventory;
use crate::payload::playbook::PlaybookResult;

/// What a run needs from the service and the object.
pub struct Options<'a> {
    pub playbooks_dir: &'a Path,
    pub inventory: &'a Inventory,
    pub attributes: &'a Map<String, Json>,
    pub hosts: Option<&'a str>,
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
    EndPlay,
}

struct Exec {
    templar: Arc<Templar>,
    roles: Roles,
    playbook_dir: PathBuf,
    log: String,
    counts: Counts,
    stats: Map<String, Json>,
    facts: Map<String, Json>,
    message: Option<String>,
    target: Box<dyn Target>,
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
        for host in hosts {
            let hvars = opts.inventory.hosts.get(&host).cloned().unwrap_or_default();
            let local = play.connection.as_deref() == Some("local")
                || hvars.get("ansible_connection").and_then(Json::as_str) == Some("local")
                || (!opts.inventory.hosts.contains_key(&host)
                    && matches!(host.as_str(), "localhost" | "127.0.0.1"));
            if !local {
                let msg = format!(
                    "{host}: SSH targets are not supported by the built-in runner yet; set `runner: ansible`"
                );
                log.push_str(&format!(
                    "fatal: [{host}]: UNREACHABLE! => {{\"msg\": \"{msg}\"}}\n"
                ));
                recap.push_str(&recap_line(&host, Counts::default(), 1));
                total.unreachable += 1;
                total.message.get_or_insert(msg);
                continue;
            }
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
                target: Box::new(Local { name: host.clone() }),
                notified: Vec::new(),
                handlers: play.handlers.clone(),
                facts_layer: BTreeMap::new(),
            };
            ex.run_play(&play, opts, &hvars);
            log.push_str(&ex.log);
            recap.push_str(&recap_line(&host, ex.counts, 0));
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

fn load_vars_file(path: &Path) -> Vec<(String, Json)> {
    let Ok(src) = crate::yaml::Source::read(path) else {
        return Vec::new();
    };
    match src
        .documents()
        .ok()
        .and_then(|d| d.into_iter().next())
        .map(|d| d.value.to_json())
    {
        Some(Json::Object(m)) => m.into_iter().collect(),
        _ => Vec::new(),
    }
}

impl Exec {
    fn run_play(&mut self, play: &Play, opts: &Options, host_vars: &Map<String, Json>) {
        let mut scope = Scope::default();
        for r in &play.roles {
            if let Some(p) = self.roles.main(&r.name, "defaults") {
                scope.push(tmpl_layer(&load_vars_file(&p)));
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
                Json::String(self.target.name().to_owned()),
            ),
            (
                "playbook_dir".to_owned(),
                Json::String(self.playbook_dir.display().to_string()),
            ),
        ]));
        scope.push(tmpl_layer(&play.vars));
        for f in &play.vars_files {
            let p = if Path::new(f).is_absolute() {
                PathBuf::from(f)
            } else {
                self.playbook_dir.join(f)
            };
            scope.push(tmpl_layer(&load_vars_file(&p)));
        }
        for r in &play.roles {
            if let Some(p) = self.roles.main(&r.name, "vars") {
                scope.push(tmpl_layer(&load_vars_file(&p)));
            }
        }
        scope.push(data_layer(
            opts.attributes.iter().map(|(k, v)| (k.clone(), v.clone())),
        ));
        if play.gather_facts {
            self.gather_facts();
        }
        let mut flow = self.run_tasks(&play.pre_tasks, &scope, &[]);
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

    /// The minimal fact set of SPEC §7.1.
    fn gather_facts(&mut self) {
        self.log.push_str(&banner("TASK [Gathering Facts]"));
        let run = |argv: &[&str]| -> String {
            let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
            self.target
                .run(&argv, None, None, &[])
                .map(|o| o.stdout.trim().to_owned())
                .unwrap_or_default()
        };
        let hostname = run(&["hostname"]);
        let fqdn = run(&["hostname", "-f"]);
        let arch = run(&["uname", "-m"]);
        let os = self
            .target
            .read("/etc/os-release")
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let field = |k: &str| {
            os.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(|v| v.trim_matches('"').to_owned())
                .unwrap_or_default()
        };
        let env: Map<String, Json> = std::env::vars()
            .map(|(k, v)| (k, Json::String(v)))
            .collect();
        let facts = [
            ("ansible_hostname", Json::String(hostname)),
            ("ansible_fqdn", Json::String(fqdn)),
            ("ansible_architecture", Json::String(arch)),
            (
                "ansible_distribution",
                Json::String(
                    field("NAME")
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                ),
            ),
            (
                "ansible_distribution_version",
                Json::String(field("VERSION_ID")),
            ),
            ("ansible_env", Json::Object(env)),
        ];
        for (k, v) in facts {
            self.facts_layer.insert(k.to_owned(), Val::Data(v));
        }
        self.counts.ok += 1;
        self.log
            .push_str(&format!("ok: [{}]\n", self.target.name()));
    }

    fn fail_host(&mut self, msg: &str) {
        self.counts.failed += 1;
        self.message
            .get_or_insert_with(|| format!("{}: {msg}", self.target.name()));
        self.log.push_str(&format!(
            "fatal: [{}]: FAILED! => {}\n",
            self.target.name(),
            serde_json::json!({ "msg": msg })
        ));
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
                if flow == Flow::HostFailed && !rescue.is_empty() {
                    // A rescued failure is not a failed host.
                    self.counts.failed = self.counts.failed.saturating_sub(1);
                    self.counts.rescued += 1;
                    self.message = None;
                    flow = self.run_tasks(rescue, base, &conds);
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
                        s.push(tmpl_layer(&load_vars_file(&p)));
                    }
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
        let host = self.target.name().to_owned();
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

    fn run_module_task(
        &mut self,
        task: &Task,
        module: &str,
        args: &Json,
        scope: &Scope,
        conds: &[String],
        kind: &str,
    ) -> Flow {
        self.header(task, kind);
        let host = self.target.name().to_owned();
        match self.when_holds(conds, scope) {
            Ok(true) => {}
            Ok(false) => {
                self.counts.skipped += 1;
                self.log.push_str(&format!("skipping: [{host}]\n"));
                if let Some(reg) = &task.register {
                    let skipped = serde_json::json!({"changed": false, "skipped": true, "skip_reason": "Conditional result was False"});
                    self.facts_layer.insert(reg.clone(), Val::Data(skipped));
                }
                return Flow::Continue;
            }
            Err(e) => {
                self.fail_host(&e);
                return Flow::HostFailed;
            }
        }
        let ctx = self.templar.context(scope);
        let items: Option<Vec<Json>> = match &task.loop_items {
            None => None,
            Some(l) => match self.templar.render(l, &ctx) {
                Ok(Json::Array(a)) => Some(a),
                Ok(Json::Null) => Some(Vec::new()),
                Ok(other) => {
                    self.fail_host(&format!("loop must be a list, got {other}"));
                    return Flow::HostFailed;
                }
                Err(e) => {
                    self.fail_host(&e);
                    return Flow::HostFailed;
                }
            },
        };
        let mut role_dirs: Vec<PathBuf> = Vec::new();
        if let Some(r) = &task.role {
            role_dirs.push(self.roles.path(r, ""));
        }
        let files: Vec<PathBuf> = role_dirs
            .iter()
            .map(|d| d.join("files"))
            .chain([self.playbook_dir.join("files"), self.playbook_dir.clone()])
            .collect();
        let templates: Vec<PathBuf> = role_dirs
            .iter()
            .map(|d| d.join("templates"))
            .chain([
                self.playbook_dir.join("templates"),
                self.playbook_dir.clone(),
            ])
            .collect();

        let runs: Vec<Option<Json>> = match &items {
            None => vec![None],
            Some(items) => items.iter().cloned().map(Some).collect(),
        };
        let mut results = Vec::new();
        let (mut any_changed, mut any_failed) = (false, false);
        for item in runs {
            let item_scope = match &item {
                Some(i) => scope.with(data_layer([(task.loop_var.clone(), i.clone())])),
                None => scope.clone(),
            };
            let ictx = self.templar.context(&item_scope);
            let mut r = match self.templar.render(args, &ictx) {
                Ok(rendered) => {
                    let mc = ModCtx {
                        target: self.target.as_ref(),
                        templar: &self.templar,
                        vars: &ictx,
                        files: files.clone(),
                        templates: templates.clone(),
                    };
                    run_module(module, &rendered, &mc)
                }
                Err(e) => super::modules::ModResult {
                    failed: true,
                    msg: Some(e),
                    ..Default::default()
                },
            };
            // changed_when / failed_when see the result under the register name.
            if task.changed_when.is_some() || task.failed_when.is_some() {
                let mut s = item_scope.clone();
                if let Some(reg) = &task.register {
                    s.push(data_layer([(reg.clone(), r.to_json())]));
                }
                if let Some(c) = &task.changed_when {
                    match self.when_holds(c, &s) {
                        Ok(v) => r.changed = v,
                        Err(e) => {
                            r.failed = true;
                            r.msg = Some(format!("changed_when: {e}"));
                        }
                    }
                }
                if let Some(c) = &task.failed_when {
                    match self.when_holds(c, &s) {
                        Ok(v) => r.failed = v,
                        Err(e) => {
                            r.failed = true;
                            r.msg = Some(format!("failed_when: {e}"));
                        }
                    }
                }
            }
            for (k, v) in &r.facts {
                self.facts_layer.insert(k.clone(), Val::Data(v.clone()));
                self.facts.insert(k.clone(), v.clone());
            }
            for (k, v) in &r.stats {
                self.stats.insert(k.clone(), v.clone());
            }
            let status = if r.failed {
                "failed"
            } else if r.changed {
                "changed"
            } else {
                "ok"
            };
            let shown = if task.no_log {
                "{\"censored\": \"the output has been hidden due to the fact that 'no_log: true' was specified for this result\"}".to_owned()
            } else {
                let mut j = r.to_json();
                if let (Json::Object(m), Some(i)) = (&mut j, &item) {
                    m.insert(task.loop_var.clone(), i.clone());
                }
                j.to_string()
            };
            match (&item, r.failed) {
                (Some(i), false) => self.log.push_str(&format!(
                    "{status}: [{host}] => (item={})\n",
                    short(i, task.no_log)
                )),
                (Some(i), true) => self.log.push_str(&format!(
                    "failed: [{host}] (item={}) => {shown}\n",
                    short(i, task.no_log)
                )),
                (None, true) => {}
                (None, false) => {
                    if module == "debug" && !task.no_log {
                        self.log
                            .push_str(&format!("{status}: [{host}] => {shown}\n"));
                    } else {
                        self.log.push_str(&format!("{status}: [{host}]\n"));
                    }
                }
            }
            any_changed |= r.changed;
            any_failed |= r.failed;
            let mut j = r.to_json();
            if let (Json::Object(m), Some(i)) = (&mut j, &item) {
                m.insert(task.loop_var.clone(), i.clone());
            }
            if r.failed && items.is_none() {
                let msg = r.msg.clone().unwrap_or_else(|| "task failed".into());
                self.log
                    .push_str(&format!("fatal: [{host}]: FAILED! => {shown}\n"));
                if !task.ignore_errors {
                    self.message.get_or_insert_with(|| {
                        format!(
                            "{host}: {}: {msg}",
                            task.name.clone().unwrap_or_else(|| module.to_owned())
                        )
                    });
                }
            }
            results.push(j);
        }
        let registered = match &items {
            None => results.pop().unwrap_or(Json::Null),
            Some(_) => serde_json::json!({
                "changed": any_changed, "failed": any_failed, "results": results,
                "msg": if any_failed { "One or more items failed" } else { "All items completed" },
            }),
        };
        if let Some(reg) = &task.register {
            self.facts_layer.insert(reg.clone(), Val::Data(registered));
        }
        if any_failed {
            if items.is_some() && !task.ignore_errors {
                self.message.get_or_insert_with(|| {
                    format!(
                        "{host}: {}: One or more items failed",
                        task.name.clone().unwrap_or_else(|| module.to_owned())
                    )
                });
                self.log.push_str(&format!(
                    "fatal: [{host}]: FAILED! => {{\"msg\": \"One or more items failed\"}}\n"
                ));
            }
            if task.ignore_errors {
                // Ansible counts an ignored failure as ok (and changed, if it changed).
                self.counts.ignored += 1;
                self.counts.ok += 1;
                if any_changed {
                    self.counts.changed += 1;
                }
                self.log.push_str("...ignoring\n");
            } else {
                self.counts.failed += 1;
                return Flow::HostFailed;
            }
        } else {
            self.counts.ok += 1;
            if any_changed {
                self.counts.changed += 1;
            }
        }
        if any_changed {
            for n in &task.notify {
                if !self.notified.contains(n) {
                    self.notified.push(n.clone());
                }
            }
        }
        Flow::Continue
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

fn short(v: &Json, hidden: bool) -> String {
    if hidden {
        return "None".to_owned();
    }
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}
