//! One module task on one host: its loop, its condition (per item), the module run once per
//! item, `changed_when`/`failed_when`, `register`, `run_once`, the log lines and the counts.

use std::path::PathBuf;

use serde_json::{Map, Value as Json};

use super::{Exec, Flow};
use crate::playbook::load::{Action, Task};
use crate::playbook::modules::{ModCtx, ModResult, run_module};
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

        let runs: Vec<Option<Json>> = match &items {
            None => vec![None],
            Some(items) => items.iter().cloned().map(Some).collect(),
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
        for item in runs {
            let item_scope = match &item {
                Some(i) => scope.with(data_layer([(task.loop_var.clone(), i.clone())])),
                None => scope.clone(),
            };
            // An item's `when` (a task without a loop has passed its own above).
            let holds = match &item {
                Some(_) => self.when_holds(conds, &item_scope),
                None => Ok(true),
            };
            if let (Some(i), Ok(false)) = (&item, &holds) {
                self.log.push_str(&format!(
                    "skipping: [{host}] => (item={})\n",
                    short(i, task.no_log)
                ));
                results.push(serde_json::json!({
                    "changed": false, "skipped": true,
                    "skip_reason": "Conditional result was False",
                    (task.loop_var.clone()): i, "ansible_loop_var": task.loop_var,
                }));
                continue;
            }
            ran += 1;
            let ictx = self.templar.context(&item_scope);
            let env = match self.environment_for(task, &ictx) {
                Ok(e) => e,
                Err(e) => {
                    self.fail_host(&e);
                    return Flow::HostFailed;
                }
            };
            // An argument set to `omit` is dropped, as in Ansible.
            let rendered = holds
                .and_then(|_| self.templar.render(args, &ictx))
                .map(drop_omitted);
            let mut r = match rendered {
                Ok(rendered) => {
                    let mc = ModCtx {
                        target: target.as_ref(),
                        env,
                        templar: &self.templar,
                        vars: &ictx,
                        files: files.clone(),
                        templates: templates.clone(),
                    };
                    run_module(module, &rendered, &mc)
                }
                Err(e) => ModResult {
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
                // An error in either fails the task, its text in `*_when_result` as in
                // Ansible, and in `msg` when the module said nothing (for the object's status).
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
                        Err(e) => cond_error(&mut r, "changed_when_result", e),
                    }
                }
                if let Some(c) = &task.failed_when {
                    match self.when_holds(c, &s) {
                        Ok(v) => {
                            r.failed = v;
                            r.data.insert("failed_when_result".into(), Json::Bool(v));
                        }
                        Err(e) => cond_error(&mut r, "failed_when_result", e),
                    }
                }
            }
            if r.failed
                && let Some(why) = target.lost()
            {
                let msg = r.msg.clone().unwrap_or(why);
                return self.lost_or_failed(&msg);
            }
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
                m.insert(
                    "ansible_loop_var".into(),
                    Json::String(task.loop_var.clone()),
                );
            }
            if r.failed && items.is_none() {
                let msg = failure_text(&r);
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
