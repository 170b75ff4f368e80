//! One module task on one host: its loop, its condition (per item), the module run once per
//! item, `changed_when`/`failed_when`, `register`, `run_once`, the log lines and the counts.

use std::path::PathBuf;

use serde_json::{Map, Value as Json};

use super::{Exec, Flow};
use crate::playbook::load::{Action, Task};
use crate::playbook::modules::{ModCtx, ModResult, run_async, run_module};
use crate::playbook::vars::{Scope, Val, data_layer, drop_omitted};

impl Exec {
    pub(super) fn run_module_task(
        &mut self,
        task: &Task,
        module: &str,
        args: &Json,
        scope: &Scope,
        conds: &[String],
    ) -> Flow {
        self.header(task);
        let delegated = task
            .delegate_to
            .as_deref()
            .is_some_and(|d| matches!(d, "localhost" | "127.0.0.1"));
        let host = if delegated {
            format!("{} -> localhost", self.host)
        } else {
            self.host.clone()
        };
        let once_key = task.run_once.then(|| {
            let site = format!("{}:{:?}", task.origin.file.display(), task.origin.pos);
            let n = self.seen.entry(site.clone()).or_default();
            *n += 1;
            (site, *n)
        });
        if let Some(key) = &once_key
            && !self.first_host
        {
            // run_once: the first host ran it; the others take its result, as in Ansible.
            if let Some((r, registered)) = self.once.get(key).cloned() {
                for (k, v) in &r.facts {
                    self.facts_layer.insert(k.clone(), Val::Data(v.clone()));
                    self.facts.insert(k.clone(), v.clone());
                }
                if let Some(reg) = &task.register {
                    self.facts_layer.insert(reg.clone(), Val::Data(registered));
                }
            }
            return Flow::Continue;
        }
        // Ansible renders the loop first, then evaluates `when` once per item (with it).
        let items = match self.loop_items(task, scope) {
            Ok(items) => items,
            Err(e) => return self.task_error(task, &host, e),
        };
        let skipped_task = match &items {
            None => match self.when_holds(conds, scope) {
                Ok(true) => None,
                Ok(false) => Some(serde_json::json!({
                    "changed": false, "skipped": true,
                    "skip_reason": "Conditional result was False",
                })),
                Err(e) => return self.task_error(task, &host, e),
            },
            Some(list) if list.is_empty() => Some(serde_json::json!({
                "changed": false, "skipped": true,
                "skipped_reason": "No items in the list", "results": [],
            })),
            Some(_) => None,
        };
        if let Some(skipped) = skipped_task {
            self.counts.skipped += 1;
            self.log.push_str(&format!("skipping: [{host}]\n"));
            if let Some(reg) = &task.register {
                self.facts_layer.insert(reg.clone(), Val::Data(skipped));
            }
            return Flow::Continue;
        }
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

        let settings = match self.loop_settings(task, scope) {
            Ok(s) => s,
            Err(e) => return self.task_error(task, &host, e),
        };
        let all: &[Json] = items.as_deref().unwrap_or_default();
        let runs: Vec<Option<usize>> = match &items {
            None => vec![None],
            Some(items) => (0..items.len()).map(Some).collect(),
        };
        let mut results = Vec::new();
        let (mut any_changed, mut any_failed) = (false, false);
        let mut all_facts = Map::new();
        let mut ran = 0usize;
        // `ansible_become` and `ansible_become_user` are connection variables: from any
        // scope (inventory, play, block, task vars) they win over the keywords, as in
        // Ansible, so they stand in for the host's for this task.
        let saved_become = self.host_become.clone();
        self.host_become = self.become_vars(scope);
        let target = self.target_for(Some(task));
        self.host_become = saved_become;
        for index in runs {
            let item = index.and_then(|n| all.get(n));
            // Between items, not before the first (skipped ones count), as Ansible pauses.
            if index.is_some_and(|n| n > 0) {
                super::pause(settings.pause);
            }
            let item_scope = match index {
                Some(n) => scope.with(super::item_layer(task, &settings, n, all)),
                None => scope.clone(),
            };
            // What a looped result carries besides the module's fields.
            let loop_fields = |j: &mut Json| {
                if let (Json::Object(m), Some(i), Some(n)) = (j, item, index) {
                    m.insert(task.loop_var.clone(), i.clone());
                    m.insert(
                        "ansible_loop_var".into(),
                        Json::String(task.loop_var.clone()),
                    );
                    if let Some(iv) = &task.loop_control.index_var {
                        m.insert(iv.clone(), Json::from(n));
                        m.insert("ansible_index_var".into(), Json::String(iv.clone()));
                    }
                    if let Some(l) = super::loop_info(&settings, n, all) {
                        m.insert("ansible_loop".into(), l);
                    }
                }
            };
            // The item as the log shows it: loop_control's `label`, rendered, or the item.
            // One that cannot be rendered fails the item, as in Ansible.
            let mut label_error = None;
            let label = item.map(|i| match &task.loop_control.label {
                Some(l) => {
                    let ctx = self.templar.context(&item_scope);
                    match self.templar.render_str(l, &ctx) {
                        Ok(v) => short(&v, task.no_log.on()),
                        Err(e) => {
                            label_error = Some(format!(
                                "Failed to template loop_control.label: {}",
                                self.name_undefined(l, &ctx, e)
                            ));
                            short(i, task.no_log.on())
                        }
                    }
                }
                None => short(i, task.no_log.on()),
            });
            // An item's `when` (a task without a loop has passed its own above).
            let holds = match &item {
                Some(_) => self.when_holds(conds, &item_scope),
                None => Ok(true),
            };
            let (r, j) = if let (Some(label), Ok(false), None) = (&label, &holds, &label_error) {
                self.log
                    .push_str(&format!("skipping: [{host}] => (item={label})\n"));
                let mut j = serde_json::json!({
                    "changed": false, "skipped": true,
                    "skip_reason": "Conditional result was False",
                });
                loop_fields(&mut j);
                (None, j)
            } else {
                let ictx = self.templar.context(&item_scope);
                let env = match self.environment_for(task, &ictx) {
                    Ok(e) => e,
                    Err(e) => {
                        self.fail_host(&e);
                        return Flow::HostFailed;
                    }
                };
                // Here without holding only for a label that failed: nothing runs.
                let holds = holds.and_then(|h| {
                    if h {
                        Ok(())
                    } else {
                        Err(label_error.clone().unwrap_or_default())
                    }
                });
                // An argument set to `omit` is dropped, as in Ansible.
                let rendered = holds
                    .and_then(|()| self.templar.render(args, &ictx))
                    .map(drop_omitted);
                let templar = self.templar.clone();
                let async_secs = self.async_secs(task, &item_scope);
                let r = match rendered.and_then(|r| async_secs.map(|a| (r, a))) {
                    Ok((rendered, async_secs)) => {
                        let mc = ModCtx {
                            target: target.as_ref(),
                            env,
                            templar: &templar,
                            vars: &ictx,
                            files: files.clone(),
                            templates: templates.clone(),
                            check_mode: task
                                .check_mode
                                .or(self.inherited_check)
                                .or(self.play_check)
                                .unwrap_or(false),
                            async_secs,
                        };
                        let name = task.name.as_deref().unwrap_or(module);
                        match self.attempts(task, &host, name, &item_scope, || match async_secs {
                            Some(secs) => run_async(module, &rendered, &mc, secs),
                            None => run_module(module, &rendered, &mc),
                        }) {
                            Ok(r) => r,
                            Err(e) => ModResult::fail(e),
                        }
                    }
                    Err(e) => ModResult::fail(e),
                };
                let r = match label_error {
                    Some(e) => ModResult {
                        changed: r.changed,
                        ..ModResult::fail(e)
                    },
                    None => r,
                };
                if r.failed
                    && let Some(why) = target.lost()
                {
                    let msg = r.msg.clone().unwrap_or(why);
                    return self.lost_or_failed(&msg);
                }
                let mut j = r.to_json();
                loop_fields(&mut j);
                (Some(r), j)
            };
            let r = match r {
                Some(r) if !r.skipped || r.failed => r,
                skipped => {
                    // Not run (its `when`), or the module skipped itself (debug's verbosity).
                    // Without a loop, the task is said skipped below.
                    if let (Some(_), Some(l)) = (&skipped, &label) {
                        self.log
                            .push_str(&format!("skipping: [{host}] => (item={l})\n"));
                    }
                    results.push(j.clone());
                    match self.break_loop(task, index, &item_scope, &j) {
                        Ok(true) => break,
                        Ok(false) => continue,
                        Err(e) => return self.task_error(task, &host, e),
                    }
                }
            };
            ran += 1;
            for (k, v) in &r.facts {
                self.facts_layer.insert(k.clone(), Val::Data(v.clone()));
                self.facts.insert(k.clone(), v.clone());
                all_facts.insert(k.clone(), v.clone());
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
            let shown = if task.no_log.on() {
                "{\"censored\": \"the output has been hidden due to the fact that 'no_log: true' was specified for this result\"}".to_owned()
            } else {
                j.to_string()
            };
            match (&label, r.failed) {
                (Some(l), false) => self
                    .log
                    .push_str(&format!("{status}: [{host}] => (item={l})\n")),
                (Some(l), true) => self
                    .log
                    .push_str(&format!("failed: [{host}] (item={l}) => {shown}\n")),
                (None, true) => {}
                (None, false) => {
                    if module == "debug" && !task.no_log.on() {
                        self.log
                            .push_str(&format!("{status}: [{host}] => {shown}\n"));
                    } else {
                        self.log.push_str(&format!("{status}: [{host}]\n"));
                    }
                }
            }
            any_changed |= r.changed;
            any_failed |= r.failed;
            if r.failed && items.is_none() {
                let msg = failure_text(&r);
                self.log
                    .push_str(&format!("fatal: [{host}]: FAILED! => {shown}\n"));
                if !task.ignore_errors.on() {
                    self.message.get_or_insert_with(|| {
                        format!(
                            "{host}: {}: {msg}",
                            task.name.clone().unwrap_or_else(|| module.to_owned())
                        )
                    });
                }
            }
            results.push(j.clone());
            match self.break_loop(task, index, &item_scope, &j) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return self.task_error(task, &host, e),
            }
        }
        if items.is_none() && ran == 0 {
            // The module skipped itself (debug's verbosity): the task is skipped.
            self.counts.skipped += 1;
            self.log.push_str(&format!("skipping: [{host}]\n"));
            if let (Some(reg), Some(j)) = (&task.register, results.pop()) {
                self.facts_layer.insert(reg.clone(), Val::Data(j));
            }
            return Flow::Continue;
        }
        if items.is_some() && ran == 0 {
            // Every item skipped: the task is skipped, as in Ansible.
            self.counts.skipped += 1;
            self.log.push_str(&format!("skipping: [{host}]\n"));
            if let Some(reg) = &task.register {
                let skipped = serde_json::json!({
                    "changed": false, "skipped": true, "msg": "All items skipped",
                    "results": results,
                });
                self.facts_layer.insert(reg.clone(), Val::Data(skipped));
            }
            return Flow::Continue;
        }
        let registered = match &items {
            None => results.pop().unwrap_or(Json::Null),
            Some(_) => serde_json::json!({
                "changed": any_changed, "failed": any_failed, "skipped": false,
                "results": results,
                "msg": if any_failed { "One or more items failed" } else { "All items completed" },
            }),
        };
        if let Some(key) = once_key {
            let r = ModResult {
                facts: all_facts,
                ..Default::default()
            };
            self.once.insert(key, (r, registered.clone()));
        }
        let registered_copy = registered.clone();
        if let Some(reg) = &task.register {
            self.facts_layer.insert(reg.clone(), Val::Data(registered));
        }
        if any_failed {
            if items.is_some() && !task.ignore_errors.on() {
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
            if task.ignore_errors.on() {
                // Ansible counts an ignored failure as ok (and changed, if it changed).
                self.counts.ignored += 1;
                self.counts.ok += 1;
                if any_changed {
                    self.counts.changed += 1;
                }
                self.log.push_str("...ignoring\n");
            } else {
                self.counts.failed += 1;
                self.last_failure = Some((failed_task(task), registered_copy));
                return Flow::HostFailed;
            }
        } else {
            self.counts.ok += 1;
            if any_changed {
                self.counts.changed += 1;
            }
        }
        if any_changed {
            let names: Vec<String> = task
                .notify
                .iter()
                .chain(&self.inherited_notify)
                .cloned()
                .collect();
            if let Err(e) = self.notify(&names) {
                self.fail_host(&e);
                self.aborted = true;
                return Flow::Abort;
            }
        }
        Flow::Continue
    }
}

impl Exec {
    /// Runs one module invocation with `until` / `retries` / `delay` as Ansible's task
    /// executor does: `retries` more attempts (3 when only `until` is set) while `until`
    /// (without it: "not failed") does not hold, `attempts` in the result, and after the
    /// last attempt the result failed with `attempts` one less than the runs, as Ansible
    /// says it. `changed_when`/`failed_when` are evaluated on every attempt, before `until`.
    fn attempts(
        &mut self,
        task: &Task,
        host: &str,
        name: &str,
        scope: &Scope,
        mut run: impl FnMut() -> ModResult,
    ) -> Result<ModResult, String> {
        let ctx = self.templar.context(scope);
        let retry = &task.retry;
        let total: i64 = match &retry.retries {
            Some(v) => {
                let r = self.templar.render(v, &ctx)?;
                let n = match &r {
                    Json::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
                    Json::String(s) => s.trim().parse().ok(),
                    _ => None,
                }
                .ok_or_else(|| format!("retries: {r} is not an integer"))?;
                1 + n.clamp(0, 100_000)
            }
            None if !retry.until.is_empty() => 4,
            None => 1,
        };
        let delay = match &retry.delay {
            // Ansible's default; a negative delay is 1 second.
            None => 5.0,
            Some(v) => {
                let r = self.templar.render(v, &ctx)?;
                match &r {
                    Json::Number(n) if n.as_f64().is_some_and(|f| f < 0.0) => 1.0,
                    _ => super::seconds(&r).ok_or_else(|| format!("delay: {r} is not a number"))?,
                }
            }
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut r = run();
            if total > 1 {
                r.data.insert("attempts".into(), Json::from(attempt));
            }
            if !r.skipped {
                self.conditions(task, scope, &mut r);
            }
            if total <= 1 {
                return Ok(r);
            }
            let done = if retry.until.is_empty() {
                Ok(!r.failed)
            } else {
                let mut s = scope.clone();
                if let Some(reg) = &task.register {
                    s.push(data_layer([(reg.clone(), r.to_json())]));
                }
                self.when_holds(&retry.until, &s)
            };
            match done {
                Ok(true) => return Ok(r),
                Ok(false) if attempt < total => {
                    self.log.push_str(&format!(
                        "FAILED - RETRYING: [{host}]: {name} ({} retries left).\n",
                        total - attempt
                    ));
                    super::pause(delay);
                }
                Ok(false) => {
                    r.data.insert("attempts".into(), Json::from(total - 1));
                    r.failed = true;
                    return Ok(r);
                }
                Err(e) => {
                    r.failed = true;
                    r.msg = Some(e);
                    return Ok(r);
                }
            }
        }
    }

