//! `template`: a Jinja template of the controller, rendered with the task's variables, onto
//! the target.

use super::params::Inert;
use super::params::{Flag, Mode, Str, file_params};
use super::{ModCtx, ModResult, Module, find, io, put};

pub(super) struct Template;

file_params! {
    /// Ansible's parameters; those beyond `src`, `dest` and `mode` are refused unless given what this runner does (`INERT`).
    struct Params {
        src: Option<Str>,
        dest: Option<Str>,
        mode: Option<Mode>,
        force: Option<Flag>,
        backup: Option<Flag>,
        follow: Option<Flag>,
        validate: Option<Str>,
        newline_sequence: Option<Str>,
        trim_blocks: Option<Flag>,
        lstrip_blocks: Option<Flag>,
        output_encoding: Option<Str>,
        block_start_string: Option<Str>,
        block_end_string: Option<Str>,
        variable_start_string: Option<Str>,
        variable_end_string: Option<Str>,
        comment_start_string: Option<Str>,
        comment_end_string: Option<Str>,
    }
}

impl Module for Template {
    type Params = Params;

    /// Arguments Ansible's template has that this one does not act on (the Jinja syntax settings among them): refused unless given what this runner does.
    const INERT: &'static [Inert] = &[
        Inert::only("backup", &["false"]),
        Inert::only("follow", &["false"]),
        Inert::only("force", &["true"]),
        Inert::never("validate"),
        Inert::only("newline_sequence", &["\\n"]),
        Inert::only("trim_blocks", &["true"]),
        Inert::only("lstrip_blocks", &["false"]),
        Inert::only("output_encoding", &["utf-8", "utf8"]),
        Inert::only("block_start_string", &["{%"]),
        Inert::only("block_end_string", &["%}"]),
        Inert::only("variable_start_string", &["{{"]),
        Inert::only("variable_end_string", &["}}"]),
        Inert::only("comment_start_string", &["{#"]),
        Inert::only("comment_end_string", &["#}"]),
    ];

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        let Some(Str(src)) = p.src else {
            return ModResult::fail("src is required");
        };
        let Some(path) = find(&mc.templates, &src) else {
            return ModResult::fail(format!("Could not find or access '{src}'"));
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => return io("cannot read", &path.display().to_string(), e),
        };
        // Ansible's template search path: each place with its `templates/` first, then the
        // template's own folder.
        let mut search: Vec<std::path::PathBuf> = Vec::new();
        for d in &mc.templates {
            let mut add = |p: &std::path::Path| {
                if !search.iter().any(|s| s == p) {
                    search.push(p.to_path_buf());
                }
            };
            add(d);
            if d.ends_with("templates")
                && let Some(parent) = d.parent()
            {
                add(parent);
            }
        }
        if let Some(own) = path.parent()
            && !search.iter().any(|s| s == own)
        {
            search.push(own.to_path_buf());
        }
        let rendered = match mc.templar.render_template_file(&text, mc.vars, search) {
            Ok(r) => r,
            Err(e) => return ModResult::fail(format!("{}: {e}", path.display())),
        };
        let Some(Str(dest)) = p.dest else {
            return ModResult::fail("dest is required");
        };
        put(
            mc,
            &dest,
            rendered.as_bytes(),
            p.mode.map(|m| m.0),
            p.owner.as_ref().map(|o| o.0.as_str()),
            p.group.as_ref().map(|g| g.0.as_str()),
        )
    }
}
