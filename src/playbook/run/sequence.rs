//! `with_sequence`: Ansible's `sequence` lookup — numbers from `start` to `end` (or `count`
//! of them) by `stride`, each formatted by a printf-style `format` (`%d` by default), as
//! text: `start=1 end=3` or the short form `[start-]end[/stride][:format]`.

use serde_json::Value as Json;

/// The items of one `with_sequence` term.
pub(super) fn sequence(term: &str) -> Result<Vec<Json>, String> {
    let (mut start, mut end, mut stride, mut count): (i64, Option<i64>, i64, Option<i64>) =
        (1, None, 1, None);
    let mut format = "%d".to_owned();
    if let Some(short) = shortcut(term) {
        (start, end, stride, format) = short?;
    } else {
        for word in term.split_whitespace() {
            let (k, v) = word
                .split_once('=')
                .ok_or_else(|| format!("unrecognized arguments to with_sequence: {word}"))?;
            match k {
                "start" => start = number(v)?,
                "end" => end = Some(number(v)?),
                "stride" => stride = number(v)?,
                "count" => count = Some(number(v)?),
                "format" => format = v.to_owned(),
                other => {
                    return Err(format!(
                        "unrecognized arguments to with_sequence: ['{other}']"
                    ));
                }
            }
        }
    }
    let end = match (count, end) {
        (None, None) => return Err("must specify count or end in with_sequence".into()),
        (Some(_), Some(_)) => {
            return Err("can't specify both count and end in with_sequence".into());
        }
        (Some(0), None) => return Ok(Vec::new()),
        (Some(c), None) => c
            .checked_mul(stride)
            .and_then(|n| n.checked_add(start))
            .and_then(|n| n.checked_sub(1))
            .ok_or_else(|| format!("with_sequence: count={c} is out of range"))?,
        (None, Some(e)) => e,
    };
    if stride > 0 && end < start {
        return Err("to count backwards make stride negative".into());
    }
    if stride < 0 && end > start {
        return Err("to count forward don't make stride negative".into());
    }
    if stride == 0 {
        return Ok(Vec::new());
    }
    if format.matches('%').count() != 1 {
        return Err(format!("bad formatting string: {format}"));
    }
    let mut out = Vec::new();
    let mut i = start;
    // A bound on the items, so a huge range cannot exhaust memory.
    while (stride > 0 && i <= end) || (stride < 0 && i >= end) {
        if out.len() >= 1_000_000 {
            return Err("with_sequence: more than 1000000 items".into());
        }
        out.push(Json::String(printf(&format, i)?));
        i = match i.checked_add(stride) {
            Some(n) => n,
            None => break,
        };
    }
    Ok(out)
}

type Short = Result<(i64, Option<i64>, i64, String), String>;

/// `[start-]end[/stride][:format]`, when the term has that form.
fn shortcut(term: &str) -> Option<Short> {
    let (nums, format) = match term.split_once(':') {
        Some((n, f)) if !f.is_empty() => (n, Some(f)),
        Some(_) => return None,
        None => (term, None),
    };
    let (range, stride) = match nums.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (nums, None),
    };
    let (start, end) = match range.split_once('-') {
        Some((s, e)) => (Some(s), e),
        None => (None, range),
    };
    let is_num = |s: &str| !s.is_empty() && number(s).is_ok();
    if !is_num(end) || !start.is_none_or(is_num) || !stride.is_none_or(is_num) {
        return None;
    }
    let n = |s: &str| number(s).unwrap_or_default();
    Some(Ok((
        start.map_or(1, n),
        Some(n(end)),
        stride.map_or(1, n),
        format.unwrap_or("%d").to_owned(),
    )))
}

/// A number as the lookup reads one: decimal, `0x` hexadecimal or `0` octal.
fn number(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let parsed = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(h, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        i64::from_str_radix(&t[1..], 8)
    } else {
        t.parse()
    };
    parsed.map_err(|_| format!("can't parse arg {s:?} as integer"))
}

