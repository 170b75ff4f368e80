//! The integration tests, in one binary: each module is one area of the product, and every
//! test runs the real `stepsync` binary (or the library) on throw-away service directories.
//! One binary links the library once instead of once per file. `cargo test NAME` runs the
//! tests whose path contains NAME (`cargo test engine::`, `cargo test --test integration
//! graph_prints`).
//!
//! `autotests = false` in Cargo.toml: a new `tests/*.rs` file is a module here, and
//! `every_test_file_is_a_module` makes sure none is forgotten.

mod common;

mod compat;
mod crash;
mod drift;
mod engine;
mod events;
mod example_cloud_sites;
mod example_fabric_net;
mod example_rest_devices;
mod goal;
mod hello;
mod intent;
mod json_schemas;
mod loops;
mod malformed;
mod modules_registry;
mod modules_system;
mod objects;
mod operator;
mod playbook;
mod policies;
mod pull;
mod rest;
mod serve;
mod service;
mod validate;
mod watchers;
mod workers;

/// With `autotests = false`, a `tests/*.rs` file not listed above would silently never run.
#[test]
fn every_test_file_is_a_module() {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let this = std::fs::read_to_string(tests.join("lib.rs")).unwrap();
    for e in std::fs::read_dir(&tests).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if p.extension().is_some_and(|x| x == "rs") && name != "lib" {
            assert!(
                this.contains(&format!("\nmod {name};\n")),
                "tests/{name}.rs is not a module of tests/lib.rs"
            );
        }
    }
}
