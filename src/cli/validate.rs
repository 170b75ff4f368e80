//! `validate`: every problem of the service directory (and of objects files) at once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use stepsync::diag::Severity;
use stepsync::error::Result;
use stepsync::validate::validate;

use super::objects::expand_files;
use super::{colour, stdout_err};

/// `validate`: every problem on stderr (errors and warnings), a summary on stdout; exit 2
/// when there is an error.
pub(crate) fn validate_cmd(dir: &Path, files: &[PathBuf], out: &mut dyn Write) -> Result<ExitCode> {
    let files = expand_files(files)?;
    let diags = validate(dir, &files);
    let text = diags.to_string();
    if !text.is_empty() {
        eprintln!("{}\n", colour::for_stderr(&text));
    }
    let errors = diags
        .0
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diags.0.len() - errors;
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    if errors > 0 {
        writeln!(
            out,
            "invalid: {}, {}",
            plural(errors, "error"),
            plural(warnings, "warning")
        )
        .map_err(stdout_err)?;
        Ok(ExitCode::from(2))
    } else {
        writeln!(out, "valid ({})", plural(warnings, "warning")).map_err(stdout_err)?;
        Ok(ExitCode::SUCCESS)
    }
}