    /// `async:` seconds (`None`: not async; `async: 0` is not), with `poll` above 0: the
    /// built-in runner waits for the job as Ansible polls it. `poll: 0` is refused.
    fn async_secs(&self, task: &Task, scope: &Scope) -> Result<Option<u64>, String> {
        let Some(a) = &task.retry.async_ else {
            return Ok(None);
        };
        let ctx = self.templar.context(scope);
        let whole = |v: &Json| match v {
            Json::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
            Json::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        let r = self.templar.render(a, &ctx)?;
        let secs = whole(&r).ok_or_else(|| format!("async: {r} is not an integer"))?;
        if let Some(p) = &task.retry.poll {
            let r = self.templar.render(p, &ctx)?;
            if whole(&r) == Some(0) && secs > 0 {
                return Err(
                    "`poll: 0` (a job left running, for `async_status`) is not in the built-in \
                     subset; set `runner: ansible` in stepsync.yaml"
                        .into(),
                );
            }
        }
        Ok((secs > 0).then_some(secs))
    }

    /// `changed_when` / `failed_when`, which see the result under the register name. An
    /// error in either fails the task, its text in `*_when_result` as in Ansible, and in
    /// `msg` when the module said nothing (for the object's status).
    fn conditions(&self, task: &Task, scope: &Scope, r: &mut ModResult) {
        if task.changed_when.is_none() && task.failed_when.is_none() {
            return;
        }
        let mut s = scope.clone();
        if let Some(reg) = &task.register {
            s.push(data_layer([(reg.clone(), r.to_json())]));
        }
        let cond_error = |r: &mut ModResult, key: &str, e: String| {
            r.failed = true;
            if r.msg.as_deref().is_none_or(str::is_empty) {
                r.msg = Some(e.clone());
            }
            r.data.insert(key.into(), Json::String(e));
        };
        if let Some(c) = &task.changed_when {
            match self.when_holds(c, &s) {
                Ok(v) => r.changed = v,
                Err(e) => return cond_error(r, "changed_when_result", e),
            }
        }
        if let Some(c) = &task.failed_when {
            match self.when_holds(c, &s) {
                Ok(v) => {
                    r.failed = v;
                    r.data.insert("failed_when_result".into(), Json::Bool(v));
                }
                Err(e) => cond_error(r, "failed_when_result", e),
            }
        }
    }

    /// Whether loop_control's `break_when` holds after an item (its result under the
    /// register name, as Ansible's executor has it): the loop stops there. An error in it
    /// fails the task, as it ends Ansible's loop with an error.
    fn break_loop(
        &self,
        task: &Task,
        index: Option<usize>,
        scope: &Scope,
        result: &Json,
    ) -> Result<bool, String> {
        let bw = &task.loop_control.break_when;
        if index.is_none() || bw.is_empty() {
            return Ok(false);
        }
        let mut s = scope.clone();
        if let Some(reg) = &task.register {
            s.push(data_layer([(reg.clone(), result.clone())]));
        }
        self.when_holds(bw, &s)
    }
}

impl Exec {
    /// `ansible_become` and `ansible_become_user` as the task's variables have them (the
    /// inventory's among them). A value that is no boolean word means no, as the
    /// inventory's did.
    fn become_vars(&self, scope: &Scope) -> (Option<bool>, Option<String>) {
        let ctx = self.templar.context(scope);
        let get = |name: &str| {
            ctx.get_attr(name)
                .ok()
                .filter(|v| !v.is_undefined() && !v.is_none())
                .and_then(|v| serde_json::to_value(&v).ok())
        };
        let on = get("ansible_become").and_then(|v| match v {
            Json::Bool(_) | Json::String(_) => Some(crate::boolean::from_json(&v).unwrap_or(false)),
            _ => None,
        });
        let user = get("ansible_become_user").map(|v| match v {
            Json::String(s) => s,
            other => other.to_string(),
        });
        (on, user)
    }
}

/// `ansible_failed_task` as a rescue sees it: the task's name (empty without one) and
/// module.
pub(super) fn failed_task(task: &Task) -> Json {
    let action = match &task.action {
        Action::Module { name, .. } => name.clone(),
        Action::IncludeTasks { dynamic: true, .. } => "include_tasks".into(),
        Action::IncludeTasks { .. } => "import_tasks".into(),
        Action::IncludeRole { dynamic: true, .. } => "include_role".into(),
        Action::IncludeRole { .. } => "import_role".into(),
        Action::Meta(_) => "meta".into(),
        Action::Block { .. } => "block".into(),
    };
    serde_json::json!({"name": task.name.clone().unwrap_or_default(), "action": action})
}

pub(super) fn short(v: &Json, hidden: bool) -> String {
    if hidden {
        return "None".to_owned();
    }
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A failed task's message for the object's status: the module's `msg`, and for commands
/// their return code and the last line they printed on stderr (else stdout), which is
/// usually the reason. The run log has the rest.
fn failure_text(r: &ModResult) -> String {
    let mut msg = r.msg.clone().unwrap_or_else(|| "task failed".into());
    if let Some(rc) = r.data.get("rc").and_then(Json::as_i64) {
        msg.push_str(&format!(" (rc {rc})"));
        let last = |k: &str| {
            r.data
                .get(k)
                .and_then(Json::as_str)
                .and_then(|s| s.lines().rev().find(|l| !l.trim().is_empty()))
                .map(|l| l.trim().to_owned())
        };
        if let Some(line) = last("stderr").or_else(|| last("stdout")) {
            msg.push_str(&format!(": {line}"));
        }
    }
    msg
}
