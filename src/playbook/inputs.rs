//! Which files a playbook run reads — the playbook, the task files it includes, its roles,
//! templates, copied files and vars files — so that editing any of them counts as a change
//! of the recipes that use it (SPEC §5.1 rule 4), and editing one nobody uses changes
//! nothing. Where the walk cannot know (a templated include, a playbook that does not
//! load), it takes the whole playbooks folder: a needless re-render costs time, a missed
//! input would be a lie.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::load::{Action, Roles, Task, load_playbook_partial, load_task_file_partial};

/// The files the playbook `playbooks_dir/playbook` reads, sorted.
pub fn inputs(playbooks_dir: &Path, playbook: &Path) -> Vec<PathBuf> {
    let roles = Roles {
        dir: playbooks_dir.join("roles"),
    };
    let file = playbooks_dir.join(playbook);
    let mut walk = Walk {
        playbooks_dir,
        roles: &roles,
        files: BTreeSet::from([file.clone()]),
        everything: false,
    };
    let (plays, diags) = load_playbook_partial(&file, &roles);
    if diags.has_errors() {
        walk.everything = true;
    }
    for play in &plays {
        for vf in &play.vars_files {
            walk.path_or_everything(&vf.path, playbooks_dir);
        }
        for r in &play.roles {
            walk.role(&r.name);
        }
        for t in play.all_tasks() {
            walk.task(t, 0);
        }
    }
    if walk.everything {
        walk.files.extend(files_under(playbooks_dir));
    }
    walk.files.into_iter().collect()
}

struct Walk<'a> {
    playbooks_dir: &'a Path,
    roles: &'a Roles,
    files: BTreeSet<PathBuf>,
    /// Something could not be followed: every file of the playbooks folder counts.
    everything: bool,
}

/// Include chains deeper than this are taken as a loop.
const MAX_DEPTH: usize = 32;

impl Walk<'_> {
    fn role(&mut self, name: &str) {
        if name.contains("{{") {
            self.everything = true;
        } else {
            self.files.extend(files_under(&self.roles.dir.join(name)));
        }
    }

    fn path_or_everything(&mut self, rel: &str, base: &Path) {
        if rel.contains("{{") {
            self.everything = true;
        } else {
            self.files.insert(base.join(rel));
        }
    }

    fn task(&mut self, t: &Task, depth: usize) {
        if depth > MAX_DEPTH {
            self.everything = true;
            return;
        }
        if let Some(role) = &t.role {
            // Everything a role reads lives in its folder, which `role` takes whole.
            self.role(role);
        }
        self.files.insert(t.origin.file.clone());
        match &t.action {
            Action::Module { args, .. } => {
                if t.role.is_none()
                    && let Some(src) = args.get("src").and_then(Json::as_str)
                {
                    self.source(src);
                }
            }
            Action::Block { .. } => {
                for c in t.inner() {
                    self.task(c, depth + 1);
                }
            }
            Action::IncludeTasks { file, base, .. } => {
                if file.contains("{{") {
                    self.everything = true;
                    return;
                }
                let path = base.join(file);
                if !self.files.insert(path.clone()) && depth > 0 {
                    return;
                }
                let (tasks, _) = load_task_file_partial(&path, t.role.as_deref());
                for c in &tasks {
                    self.task(c, depth + 1);
                }
            }
            Action::IncludeRole { role, .. } => self.role(role),
            Action::Meta(_) => {}
        }
    }

    /// A `template`/`copy` source outside a role: looked up as Ansible does, beside the
    /// playbook and in its `templates/` and `files/` folders.
    fn source(&mut self, src: &str) {
        if src.contains("{{") {
            self.everything = true;
            return;
        }
        for dir in ["", "templates", "files"] {
            let p = self.playbooks_dir.join(dir).join(src);
            if p.exists() {
                self.files.extend(files_under(&p));
            }
        }
    }
}

/// `path` itself when it is a file, else every file below it, sorted; nothing if missing.
pub fn files_under(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        match std::fs::read_dir(&p) {
            Ok(entries) => {
                for e in entries.flatten() {
                    stack.push(e.path());
                }
            }
            Err(_) if p.is_file() => out.push(p),
            Err(_) => {}
        }
    }
    out.sort();
    out
}
