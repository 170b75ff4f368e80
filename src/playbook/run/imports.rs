//! The roles a play imports (`import_role`): Ansible reads them with the playbook and makes
//! their defaults and vars visible to the whole play, before the import too (role vars are
//! not private by default). An `include_role` is read when it runs and keeps them to itself.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::Exec;
use crate::playbook::load::{Action, Play, Task, load_task_file};

/// How deep `import_tasks` files are followed looking for imports (a file may import itself).
const MAX_DEPTH: usize = 16;

impl Exec {
    /// The `defaults` or `vars` files (`part`) of the roles the play imports, in order: their
    /// main.yml or what `defaults_from`/`vars_from` names. Templated names are known only at
    /// run time and are left out, as are files that do not load (their run reports them).
    pub(super) fn imported_role_parts(&self, play: &Play, part: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for t in play.all_tasks() {
            self.imported_in(t, part, 0, &mut seen, &mut out);
        }
        out
    }

    /// `seen`: the task files read so far; each is read once, so a file that imports itself
    /// (or others in a ring) costs one read, not one per path to it.
    fn imported_in(
        &self,
        t: &Task,
        part: &str,
        depth: usize,
        seen: &mut HashSet<PathBuf>,
        out: &mut Vec<PathBuf>,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        match &t.action {
            Action::IncludeRole {
                role,
                dynamic: false,
                from,
            } if !role.contains("{{") => {
                let file = match from.of(part) {
                    Some(name) if name.contains("{{") => None,
                    Some(name) => self.roles.file(role, part, name),
                    None => self.roles.main(role, part),
                };
                if let Some(f) = file
                    && !out.contains(&f)
                {
                    out.push(f);
                }
            }
            Action::Block { .. } => {
                for inner in t.inner() {
                    self.imported_in(inner, part, depth + 1, seen, out);
                }
            }
            Action::IncludeTasks {
                file,
                base,
                dynamic: false,
            } if !file.contains("{{") => {
                let path: PathBuf = Path::new(base).join(file);
                if !seen.insert(path.clone()) {
                    return;
                }
                if let Ok(tasks) = load_task_file(&path, t.role.as_deref()) {
                    for inner in &tasks {
                        self.imported_in(inner, part, depth + 1, seen, out);
                    }
                }
            }
            _ => {}
        }
    }
}
