//! Where modules act. Modules see only the `Target` interface: `Local` works on the engine's
//! own host with the standard library; `ShellTarget` does the same through short POSIX shell
//! scripts run by a `Shell` (a local `/bin/sh`, or an SSH session), which is also how
//! `become` (sudo) works on either.

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
    /// Why the host became unreachable during the run (a broken connection), if it did.
    fn lost(&self) -> Option<String> {
        None
    }

    /// What Ansible's `stat` module reports of `path` (`None`: nothing there), read by one
    /// shell script on the target whichever kind it is. `follow` describes what a symlink
    /// points to instead of the link; `checksum` adds the SHA-1 of a regular file.
    fn describe(
        &self,
        path: &str,
        follow: bool,
        checksum: bool,
    ) -> io::Result<Option<serde_json::Map<String, serde_json::Value>>> {
        let out = self.run(
            &[],
            Some(&describe_script(path, follow, checksum)),
            None,
            &[],
        )?;
        match out.rc {
            0 => Ok(Some(parse_description(path, &out.stdout))),
            DESCRIBE_ABSENT => Ok(None),
            _ => Err(io::Error::other(format!(
                "stat {path}: {}",
                out.stderr.trim()
            ))),
        }
    }

    /// Whether anything matches `pattern`, where `*` and `?` are wildcards (as `creates:` and
    /// `removes:` take them); every other character is literal.
    fn matches_any(&self, pattern: &str) -> io::Result<bool> {
        if !pattern.contains(['*', '?']) {
            return Ok(self.stat(pattern)?.is_some());
        }
        // Only the wildcards stay unquoted: the rest cannot be read by the shell as anything
        // but characters (a `$(...)` in a path stays a name).
        let mut word = String::new();
        let mut literal = String::new();
        for c in pattern.chars() {
            if c == '*' || c == '?' {
                if !literal.is_empty() {
                    word.push_str(&quote(&literal));
                    literal.clear();
                }
                word.push(c);
            } else {
                literal.push(c);
            }
        }
        if !literal.is_empty() {
            word.push_str(&quote(&literal));
        }
        let script =
            format!("for f in {word}; do [ -e \"$f\" ] || [ -L \"$f\" ] && exit 0; done; exit 1");
        Ok(self.run(&[], Some(&script), None, &[])?.rc == 0)
    }
}

/// `describe`'s exit code for a path that does not exist.
const DESCRIBE_ABSENT: i32 = 3;

fn describe_script(path: &str, follow: bool, checksum: bool) -> String {
    let p = quote(path);
    let l = if follow { "-L " } else { "" };
    let sum = if checksum {
        // A link is summed only when followed: not followed, it is not a regular file.
        format!(
            "if [ -f {p} ] && {{ [ -n '{l}' ] || [ ! -L {p} ]; }} && [ -r {p} ]; then echo \"checksum=$(sha1sum < {p} | cut -d' ' -f1)\"; fi\n"
        )
    } else {
        String::new()
    };
    format!(
        "[ -e {p} ] || [ -L {p} ] || exit {DESCRIBE_ABSENT}\n\
         stat {l}-c 'raw=%f\nsize=%s\nuid=%u\ngid=%g\npw_name=%U\ngr_name=%G\nmtime=%.6Y\natime=%.6X\nctime=%.6Z\ninode=%i\nnlink=%h\ndev=%d' -- {p} || exit 4\n\
         if [ -L {p} ]; then echo \"lnk_target=$(readlink -- {p})\"; echo \"lnk_source=$(readlink -f -- {p})\"; fi\n\
         [ -r {p} ] && echo readable=1\n[ -w {p} ] && echo writeable=1\n[ -x {p} ] && echo executable=1\n{sum}exit 0\n"
    )
}

