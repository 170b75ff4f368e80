//! User-facing diagnostics: `error: <what>`, `--> file:line:col`, the source line with a
//! caret, and an optional hint — the shape a compiler uses, so every file error is actionable.

use std::fmt;
use std::path::{Path, PathBuf};

/// A 1-based position in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a user's file (or in the service as a whole when `file` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub file: Option<PathBuf>,
    pub pos: Option<Pos>,
    /// The offending line, captured when the diagnostic is made so rendering needs no I/O.
    pub source_line: Option<String>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            file: None,
            pos: None,
            source_line: None,
            hint: None,
        }
    }

    /// An error at `pos` in `file`, whose text is `source` (used to quote the line).
    pub fn at(message: impl Into<String>, file: &Path, source: &str, pos: Option<Pos>) -> Self {
        let source_line = pos.and_then(|p| {
            source
                .lines()
                .nth(p.line.saturating_sub(1) as usize)
                .map(str::to_owned)
        });
        Diagnostic {
            file: Some(file.to_path_buf()),
            pos,
            source_line,
            ..Diagnostic::error(message)
        }
    }

    pub fn in_file(message: impl Into<String>, file: &Path) -> Self {
        Diagnostic {
            file: Some(file.to_path_buf()),
            ..Diagnostic::error(message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    /// `file:line:col`, or as much of it as is known.
    pub fn location(&self) -> Option<String> {
        let file = self.file.as_ref()?.display().to_string();
        Some(match self.pos {
            Some(p) => format!("{file}:{}:{}", p.line, p.col),
            None => file,
        })
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{label}: {}", printable(&shorten(&self.message), true))?;
        if let Some(loc) = self.location() {
            write!(f, "\n  --> {loc}")?;
        }
        if let (Some(line), Some(pos)) = (&self.source_line, self.pos) {
            let num = pos.line.to_string();
            let pad = " ".repeat(num.len());
            let line = printable(line, false);
            let (shown, caret_at) = window(&line, pos.col.saturating_sub(1) as usize);
            // Carets line up with the column, counting characters, not bytes.
            let lead: String = shown
                .chars()
                .take(caret_at)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n{pad} |\n{num} | {shown}\n{pad} | {lead}^")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  = hint: {}", printable(hint, true))?;
        }
        Ok(())
    }
}

/// Where something was defined, kept so a later check (a cycle, a dangling ref) can point
/// back at it. The file's text is shared, and the line is found only when a diagnostic is
/// made: origins are taken for every object of a large file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub pos: Option<Pos>,
    pub text: Option<std::sync::Arc<str>>,
}

impl Origin {
    pub fn diag(&self, message: impl Into<String>) -> Diagnostic {
        match &self.text {
            Some(text) => Diagnostic::at(message, &self.file, text, self.pos),
            None => Diagnostic {
                file: Some(self.file.clone()),
                pos: self.pos,
                ..Diagnostic::error(message)
            },
        }
    }

    /// `file:line:col` for use inside a message.
    pub fn short(&self) -> String {
        match self.pos {
            Some(p) => format!("{}:{}:{}", self.file.display(), p.line, p.col),
            None => self.file.display().to_string(),
        }
    }
}

/// `s` with control characters (an escape sequence in a hostile file would drive the
/// terminal) shown as `�`, one for one so carets stay in place. Tabs stay; newlines too where
/// a message spans lines.
fn printable(s: &str, newlines: bool) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && c != '\t' && !(newlines && c == '\n');
    if s.chars().any(bad) {
        s.chars()
            .map(|c| if bad(c) { '\u{FFFD}' } else { c })
            .collect::<String>()
            .into()
    } else {
        s.into()
    }
}

/// A message that echoes a huge value (a 20 MB scalar) keeps its start and its end, so it
/// still says what is wrong without flooding the terminal.
fn shorten(message: &str) -> std::borrow::Cow<'_, str> {
    const HEAD: usize = 300;
    const TAIL: usize = 200;
    let count = message.chars().count();
    if count <= HEAD + TAIL + 50 {
        return message.into();
    }
    let head: String = message.chars().take(HEAD).collect();
    let tail: String = message.chars().skip(count - TAIL).collect();
    format!("{head}…[{} characters cut]…{tail}", count - HEAD - TAIL).into()
}

/// At most `QUOTE_WIDTH` characters of `line` around character `col` (0-based), marked with
/// `…` where cut, and where `col` falls in the result: a minified or hostile file must not
/// flood the terminal.
fn window(line: &str, col: usize) -> (String, usize) {
    const QUOTE_WIDTH: usize = 100;
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= QUOTE_WIDTH {
        return (line.to_owned(), col);
    }
    let start = col
        .saturating_sub(QUOTE_WIDTH / 2)
        .min(chars.len().saturating_sub(QUOTE_WIDTH));
    let end = (start + QUOTE_WIDTH).min(chars.len());
    let mut out = String::new();
    let mut caret = col - start;
    if start > 0 {
        out.push('…');
        caret += 1;
    }
    out.extend(&chars[start..end]);
    if end < chars.len() {
        out.push('…');
    }
    (out, caret)
}

/// Every problem found in one pass; the error type of anything that reads user files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    /// `Err(self)` when any error was collected, so a pass can report all problems at once.
    pub fn into_result(self) -> Result<(), Diagnostics> {
        if self.has_errors() { Err(self) } else { Ok(()) }
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The closest candidate to `word`, for "did you mean" hints.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A hint listing what was expected, with a suggestion when one is close.
pub fn expected_hint(word: &str, candidates: &[&str]) -> String {
    match suggest(word, candidates.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None if candidates.is_empty() => "nothing is defined here".to_owned(),
        None => format!("expected one of: {}", candidates.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_quoted_as_a_window_with_the_caret_in_place() {
        let line = format!("{}X{}", "a".repeat(5000), "b".repeat(5000));
        let d = Diagnostic {
            pos: Some(Pos { line: 1, col: 5001 }),
            source_line: Some(line),
            ..Diagnostic::error("bad")
        };
        let text = d.to_string();
        let quoted = text.lines().nth(2).unwrap();
        let caret = text.lines().nth(3).unwrap();
        assert!(quoted.chars().count() < 120, "{quoted}");
        let x = quoted.chars().position(|c| c == 'X').unwrap();
        assert_eq!(caret.chars().position(|c| c == '^'), Some(x));
    }

    #[test]
    fn suggestions_need_a_close_match() {
        assert_eq!(suggest("strng", ["string", "int"]), Some("string"));
        assert_eq!(suggest("zzz", ["string", "int"]), None);
    }
}
