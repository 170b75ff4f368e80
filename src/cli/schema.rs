//! `schema [NAME] [--service]`: the JSON Schemas of the file formats, for editors.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use stepsync::diag::{Diagnostic, expected_hint};
use stepsync::error::{Error, Result};
use stepsync::json_schema::{SCHEMAS, generate, names, objects_for_service, to_text};

/// `stepsync schema [NAME] [--service]`.
pub(crate) fn schema_cmd(
    dir: &Path,
    name: Option<&str>,
    service: bool,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    let io = |e: std::io::Error| Error::failed(format!("cannot write the schema: {e}"));
    let Some(name) = name else {
        if service {
            return Err(Diagnostic::error("`--service` needs a schema name")
                .with_hint("use `stepsync schema objects --service`")
                .into());
        }
        for s in SCHEMAS {
            writeln!(out, "{:<8} {}", s.name, s.files).map_err(io)?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    let unknown = || {
        Error::from(
            Diagnostic::error(format!("unknown schema `{name}`"))
                .with_hint(expected_hint(name, &names())),
        )
    };
    if !names().contains(&name) {
        return Err(unknown());
    }
    let schema = match (name, service) {
        ("objects", true) => objects_for_service(dir)?,
        (_, true) => {
            return Err(Diagnostic::error(format!(
                "`--service` applies to the `objects` schema only, not `{name}`"
            ))
            .into());
        }
        (_, false) => generate(name).ok_or_else(unknown)?,
    };
    out.write_all(to_text(&schema).as_bytes()).map_err(io)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_name_suggests_the_closest() {
        let mut out = Vec::new();
        let e = schema_cmd(Path::new("."), Some("stepdefs"), false, &mut out).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let text = e.to_string();
        assert!(text.contains("unknown schema `stepdefs`"), "{text}");
        assert!(text.contains("did you mean `stepdef`?"), "{text}");
    }

    #[test]
    fn no_name_lists_the_names() {
        let mut out = Vec::new();
        schema_cmd(Path::new("."), None, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for name in names() {
            assert!(text.lines().any(|l| l.starts_with(name)), "{text}");
        }
    }
}
