//! Colour for diagnostics on a terminal.

use std::borrow::Cow;

/// `text` (rendered diagnostics) as it goes to stderr: in colour when [`colour_stderr`].
pub(crate) fn for_stderr(text: &str) -> Cow<'_, str> {
    if colour_stderr() {
        colourize(text).into()
    } else {
        text.into()
    }
}

/// Whether diagnostics on stderr get colour: a terminal, and no `NO_COLOR` (no-color.org).
fn colour_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Rendered diagnostics with ANSI colour, as compilers show them on a terminal. The text is
/// the plain rendering, painted line by line, so there is one renderer to keep right.
fn colourize(text: &str) -> String {
    const RED: &str = "\x1b[1;31m";
    const YELLOW: &str = "\x1b[1;33m";
    const BLUE: &str = "\x1b[1;34m";
    const CYAN: &str = "\x1b[1;36m";
    const BOLD: &str = "\x1b[1m";
    const RESET: &str = "\x1b[0m";
    let mut out = String::with_capacity(text.len() + 64);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if let Some(rest) = line.strip_prefix("error:") {
            out.push_str(&format!("{RED}error{RESET}{BOLD}:{rest}{RESET}"));
        } else if let Some(rest) = line.strip_prefix("warning:") {
            out.push_str(&format!("{YELLOW}warning{RESET}{BOLD}:{rest}{RESET}"));
        } else if let Some(rest) = trimmed.strip_prefix("-->") {
            out.push_str(&format!("{indent}{BLUE}-->{RESET}{rest}"));
        } else if let Some(rest) = trimmed.strip_prefix("= hint:") {
            out.push_str(&format!("{indent}{CYAN}= hint:{RESET}{rest}"));
        } else if let Some((gutter, body)) = line
            .split_once(" | ")
            .or_else(|| line.strip_suffix(" |").map(|g| (g, "")))
            && gutter.trim().chars().all(|c| c.is_ascii_digit())
        {
            let body = if body.trim_start() == "^" {
                format!("{}{RED}^{RESET}", &body[..body.len() - 1])
            } else {
                body.to_owned()
            };
            let sep = if line.ends_with(" |") && body.is_empty() {
                " |"
            } else {
                " | "
            };
            out.push_str(&format!("{BLUE}{gutter}{sep}{RESET}{body}"));
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use stepsync::diag::{Diagnostic, Pos};

    #[test]
    fn colour_paints_the_parts_and_keeps_the_text() {
        let d = Diagnostic {
            pos: Some(Pos { line: 3, col: 5 }),
            source_line: Some("    modle: x".into()),
            file: Some("stepdefs/a.yaml".into()),
            hint: Some("did you mean `model`?".into()),
            ..Diagnostic::error("unknown key `modle`")
        };
        let plain = d.to_string();
        let painted = colourize(&plain);
        assert!(painted.contains("\x1b[1;31merror\x1b[0m"), "{painted:?}");
        assert!(painted.contains("\x1b[1;34m-->\x1b[0m"), "{painted:?}");
        assert!(painted.contains("\x1b[1;36m= hint:\x1b[0m"), "{painted:?}");
        let stripped = regex::Regex::new("\x1b\\[[0-9;]*m")
            .unwrap()
            .replace_all(&painted, "");
        assert_eq!(stripped, plain);
    }
}
