//! Check mode (`check_mode: true`): modules run against a [`DryRun`] target, which reads
//! the host as it is and pretends every change succeeded, so a module reports what it would
//! change without changing anything — as Ansible's modules that support check mode do.

use std::io;

use crate::playbook::target::{CmdOut, Stat, Target};

/// How a module behaves in check mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckMode {
    /// It reads the host and reports what it would change (its writes go nowhere).
    Supported,
    /// Ansible skips it ("does not support check mode").
    Skipped,
}

/// The modules whose check mode the built-in runner mirrors. A module not listed here
/// (`service`, `package`, ...) would report something different from Ansible, so a task
/// that runs it in check mode is refused at load time (and fails, if only known at run time).
pub fn check_mode(module: &str) -> Option<CheckMode> {
    let short = module.strip_prefix(super::BUILTIN_PREFIX).unwrap_or(module);
    match short {
        // `command`/`shell`/`raw` decide for themselves: see `command.rs`.
        "command" | "shell" | "raw" | "copy" | "template" | "file" | "lineinfile"
        | "blockinfile" | "replace" | "stat" | "slurp" | "debug" | "set_fact" | "set_stats"
        | "assert" | "fail" | "ping" | "include_vars" => Some(CheckMode::Supported),
        // Their Ansible modules do not declare check mode support.
        "wait_for" | "tempfile" => Some(CheckMode::Skipped),
        _ => None,
    }
}

/// Why a module cannot run in check mode here.
pub fn refused(module: &str) -> String {
    format!(
        "module `{module}` does not run in check mode in the built-in runner (its check \
         mode would differ from Ansible's); set `runner: ansible` in stepsync.yaml to run \
         this playbook with ansible-playbook"
    )
}

/// A target that reads through and writes nowhere: every change "succeeds" untouched.
pub struct DryRun<'a>(pub &'a dyn Target);

impl Target for DryRun<'_> {
    fn name(&self) -> &str {
        self.0.name()
    }

    /// Only the changes modules make go through `run` here (`chown`, `ln`): commands are
    /// never run in check mode, and reads have their own methods, passed through.
    fn run(
        &self,
        _argv: &[String],
        _shell: Option<&str>,
        _chdir: Option<&str>,
        _env: &[(String, String)],
    ) -> io::Result<CmdOut> {
        Ok(CmdOut {
            rc: 0,
            stdout: String::new(),
            stderr: String::new(),
        })
    }

    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        self.0.read(path)
    }

    fn write(&self, _path: &str, _data: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn stat(&self, path: &str) -> io::Result<Option<Stat>> {
        self.0.stat(path)
    }

    fn chmod(&self, _path: &str, _mode: u32) -> io::Result<()> {
        Ok(())
    }

    fn mkdir_p(&self, _path: &str) -> io::Result<()> {
        Ok(())
    }

    fn remove(&self, _path: &str) -> io::Result<()> {
        Ok(())
    }

    fn lost(&self) -> Option<String> {
        self.0.lost()
    }

    fn describe(
        &self,
        path: &str,
        follow: bool,
        checksum: bool,
    ) -> io::Result<Option<serde_json::Map<String, serde_json::Value>>> {
        self.0.describe(path, follow, checksum)
    }

    fn matches_any(&self, pattern: &str) -> io::Result<bool> {
        self.0.matches_any(pattern)
    }
}