/// Python's `format % i` for a format with one conversion: flags `-`, `0`, `#`, `+`, a
/// width, and `d`, `i`, `u`, `s`, `x`, `X` or `o`.
fn printf(format: &str, i: i64) -> Result<String, String> {
    let bad = || format!("problem formatting {i} with {format:?}");
    let at = format.find('%').ok_or_else(bad)?;
    let (head, spec) = format.split_at(at);
    let spec = &spec[1..];
    let flags: String = spec.chars().take_while(|c| "-0#+ ".contains(*c)).collect();
    let rest = &spec[flags.len()..];
    let width: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let rest = &rest[width.len()..];
    let mut chars = rest.chars();
    let conv = chars.next().ok_or_else(bad)?;
    let tail: String = chars.collect();
    let width: usize = if width.is_empty() {
        0
    } else {
        width.parse().map_err(|_| bad())?
    };
    // One item's padding is bounded as a template's output is.
    if width > 4096 {
        return Err(format!("with_sequence: a width of {width} is too wide"));
    }
    let alt = flags.contains('#');
    let (prefix, digits) = match conv {
        'd' | 'i' | 'u' | 's' => ("", i.unsigned_abs().to_string()),
        'x' => (
            if alt { "0x" } else { "" },
            format!("{:x}", i.unsigned_abs()),
        ),
        'X' => (
            if alt { "0X" } else { "" },
            format!("{:X}", i.unsigned_abs()),
        ),
        'o' => (
            if alt { "0o" } else { "" },
            format!("{:o}", i.unsigned_abs()),
        ),
        _ => return Err(bad()),
    };
    let sign = if i < 0 {
        "-"
    } else if flags.contains('+') && conv != 's' {
        "+"
    } else {
        ""
    };
    let body_len = sign.len() + prefix.len() + digits.len();
    let pad = width.saturating_sub(body_len);
    let body = if flags.contains('-') {
        format!("{sign}{prefix}{digits}{}", " ".repeat(pad))
    } else if flags.contains('0') && conv != 's' {
        format!("{sign}{prefix}{}{digits}", "0".repeat(pad))
    } else {
        format!("{}{sign}{prefix}{digits}", " ".repeat(pad))
    };
    Ok(format!("{head}{body}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(term: &str) -> Vec<String> {
        sequence(term)
            .unwrap()
            .into_iter()
            .map(|j| j.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn huge_counts_and_widths_are_errors_not_a_crash() {
        assert!(sequence("count=9223372036854775807 stride=2").is_err());
        assert!(sequence("count=1 format=%99999999999d").is_err());
        assert_eq!(texts("count=1 format=%5d"), ["    1"]);
    }

    #[test]
    fn sequences_as_the_lookup_documents_them() {
        assert_eq!(texts("5"), ["1", "2", "3", "4", "5"]);
        assert_eq!(texts("5-8"), ["5", "6", "7", "8"]);
        assert_eq!(texts("2-10/2"), ["2", "4", "6", "8", "10"]);
        assert_eq!(
            texts("4:host%02d"),
            ["host01", "host02", "host03", "host04"]
        );
        assert_eq!(
            texts("start=5 end=11 stride=2 format=0x%02x"),
            ["0x05", "0x07", "0x09", "0x0b"]
        );
        assert_eq!(texts("count=5"), ["1", "2", "3", "4", "5"]);
        assert_eq!(
            texts("start=0x0f00 count=4 format=%04x"),
            ["0f00", "0f01", "0f02", "0f03"]
        );
        assert_eq!(texts("start=1 count=5 stride=2"), ["1", "3", "5", "7", "9"]);
        assert_eq!(texts("start=3 end=1 stride=-1"), ["3", "2", "1"]);
        assert!(texts("count=0").is_empty());
        assert!(sequence("start=3 end=1").is_err());
        assert!(sequence("start=1").is_err());
        assert!(sequence("end=2 format=%d%d").is_err());
        assert!(sequence("bogus=1").is_err());
    }
}
