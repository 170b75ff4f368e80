//! What the integration tests share: the fluent builder (`test.rs`), the fixtures
//! (`fixtures.rs`), a recording HTTP server (`http.rs`), a client of `serve` (`client.rs`),
//! a throw-away sshd (`sshd.rs`) and a few file helpers.
#![allow(dead_code)]

pub mod client;
pub mod fixtures;
pub mod http;
pub mod sshd;
mod test;

use std::path::{Path, PathBuf};

pub use test::{Out, Service, Test};

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

/// Copies the tree `from` into `to`, leaving out engine state (`.stepsync/`) a shipped
/// service may have from a local run.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("file name");
        if name == ".stepsync" {
            continue;
        }
        if p.is_dir() {
            copy_dir(&p, &to.join(name));
        } else {
            std::fs::copy(&p, to.join(name)).expect("copy");
        }
    }
}

/// A 127.0.0.1 port free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
