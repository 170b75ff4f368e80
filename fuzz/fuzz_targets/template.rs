//! Any text compiled and rendered as a stepdef template, in a context with a few values.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use stepsync::config::Config;
use stepsync::diag::Origin;
use stepsync::secrets::Secrets;
use stepsync::template::Templates;
use stepsync::yaml::Source;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(&Source::from_text("stepsync.yaml", "name: fuzz\n")) else {
        return;
    };
    let secrets = Arc::new(Secrets::load(&config, std::path::Path::new(".")));
    let mut templates = Templates::new(secrets);
    let origin = Origin {
        file: "fuzz.yaml".into(),
        pos: None,
        text: None,
    };
    let Ok(t) = templates.compile(text, origin) else {
        return;
    };
    let _ = templates.free_variables(&t);
    let ctx = minijinja::context! {
        n => 3,
        s => "a {{ x }} b",
        items => vec![1, 2, 3],
        obj => minijinja::context! { name => "x", port => 80 },
    };
    let _ = templates.render(&t, &ctx);
});
