//! Any text loaded as a playbook and as a task file by the built-in runner's loader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepsync::playbook::load::{Roles, load_playbook_partial, load_task_file_partial};

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("play.yml");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let roles = Roles {
        dir: dir.path().join("roles"),
    };
    let (_, d) = load_playbook_partial(&path, &roles);
    let _ = d.to_string();
    let (_, d) = load_task_file_partial(&path, None);
    let _ = d.to_string();
});
