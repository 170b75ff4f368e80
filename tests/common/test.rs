//! The fluent builder every CLI test uses: a service directory (`Service`), one `stepsync`
//! command on it (`Test`: files, environment, arguments, the exit code and what stdout and
//! stderr must show), and what it printed (`Out`).
//!
//! ```ignore
//! Test::new()
//!     .schema(SITE_SLICE)
//!     .file("objects.yaml", "Slice:\n  - {name: s}\n")
//!     .args(["apply", "-f", "objects.yaml"])
//!     .status(2)
//!     .stderr_contains("objects.yaml:2:5")
//!     .run();
//! ```
//!
//! Most tests run several commands on one service: `Service::test()` starts the next one on
//! the same directory, and `Out::service` keeps the directory of a `Test::new()` chain.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use regex::Regex;

/// A service directory. Clones share it; a temporary one goes when the last clone does.
#[derive(Clone)]
pub struct Service {
    dir: Arc<Dir>,
}

enum Dir {
    Temp(tempfile::TempDir),
    /// A directory of the repository (a shipped service): for commands that only read.
    Fixed(PathBuf),
}

impl Service {
    /// A service named `test` with the given model schema.
    pub fn new(schema: &str) -> Service {
        let s = Service::empty();
        s.file("stepsync.yaml", "name: test\n");
        s.file("schemas/models.yaml", schema);
        s
    }

    /// An empty temporary directory.
    pub fn empty() -> Service {
        Service {
            dir: Arc::new(Dir::Temp(tempfile::tempdir().expect("temp dir"))),
        }
    }

    /// An existing directory, used as it is: tests never write into it.
    pub fn at(path: &Path) -> Service {
        Service {
            dir: Arc::new(Dir::Fixed(path.to_path_buf())),
        }
    }

    pub fn path(&self) -> &Path {
        match &*self.dir {
            Dir::Temp(t) => t.path(),
            Dir::Fixed(p) => p,
        }
    }

    /// Writes `text` to `rel` in the service directory, creating folders as needed.
    pub fn file(&self, rel: &str, text: &str) -> &Self {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
        self
    }