/// `describe`'s output as Ansible's `stat` result fields, typed as Ansible types them.
fn parse_description(path: &str, text: &str) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::{Value as J, json};
    let mut m = serde_json::Map::new();
    m.insert("exists".into(), J::Bool(true));
    m.insert("path".into(), J::String(path.to_owned()));
    for flag in ["readable", "writeable", "executable"] {
        m.insert(flag.into(), J::Bool(false));
    }
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim_end();
        match k {
            "raw" => {
                let raw = u32::from_str_radix(v, 16).unwrap_or(0);
                let kind = raw & 0o170_000;
                let mode = raw & 0o7777;
                for (name, bits) in [
                    ("isdir", 0o040_000),
                    ("isreg", 0o100_000),
                    ("islnk", 0o120_000),
                    ("isblk", 0o060_000),
                    ("ischr", 0o020_000),
                    ("isfifo", 0o010_000),
                    ("issock", 0o140_000),
                ] {
                    m.insert(name.into(), J::Bool(kind == bits));
                }
                m.insert("mode".into(), J::String(format!("{mode:04o}")));
                for (i, name) in [
                    "xoth", "woth", "roth", "xgrp", "wgrp", "rgrp", "xusr", "wusr", "rusr",
                ]
                .iter()
                .enumerate()
                {
                    m.insert((*name).into(), J::Bool(mode & (1 << i) != 0));
                }
                m.insert("isuid".into(), J::Bool(mode & 0o4000 != 0));
                m.insert("isgid".into(), J::Bool(mode & 0o2000 != 0));
            }
            "size" | "uid" | "gid" | "inode" | "nlink" | "dev" => {
                m.insert(k.into(), v.parse::<u64>().map_or(J::Null, |n| json!(n)));
            }
            "mtime" | "atime" | "ctime" => {
                m.insert(k.into(), v.parse::<f64>().map_or(J::Null, |n| json!(n)));
            }
            "readable" | "writeable" | "executable" => {
                m.insert(k.into(), J::Bool(true));
            }
            "pw_name" | "gr_name" | "checksum" | "lnk_target" | "lnk_source" => {
                m.insert(k.into(), J::String(v.to_owned()));
            }
            _ => {}
        }
    }
    m
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
            // As Ansible's atomic_move: the file keeps its owner, where this user may keep it
            // (not being root, it may not, and Ansible goes on too), then its mode — in that
            // order, since a chown clears the setuid and setgid bits.
            use std::os::unix::fs::MetadataExt;
            let _ = std::os::unix::fs::chown(&tmp, Some(old.uid()), Some(old.gid()));
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

/// What a `Shell` returns: the exit code and raw output of a script.
pub struct RawOut {
    pub rc: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs a POSIX shell script on a host, feeding `stdin` when given.
pub trait Shell: Send + Sync {
    fn exec(&self, script: &str, stdin: Option<&[u8]>) -> io::Result<RawOut>;
    /// Set once the connection broke: later tasks on this host are unreachable.
    fn lost(&self) -> Option<String> {
        None
    }
}

/// `/bin/sh` on the engine's host: `become` and `delegate_to: localhost` with become.
pub struct LocalShell;

impl Shell for LocalShell {
    fn exec(&self, script: &str, stdin: Option<&[u8]>) -> io::Result<RawOut> {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
            w.write_all(data)?;
        }
        let out = child.wait_with_output()?;
        Ok(RawOut {
            rc: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

/// Quotes one word for a POSIX shell. Every path and argument that reaches a script goes
/// through here: values from the data model are never spliced in unquoted.
pub fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Exit code the scripts below use for "no such path", distinct from real failures.
const ABSENT: i32 = 3;
/// Exit code (and marker) for a command that does not exist on the target.
const NO_COMMAND: i32 = 127;
const NO_COMMAND_MARK: &str = "stepsync: command not found";

/// A host reached through a `Shell`, optionally as another user through `sudo`.
pub struct ShellTarget {
    pub name: String,
    pub shell: std::sync::Arc<dyn Shell>,
    pub become_user: Option<String>,
}

impl ShellTarget {
    fn exec(&self, script: &str, stdin: Option<&[u8]>) -> io::Result<RawOut> {
        match &self.become_user {
            None => self.shell.exec(script, stdin),
            // -n: never prompt (no password on stdin, which may carry file content);
            // -H: the target user's HOME, as Ansible's sudo does.
            Some(user) => self.shell.exec(
                &format!(
                    "exec sudo -H -n -u {} -- /bin/sh -c {}",
                    quote(user),
                    quote(script)
                ),
                stdin,
            ),
        }
    }

    /// Runs a script whose only expected failure is "absent" (exit 3).
    fn checked(
        &self,
        what: &str,
        path: &str,
        script: &str,
        stdin: Option<&[u8]>,
    ) -> io::Result<Option<Vec<u8>>> {
        let out = self.exec(script, stdin)?;
        match out.rc {
            0 => Ok(Some(out.stdout)),
            ABSENT => Ok(None),
            rc => Err(io::Error::other(format!(
                "{what} {path} failed (exit {rc}): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
        }
    }

    fn must(&self, what: &str, path: &str, script: &str, stdin: Option<&[u8]>) -> io::Result<()> {
        match self.checked(what, path, script, stdin)? {
            Some(_) => Ok(()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{what} {path}: no such file or directory"),
            )),
        }
    }
}

impl Target for ShellTarget {
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
        let mut script = String::new();
        if let Some(d) = chdir {
            script.push_str(&format!("cd {} || exit 1\n", quote(d)));
        }
        for (k, v) in env {
            if !is_env_name(k) {
                return Err(io::Error::other(format!(
                    "invalid environment variable name {k:?}"
                )));
            }
            script.push_str(&format!("export {k}={}\n", quote(v)));
        }
        match shell {
            Some(s) => script.push_str(s),
            None => {
                let (first, _) = argv
                    .split_first()
                    .ok_or_else(|| io::Error::other("empty command"))?;
                // The command module does not go through a shell: a missing program is an
                // error of its own, as it is for a local exec.
                script.push_str(&format!(
                    "command -v {} >/dev/null 2>&1 || {{ echo '{NO_COMMAND_MARK}' >&2; exit {NO_COMMAND}; }}\nexec",
                    quote(first)
                ));
                for a in argv {
                    script.push(' ');
                    script.push_str(&quote(a));
                }
            }
        }
        let out = self.exec(&script, None)?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if shell.is_none() && out.rc == NO_COMMAND && stderr.contains(NO_COMMAND_MARK) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "command not found"));
        }
        Ok(CmdOut {
            rc: out.rc,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        })
    }

    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        let p = quote(path);
        self.checked(
            "read",
            path,
            &format!("[ -e {p} ] || exit {ABSENT}\nexec cat -- {p}"),
            None,
        )
    }

