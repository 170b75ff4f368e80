//! Any text through every YAML loader of stepsync: the generic reader (YAML 1.2 and Ansible's
//! YAML 1.1), stepsync.yaml, model schemas, and objects files against a fixed schema. Errors are fine; panics, hangs and
//! unbounded memory are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepsync::config::Config;
use stepsync::diag::Diagnostics;
use stepsync::model::Schema;
use stepsync::model::objects::load_objects;
use stepsync::yaml::Source;

const SCHEMA: &str = "models:\n  Site:\n    fields:\n      name: {type: string, required: true}\n      n: int\n  Slice:\n    fields:\n      name: {type: string, required: true}\n      site: {type: ref, to: Site}\n      tags: list\n";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let src = Source::from_text("fuzz.yaml", text);
    if let Ok(docs) = src.documents() {
        for d in docs {
            let _ = d.value.to_json();
        }
    }
    if let Ok(docs) = src.clone().ansible().documents() {
        for d in docs {
            let _ = d.value.to_json();
        }
    }
    let _ = Config::parse(&src);
    let _ = Schema::from_sources(std::slice::from_ref(&src));
    if let Ok(schema) = Schema::from_sources(&[Source::from_text("schema.yaml", SCHEMA)]) {
        let mut diags = Diagnostics::default();
        let _ = load_objects(&src, &schema, &mut diags);
        // Rendering every diagnostic exercises the caret and window code on odd lines.
        let _ = diags.to_string();
    }
});
