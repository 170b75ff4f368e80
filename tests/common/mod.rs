//! A small builder for CLI tests: a throw-away service directory, the files in it, the
//! command, and what it printed.
#![allow(dead_code)]

pub mod http;
pub mod sshd;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Service {
    dir: tempfile::TempDir,
}

/// Site / Slice (ref to Site) / Port / Instance (refs, enum, a feedback field).
pub const SCHEMA: &str = "models:
  Site:
    fields:
      name: {type: string, required: true}
      login_base: string
  Slice:
    fields:
      name: {type: string, required: true}
      site: {type: ref, to: Site, required: true}
      max_instances: {type: int, default: 10}
  Port:
    fields:
      name: string
      number: int
  Instance:
    fields:
      name: string
      slice: {type: ref, to: Slice}
      ports: {type: refs, to: Port}
      flavor: {type: string, enum: [small, large]}
      instance_id: {type: string, feedback: true}
";

impl Service {
    /// A service named `test` with the given model schema.
    pub fn new(schema: &str) -> Service {
        let s = Service {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        s.file("stepsync.yaml", "name: test\n");
        s.file("schemas/models.yaml", schema);
        s
    }

    pub fn empty() -> Service {
        Service {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, rel: &str, text: &str) -> &Self {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("-C").arg(self.dir.path()).args(args);
        c.stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        let o = self.command(args).output().expect("run stepsync");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Runs and insists on exit code `code`.
    pub fn expect(&self, args: &[&str], code: i32) -> Out {
        let out = self.run(args);
        assert_eq!(
            out.code, code,
            "stepsync {args:?} exited {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            out.code, out.stdout, out.stderr
        );
        out
    }

    pub fn ok(&self, args: &[&str]) -> Out {
        self.expect(args, 0)
    }

    /// `get -o json` of one object, parsed.
    pub fn object(&self, model: &str, key: &str) -> serde_json::Value {
        let out = self.ok(&["get", model, key, "-o", "json"]);
        serde_json::from_str(&out.stdout).expect("get -o json prints JSON")
    }

    /// The keys of every object of `model`.
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

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The stepsync under test; `STEPSYNC_TEST_BIN` runs the tests against another build (to
/// show that a test fails on the commit before a fix).
pub fn bin() -> PathBuf {
    std::env::var_os("STEPSYNC_TEST_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_stepsync")),
        PathBuf::from,
    )
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