    fn write(&self, path: &str, data: &[u8]) -> io::Result<()> {
        // A temporary file beside the destination and a rename, as Ansible's modules do; a new
        // file gets the shell's umask, an existing one keeps, where this user may keep it, its
        // owner (Ansible's atomic_move goes on when it may not), then its mode (a chown clears
        // the setuid and setgid bits).
        let p = quote(path);
        let script = format!(
            "t={p}.stepsync-tmp.$$\nrm -f \"$t\"\ncat > \"$t\" || {{ rm -f \"$t\"; exit 1; }}\n\
             if [ -e {p} ]; then chown --reference={p} \"$t\" 2>/dev/null; \
             chmod --reference={p} \"$t\" || {{ rm -f \"$t\"; exit 1; }}; fi\n\
             mv -f \"$t\" {p}"
        );
        self.must("write", path, &script, Some(data))
    }

    fn stat(&self, path: &str) -> io::Result<Option<Stat>> {
        let p = quote(path);
        let out = self.checked(
            "stat",
            path,
            &format!("[ -e {p} ] || exit {ABSENT}\nexec stat -L -c '%f %s' -- {p}"),
            None,
        )?;
        let Some(out) = out else { return Ok(None) };
        let text = String::from_utf8_lossy(&out);
        let mut parts = text.split_whitespace();
        let raw = parts
            .next()
            .and_then(|m| u32::from_str_radix(m, 16).ok())
            .ok_or_else(|| io::Error::other(format!("stat {path}: unexpected output {text:?}")))?;
        let size = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let kind = raw & 0o170_000;
        Ok(Some(Stat {
            is_dir: kind == 0o040_000,
            is_file: kind == 0o100_000,
            mode: raw & 0o7777,
            size,
        }))
    }

    fn chmod(&self, path: &str, mode: u32) -> io::Result<()> {
        self.must(
            "chmod",
            path,
            &format!("exec chmod {mode:o} -- {}", quote(path)),
            None,
        )
    }

    fn mkdir_p(&self, path: &str) -> io::Result<()> {
        self.must(
            "mkdir",
            path,
            &format!("exec mkdir -p -- {}", quote(path)),
            None,
        )
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        self.must(
            "remove",
            path,
            &format!("exec rm -rf -- {}", quote(path)),
            None,
        )
    }

