//! Where modules act: a host reached locally (`connection: local`, the implicit localhost).
//! Modules see only this interface, so an SSH target can be added without touching them.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

pub struct CmdOut {
    pub rc: i32,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, Clone)]
pub struct Stat {
    pub is_dir: bool,
    pub is_file: bool,
    pub mode: u32,
    pub size: u64,
}

pub trait Target: Send + Sync {
    fn name(&self) -> &str;
    /// Runs `argv` (no shell), or `shell` through `/bin/sh -c` when given.
    fn run(
        &self,
        argv: &[String],
        shell: Option<&str>,
        chdir: Option<&str>,
        env: &[(String, String)],
    ) -> io::Result<CmdOut>;
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>>;
    fn write(&self, path: &str, data: &[u8]) -> io::Result<()>;
    fn stat(&self, path: &str) -> io::Result<Option<Stat>>;
    fn chmod(&self, path: &str, mode: u32) -> io::Result<()>;
    fn mkdir_p(&self, path: &str) -> io::Result<()>;
    /// Removes a file or a whole directory tree.
    fn remove(&self, path: &str) -> io::Result<()>;
}

/// The engine's own host.
pub struct Local {
    pub name: String,
}

impl Target for Local {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(
        &self,
        argv: &[String],
        shell: Option<&str>,
        chdir: Option<&str>,
        env: &[(String, String)],
    ) -> io::Result<CmdOut> {
        let mut cmd = match shell {
            Some(s) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(s);
                c
            }
            None => {
                let (first, rest) = argv
                    .split_first()
                    .ok_or_else(|| io::Error::other("empty command"))?;
                let mut c = Command::new(first);
                c.args(rest);
                c
            }
        };
        if let Some(d) = chdir {
            cmd.current_dir(d);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = cmd.output()?;
        Ok(CmdOut {
            rc: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write(&self, path: &str, data: &[u8]) -> io::Result<()> {
        // Through a temporary file and a rename, as Ansible's modules do; the name is unique
        // per write, since several objects may write the same file at once.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = format!("{path}.stepsync-tmp{}-{n}", std::process::id());
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        if let Ok(old) = std::fs::metadata(path) {
            std::fs::set_permissions(&tmp, old.permissions())?;
        }
        std::fs::rename(&tmp, path)
    }

    fn stat(&self, path: &str) -> io::Result<Option<Stat>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(Stat {
                is_dir: m.is_dir(),
                is_file: m.is_file(),
                mode: m.permissions().mode() & 0o7777,
                size: m.len(),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn chmod(&self, path: &str, mode: u32) -> io::Result<()> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }

    fn mkdir_p(&self, path: &str) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}