    /// The next command on this service.
    pub fn test(&self) -> Test {
        Test {
            service: self.clone(),
            dir: None,
            args: Vec::new(),
            env: Vec::new(),
            status: Some(0),
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    /// `stepsync -C DIR ARGS` with stdin closed, for tests that spawn and wait themselves
    /// (daemons, concurrent processes).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(super::bin());
        c.arg("-C").arg(self.path()).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Starts `stepsync run` (the daemon), its output discarded; killed when the guard is
    /// dropped, also when the test panics.
    pub fn daemon_guard(&self) -> Running {
        Running(self.daemon())
    }

    /// Starts `stepsync run` (the daemon), its output discarded; the caller kills it.
    pub fn daemon(&self) -> std::process::Child {
        self.command(&["run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the daemon")
    }

    /// Shorthand: runs `args` and insists on exit code 0.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Out {
        self.test().args(args).run()
    }

    /// Shorthand: runs `args` and insists on exit code `code`.
    #[track_caller]
    pub fn expect(&self, args: &[&str], code: i32) -> Out {
        self.test().args(args).status(code).run()
    }

    /// `get -o json` of one object, parsed.
    #[track_caller]
    pub fn object(&self, model: &str, key: &str) -> serde_json::Value {
        let out = self.ok(&["get", model, key, "-o", "json"]);
        serde_json::from_str(&out.stdout).expect("get -o json prints JSON")
    }

    /// The keys of every object of `model`.
    #[track_caller]
    pub fn keys(&self, model: &str) -> Vec<String> {
        let out = self.ok(&["get", model, "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        v.as_array()
            .expect("array")
            .iter()
            .map(|o| o["key"].as_str().expect("key").to_owned())
            .collect()
    }
}

/// What one output stream must show.
enum Want {
    Equals(String),
    Contains(String),
    Lacks(String),
    Matches(Regex),
}

impl Want {
    /// What is wrong with `text`, if anything.
    fn problem(&self, text: &str) -> Option<String> {
        match self {
            Want::Equals(s) if text != s => Some(format!("is not {s:?}")),
            Want::Contains(s) if !text.contains(s.as_str()) => {
                Some(format!("does not contain {s:?}"))
            }
            Want::Lacks(s) if text.contains(s.as_str()) => Some(format!("contains {s:?}")),
            Want::Matches(re) if !re.is_match(text) => Some(format!("does not match /{re}/")),
            _ => None,
        }
    }
}

/// One `stepsync` command to run on a service, and what it must do. Nothing runs until
/// `run`.
#[must_use]
pub struct Test {
    service: Service,
    /// A subdirectory of the service to run in, instead of the service directory.
    dir: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// `None`: any exit code.
    status: Option<i32>,
    stdout: Vec<Want>,
    stderr: Vec<Want>,
}

impl Test {
    /// A fresh service named `test` (its `stepsync.yaml` only); the command must exit 0
    /// unless `status` says otherwise.
    pub fn new() -> Test {
        let s = Service::empty();
        s.file("stepsync.yaml", "name: test\n");
        s.test()
    }

    /// A fresh, empty directory.
    pub fn empty() -> Test {
        Service::empty().test()
    }

    /// The model schema, as `schemas/models.yaml`.
    pub fn schema(self, text: &str) -> Self {
        self.file("schemas/models.yaml", text)
    }

    /// The service config, `stepsync.yaml`.
    pub fn config(self, text: &str) -> Self {
        self.file("stepsync.yaml", text)
    }

    /// Writes a file of the service now, so later commands see it too.
    pub fn file(self, rel: &str, text: &str) -> Self {
        self.service.file(rel, text);
        self
    }

    /// Runs in `sub`, a subdirectory of the service (`-C` points there).
    pub fn dir(mut self, sub: &str) -> Self {
        self.dir = Some(sub.to_owned());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    pub fn args<'a>(mut self, args: impl AsRef<[&'a str]>) -> Self {
        self.args
            .extend(args.as_ref().iter().map(|a| (*a).to_owned()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The exit code the command must end with (0 by default).
    pub fn status(mut self, code: i32) -> Self {
        self.status = Some(code);
        self
    }

    /// Accepts any exit code: for tests that look at `Out::code` themselves.
    pub fn any_status(mut self) -> Self {
        self.status = None;
        self
    }

    pub fn stdout(mut self, text: &str) -> Self {
        self.stdout.push(Want::Equals(text.to_owned()));
        self
    }

    pub fn stdout_contains(mut self, text: &str) -> Self {
        self.stdout.push(Want::Contains(text.to_owned()));
        self
    }

    pub fn stdout_lacks(mut self, text: &str) -> Self {
        self.stdout.push(Want::Lacks(text.to_owned()));
        self
    }

    /// A regular expression stdout must match somewhere (anchor it with `^`/`$` if needed).
    pub fn stdout_matches(mut self, re: &str) -> Self {
        self.stdout
            .push(Want::Matches(Regex::new(re).expect("regex")));
        self
    }

    pub fn stderr(mut self, text: &str) -> Self {
        self.stderr.push(Want::Equals(text.to_owned()));
        self
    }

    pub fn stderr_contains(mut self, text: &str) -> Self {
        self.stderr.push(Want::Contains(text.to_owned()));
        self
    }

    pub fn stderr_lacks(mut self, text: &str) -> Self {
        self.stderr.push(Want::Lacks(text.to_owned()));
        self
    }

    /// A regular expression stderr must match somewhere (anchor it with `^`/`$` if needed).
    pub fn stderr_matches(mut self, re: &str) -> Self {
        self.stderr
            .push(Want::Matches(Regex::new(re).expect("regex")));
        self
    }

    /// Runs the command and checks every expectation, reporting all that failed at once
    /// with what the command printed.
    #[track_caller]
    pub fn run(self) -> Out {
        let dir = match &self.dir {
            Some(sub) => self.service.path().join(sub),
            None => self.service.path().to_path_buf(),
        };
        let o = Command::new(super::bin())
            .arg("-C")
            .arg(&dir)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .expect("run stepsync");
        let out = Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            service: self.service,
        };
        let mut problems = Vec::new();
        if let Some(code) = self.status
            && out.code != code
        {
            problems.push(format!("exited {} (wanted {code})", out.code));
        }
        for (name, text, wants) in [
            ("stdout", &out.stdout, &self.stdout),
            ("stderr", &out.stderr, &self.stderr),
        ] {
            problems.extend(
                wants
                    .iter()
                    .filter_map(|w| w.problem(text))
                    .map(|p| format!("{name} {p}")),
            );
        }
        assert!(
            problems.is_empty(),
            "stepsync -C {} {:?}:\n{}\nstdout:\n{}\nstderr:\n{}",
            dir.display(),
            self.args,
            problems.join("\n"),
            out.stdout,
            out.stderr
        );
        out
    }
}

impl Default for Test {
    fn default() -> Test {
        Test::new()
    }
}

/// What a command printed, and the service it ran on (for the commands that follow).
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub service: Service,
}

// ---- the builder's own tests ----------------------------------------------------------------

#[test]
#[should_panic(expected = "exited 2 (wanted 0)\nstderr does not contain \"no such text\"")]
fn a_failed_run_reports_every_unmet_expectation() {
    Test::empty()
        .args(["frobnicate"])
        .stderr_contains("no such text")
        .run();
}

#[test]
fn the_service_outlives_the_run_for_the_next_command() {
    let out = Test::new()
        .schema("models:\n  Site:\n    fields: {name: string}\n")
        .file("o.yaml", "Site:\n  - {name: a}\n")
        .args(["apply", "-f", "o.yaml"])
        .stdout_matches(r"^Site/a created")
        .stderr("")
        .run();
    assert_eq!(out.service.keys("Site"), ["a"]);
}

/// A process a test started, killed and reaped when dropped.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
