//! `x.bar.baz is defined` where `x` (or `x.bar`) is itself undefined: false in Jinja2 and
//! Ansible, whose undefined values give undefined attributes. minijinja's strict undefined,
//! which stepsync keeps for everything else (printing, iterating, testing an undefined value
//! is an error), fails on the attribute lookup before the test runs, and it has no mode that
//! is strict and chains. So the test on a dotted name is spelled out step by step:
//! `(x is defined and x.bar is defined and x.bar.baz is defined)`, which `and` stops at the
//! first undefined step. Nothing else of the template changes.

use std::borrow::Cow;

/// `text` (a whole template) with the `is [not] defined` / `is [not] undefined` tests on
/// dotted names of its `{{ }}` and `{% %}` blocks spelled out; unchanged when it has none.
pub(crate) fn in_template(text: &str) -> Cow<'_, str> {
    if !text.contains("defined") && !text.contains('+') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(i) = rest.find('{') {
        let (lit, tail) = rest.split_at(i);
        out.push_str(lit);
        let close = match tail.get(..2) {
            Some("{{") => "}}",
            Some("{%") => "%}",
            Some("{#") => "#}",
            _ => {
                out.push('{');
                rest = &tail[1..];
                continue;
            }
        };
        let Some(end) = code_end(&tail[2..], close) else {
            // An unclosed block: left for the parser to report.
            out.push_str(tail);
            rest = "";
            break;
        };
        let inner = &tail[2..2 + end];
        let block_end = 2 + end + close.len();
        if close == "#}" {
            out.push_str(&tail[..block_end]);
            rest = &tail[block_end..];
            continue;
        }
        // A block's `+`/`-` right after `{%` or before `%}` (a `-` for `{{ }}`) is
        // whitespace control, not an operator.
        let control = |c: char| c == '-' || (close == "%}" && c == '+');
        let lead = usize::from(inner.starts_with(control));
        let trail = usize::from(inner.len() > lead && inner.ends_with(control));
        let new = in_expression(&inner[lead..inner.len() - trail]);
        changed |= matches!(new, Cow::Owned(_));
        out.push_str(&tail[..2 + lead]);
        out.push_str(&new);
        out.push_str(&inner[inner.len() - trail..]);
        out.push_str(close);
        rest = &tail[block_end..];
        // A raw block is text up to its end tag.
        if close == "%}" && inner.trim_matches(['-', '+', ' ', '\t', '\n']) == "raw" {
            let stop = rest.find("endraw").map_or(rest.len(), |e| {
                rest[e..].find("%}").map_or(rest.len(), |c| e + c + 2)
            });
            out.push_str(&rest[..stop]);
            rest = &rest[stop..];
        }
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// Where `close` ends the block that starts `s`, outside string literals.
fn code_end(s: &str, close: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        match quote {
            Some(q) => {
                if b[i] == b'\\' {
                    i += 1;
                } else if b[i] == q {
                    quote = None;
                }
            }
            None if close != "#}" && (b[i] == b'\'' || b[i] == b'"') => quote = Some(b[i]),
            None if b[i..].starts_with(close.as_bytes()) => return Some(i),
            None => {}
        }
        i += 1;
    }
    None
}

/// `code` (an expression or the inside of a block) with its tests on dotted names spelled out,
/// and each unary `+` written `- -`: Jinja2 has unary plus, minijinja only unary minus, and
/// two minuses are what `+` is in Python — the number itself, an error on anything else —
/// at the same precedence.
pub(crate) fn in_expression(code: &str) -> Cow<'_, str> {
    if !code.contains("defined") && !code.contains('+') {
        return Cow::Borrowed(code);
    }
    let b = code.as_bytes();
    let mut out = String::with_capacity(code.len() + 32);
    let mut i = 0;
    let mut copied = 0;
    let mut changed = false;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        let c = b[i];
        if c == b'\'' || c == b'"' {
            // A string literal is skipped whole.
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if c == b'+' && unary_position(&code[..i]) {
            out.push_str(&code[copied..i]);
            out.push_str("- -");
            i += 1;
            copied = i;
            changed = true;
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == b'_') {
            i += 1;
            continue;
        }
        // A name; not an attribute or the name after a call or subscript (`f(x).a`).
        let prev = code[..i].trim_end().as_bytes().last().copied();
        let start = i;
        let mut parts = Vec::new();
        loop {
            let s = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            parts.push(&code[s..i]);
            if i + 1 < b.len()
                && b[i] == b'.'
                && (b[i + 1].is_ascii_alphabetic() || b[i + 1] == b'_')
            {
                i += 1;
            } else {
                break;
            }
        }
        if parts.len() < 2 || matches!(prev, Some(b'.' | b')' | b']')) {
            continue;
        }
        let Some((negated, len)) = defined_test(&code[i..]) else {
            continue;
        };
        let steps: Vec<String> = (1..=parts.len())
            .map(|n| format!("{} is defined", parts[..n].join(".")))
            .collect();
        let all = steps.join(" and ");
        out.push_str(&code[copied..start]);
        if negated {
            out.push_str(&format!("(not ({all}))"));
        } else {
            out.push_str(&format!("({all})"));
        }
        i += len;
        copied = i;
        changed = true;
    }
    if !changed {
        return Cow::Borrowed(code);
    }
    out.push_str(&code[copied..]);
    Cow::Owned(out)
}