    fn lost(&self) -> Option<String> {
        self.shell.lost()
    }
}

fn is_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_and_nothing_else_in_a_pattern_is_read_by_the_shell() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let local = Local { name: "l".into() };
        std::fs::write(dir.path().join("a.done"), "").unwrap();
        assert!(local.matches_any(&format!("{d}/*.done")).unwrap());
        assert!(local.matches_any(&format!("{d}/?.done")).unwrap());
        assert!(!local.matches_any(&format!("{d}/*.gone")).unwrap());
        let evil = format!("{d}/$(touch {d}/pwned)*`touch {d}/pwned2`");
        assert!(!local.matches_any(&evil).unwrap());
        assert!(!dir.path().join("pwned").exists() && !dir.path().join("pwned2").exists());
        let st = local
            .describe(&format!("{d}/a.done"), false, true)
            .unwrap()
            .unwrap();
        assert_eq!(st["isreg"], true);
        assert_eq!(st["checksum"], "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert!(
            local
                .describe(&format!("{d}/nope"), false, true)
                .unwrap()
                .is_none()
        );
    }

    /// A file rewritten in place keeps its owner and all of its mode, setuid included,
    /// whichever kind of target writes it (the shell one runs its script here).
    #[test]
    fn a_rewritten_file_keeps_its_owner_and_setuid_mode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        // Only root may give a file to another user; otherwise the owner is the test's own.
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        for (i, target) in [
            Box::new(Local { name: "l".into() }) as Box<dyn Target>,
            Box::new(ShellTarget {
                name: "s".into(),
                shell: std::sync::Arc::new(LocalShell),
                become_user: None,
            }),
        ]
        .iter()
        .enumerate()
        {
            let f = dir.path().join(format!("f{i}"));
            std::fs::write(&f, "old").unwrap();
            if root {
                std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
            }
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).unwrap();
            let uid = std::fs::metadata(&f).unwrap().uid();
            target.write(&f.display().to_string(), b"new").unwrap();
            let m = std::fs::metadata(&f).unwrap();
            assert_eq!(std::fs::read_to_string(&f).unwrap(), "new");
            assert_eq!((m.mode() & 0o7777, m.uid()), (0o4755, uid), "target {i}");
        }
    }

    #[test]
    fn quote_survives_the_shell() {
        for word in [
            "plain",
            "it's",
            "a b",
            "$(touch /tmp/x)",
            "`x`",
            "\"q\"",
            "new\nline",
            "",
        ] {
            let out = LocalShell
                .exec(&format!("printf %s {}", quote(word)), None)
                .expect("sh");
            assert_eq!(String::from_utf8_lossy(&out.stdout), word);
        }
    }

    #[test]
    fn shell_target_does_what_local_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().display().to_string();
        let t = ShellTarget {
            name: "localhost".into(),
            shell: std::sync::Arc::new(LocalShell),
            become_user: None,
        };
        let f = format!("{base}/d/it's a file");
        assert!(t.stat(&f).expect("stat").is_none());
        assert!(t.read(&f).expect("read").is_none());
        t.mkdir_p(&format!("{base}/d")).expect("mkdir");
        t.write(&f, b"one\n\0two").expect("write");
        assert_eq!(
            t.read(&f).expect("read").as_deref(),
            Some(&b"one\n\0two"[..])
        );
        t.chmod(&f, 0o640).expect("chmod");
        t.write(&f, b"three").expect("rewrite");
        let st = t.stat(&f).expect("stat").expect("exists");
        assert!(st.is_file && !st.is_dir);
        assert_eq!((st.mode, st.size), (0o640, 5), "a rewrite keeps the mode");
        let out = t
            .run(
                &["sh".into(), "-c".into(), "echo \"$X:$(pwd)\"".into()],
                None,
                Some(&base),
                &[("X".into(), "x y".into())],
            )
            .expect("run");
        assert_eq!(out.stdout.trim(), format!("x y:{base}"));
        let missing = t.run(&["no-such-program-here".into()], None, None, &[]);
        assert_eq!(
            missing.err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
        t.remove(&format!("{base}/d")).expect("remove");
        assert!(t.stat(&f).expect("stat").is_none());
    }
}