/// Whether an operator right after `before` is a prefix one: at the start, after an opening
/// bracket, a separator, another operator or a keyword that an operand follows.
fn unary_position(before: &str) -> bool {
    let t = before.trim_end();
    let Some(last) = t.chars().last() else {
        return true;
    };
    if last.is_alphanumeric() || last == '_' {
        let word = &t[t
            .trim_end_matches(|c: char| c.is_alphanumeric() || c == '_')
            .len()..];
        return matches!(
            word,
            "and" | "or" | "not" | "in" | "if" | "elif" | "else" | "is" | "return"
        );
    }
    !matches!(last, ')' | ']' | '}' | '\'' | '"' | '.')
}

/// Whether `s` starts with ` is [not] defined` or ` is [not] undefined`: whether the test
/// is negated, and its length.
fn defined_test(s: &str) -> Option<(bool, usize)> {
    fn words(s: &str) -> Option<(&str, usize)> {
        let t = s.trim_start();
        let skipped = s.len() - t.len();
        let end = t
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(t.len());
        (end > 0).then(|| (&t[..end], skipped + end))
    }
    if !s.starts_with(char::is_whitespace) {
        return None;
    }
    let (is, mut len) = words(s)?;
    if is != "is" {
        return None;
    }
    let (mut w, n) = words(&s[len..])?;
    len += n;
    let mut negated = false;
    if w == "not" {
        negated = true;
        let (w2, n2) = words(&s[len..])?;
        w = w2;
        len += n2;
    }
    match w {
        "defined" => Some((negated, len)),
        "undefined" => Some((!negated, len)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_on_dotted_names_are_spelled_out() {
        assert_eq!(
            in_expression("x.bar.baz is not defined"),
            "(not (x is defined and x.bar is defined and x.bar.baz is defined))"
        );
        assert_eq!(
            in_expression("a or r.stdout is defined"),
            "a or (r is defined and r.stdout is defined)"
        );
        assert_eq!(
            in_expression("x.y is undefined"),
            "(not (x is defined and x.y is defined))"
        );
        // Left alone: plain names, attributes of calls, strings, other tests.
        for same in [
            "x is defined",
            "f(a).b.c is defined",
            "'x.y is defined'",
            "x.y is definedness",
            "x.y is string",
        ] {
            assert!(matches!(in_expression(same), Cow::Borrowed(_)), "{same}");
        }
        assert_eq!(
            in_template(
                "t {{ 'x.y is defined' }} x.y is defined {% if a.b is defined %}y{% endif %}"
            ),
            "t {{ 'x.y is defined' }} x.y is defined {% if (a is defined and a.b is defined) %}y{% endif %}"
        );
        // Unary plus, which minijinja lacks, as two minuses; binary plus, exponents and
        // whitespace control stay.
        assert_eq!(in_expression("+x"), "- -x");
        assert_eq!(in_expression("a * +b - (+1)"), "a * - -b - (- -1)");
        assert_eq!(in_expression("x if +y else +z"), "x if - -y else - -z");
        for same in ["a + b", "1e+5", "f(x) + 1", "'+x'", "[1] + [2]", "x.y+1"] {
            assert!(matches!(in_expression(same), Cow::Borrowed(_)), "{same}");
        }
        assert_eq!(in_template("{{ +x }}"), "{{ - -x }}");
        assert_eq!(
            in_template("{%+ if +x +%}y{% endif %}"),
            "{%+ if - -x +%}y{% endif %}"
        );
        assert_eq!(in_template("{{- +x -}}"), "{{- - -x -}}");
        assert_eq!(
            in_template("{% if a %}x{% else +%}y{% endif %}{{ größe + 1 }}"),
            "{% if a %}x{% else +%}y{% endif %}{{ größe + 1 }}"
        );
        assert_eq!(in_expression("größe and +1"), "größe and - -1");
        let raw = "{% raw %}{{ a.b is defined }}{% endraw %}{# a.b is defined #}";
        assert!(matches!(in_template(raw), Cow::Borrowed(_)));
    }
}
