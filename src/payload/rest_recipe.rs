//! REST recipes on disk (SPEC §8): `.http` files (readable, replayable by `stepsync replay`
//! and by editors' REST clients) and POSIX `sh` + curl scripts. Secrets never appear in
//! clear: both read them from `STEPSYNC_SECRET_<NAME>`.

use crate::payload::rest::{BasicAuth, HttpRequest, RestPlan};
use crate::secrets::{Piece, Secrets};
use crate::template::shell_quote;

/// The placeholder an `.http` file uses for a secret (the REST Client extension's syntax).
fn http_secret(name: &str) -> String {
    format!("{{{{$processEnv {}}}}}", Secrets::env_var(name))
}

fn http_text(secrets: &Secrets, s: &str) -> String {
    secrets
        .split(s)
        .into_iter()
        .map(|p| match p {
            Piece::Text(t) => t.to_owned(),
            Piece::Secret(n) => http_secret(n),
        })
        .collect()
}

/// `s` on one line: control characters (a newline in a key) shown escaped, so a value
/// written into a comment or a header line can never start a line of its own.
fn one_line(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// The `.http` form of a recipe. `title` says what it is for (`Site/a (sync)`).
pub fn to_http(plan: &RestPlan, secrets: &Secrets, title: &str) -> String {
    let title = one_line(title);
    let mut out = format!(
        "# stepsync recipe for {title}.\n# Run it with `stepsync replay <this file>`; secrets come from STEPSYNC_SECRET_<NAME>.\n"
    );
    let mut section = |name: &str, req: &HttpRequest, meta: &[String]| {
        out.push_str(&format!("\n### {name}\n"));
        for m in meta {
            out.push_str(&format!("# @{m}\n"));
        }
        out.push_str(&format!("# @timeout {}\n", req.timeout_ms));
        if let Some(codes) = &req.expect {
            let list: Vec<String> = runs(codes)
                .into_iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            out.push_str(&format!("# @expect {}\n", list.join(",")));
        }
        out.push_str(&format!(
            "{} {}\n",
            one_line(&req.method),
            one_line(&http_text(secrets, &req.url))
        ));
        for (k, v) in &req.headers {
            out.push_str(&format!(
                "{}: {}\n",
                one_line(k),
                one_line(&http_text(secrets, v))
            ));
        }
        if let Some(a) = &req.basic_auth {
            // REST Client's own form: it encodes `user:password` when it sends; so does
            // `replay`. The recipe never holds the encoding.
            out.push_str(&format!(
                "Authorization: Basic {}\n",
                one_line(&http_text(secrets, &format!("{}:{}", a.user, a.password)))
            ));
        }
        if let Some(b) = &req.body {
            out.push_str(&format!("\n{}\n", http_text(secrets, b)));
        }
    };
    match plan {
        RestPlan::Simple(req) => section("request", req, &[]),
        RestPlan::Delta {
            observe,
            absent,
            create,
            update,
            compare,
        } => {
            let list: Vec<String> = absent.iter().map(u16::to_string).collect();
            section("observe", observe, &[format!("absent {}", list.join(","))]);
            if let Some(c) = create {
                section("create", c, &[]);
            }
            let meta: Vec<String> = compare.iter().map(|c| format!("compare {c}")).collect();
            section("update", update, &meta);
        }
    }
    out
}

/// One `### name` part of an `.http` file: its name, `# @key value` lines and request.
type Section = (String, Vec<(String, String)>, HttpRequest);

/// Reads back what [`to_http`] wrote, secrets resolved through `lookup`.
pub fn parse_http(
    text: &str,
    lookup: &dyn Fn(&str) -> Result<String, String>,
) -> Result<RestPlan, String> {
    let mut sections: Vec<Section> = Vec::new();
    for chunk in text.split("\n### ").skip(1) {
        let mut lines = chunk.lines();
        let name = lines.next().unwrap_or("").trim().to_owned();
        let mut meta = Vec::new();
        let mut request_line = None;
        for line in lines.by_ref() {
            if let Some(m) = line.strip_prefix("# @") {
                let (k, v) = m.split_once(' ').unwrap_or((m, ""));
                meta.push((k.to_owned(), v.to_owned()));
            } else if line.starts_with('#') || line.trim().is_empty() {
                continue;
            } else {
                request_line = Some(line.to_owned());
                break;
            }
        }
        let request_line =
            request_line.ok_or_else(|| format!("section `{name}` has no request line"))?;
        let (method, url) = request_line
            .split_once(' ')
            .ok_or_else(|| format!("bad request line `{request_line}`"))?;
        let mut headers = Vec::new();
        let mut basic_auth = None;
        let mut body = None;
        let mut in_body = false;
        for line in lines {
            if in_body {
                if !line.is_empty() {
                    body = Some(resolve(line, lookup)?);
                }
                continue;
            }
            if line.is_empty() {
                in_body = true;
                continue;
            }
            let (k, v) = line
                .split_once(": ")
                .ok_or_else(|| format!("bad header line `{line}`"))?;
            match v.strip_prefix("Basic ").map(|c| resolve(c, lookup)) {
                Some(pair) if k.eq_ignore_ascii_case("authorization") => {
                    let pair = pair?;
                    let (user, password) = pair.split_once(':').unwrap_or((&pair, ""));
                    basic_auth = Some(BasicAuth {
                        user: user.to_owned(),
                        password: password.to_owned(),
                    });
                }
                _ => headers.push((k.to_owned(), resolve(v, lookup)?)),
            }
        }
        let get = |k: &str| meta.iter().find(|(mk, _)| mk == k).map(|(_, v)| v.clone());
        let codes = |v: String| -> Result<Vec<u16>, String> {
            let code = |c: &str| {
                c.trim()
                    .parse::<u16>()
                    .map_err(|e| format!("bad status code `{c}`: {e}"))
            };
            let mut out = Vec::new();
            for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match part.split_once('-') {
                    Some((a, b)) => out.extend(code(a)?..=code(b)?),
                    None => out.push(code(part)?),
                }
            }
            Ok(out)
        };
        let req = HttpRequest {
            basic_auth,
            method: method.to_owned(),
            url: resolve(url, lookup)?,
            headers,
            body,
            timeout_ms: get("timeout")
                .and_then(|t| t.parse().ok())
                .unwrap_or(30_000),
            expect: get("expect").map(codes).transpose()?,
        };
        sections.push((name, meta, req));
    }
    let take = |n: &str| sections.iter().find(|(name, _, _)| name == n);
    if let Some((_, _, req)) = take("request") {
        return Ok(RestPlan::Simple(req.clone()));
    }
    let (_, obs_meta, observe) =
        take("observe").ok_or("no `### request` or `### observe` section")?;
    let (_, upd_meta, update) = take("update").ok_or("no `### update` section")?;
    let absent = obs_meta
        .iter()
        .find(|(k, _)| k == "absent")
        .map(|(_, v)| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![404]);
    Ok(RestPlan::Delta {
        observe: observe.clone(),
        absent,
        create: take("create").map(|(_, _, r)| r.clone()),
        update: update.clone(),
        compare: upd_meta
            .iter()
            .find(|(k, _)| k == "compare")
            .map(|(_, v)| v.clone()),
    })
}

fn resolve(s: &str, lookup: &dyn Fn(&str) -> Result<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("{{$processEnv ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "{{$processEnv ".len()..];
        let end = after.find("}}").ok_or("unclosed {{$processEnv")?;
        out.push_str(&lookup(after[..end].trim())?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A shell word that evaluates to `s`, with secrets expanded from the environment.
fn sh_word(secrets: &Secrets, s: &str) -> String {
    let pieces = secrets.split(s);
    if pieces.is_empty() {
        return "''".to_owned();
    }
    pieces
        .into_iter()
        .map(|p| match p {
            Piece::Text(t) => shell_quote(t),
            Piece::Secret(n) => format!("\"${{{}}}\"", Secrets::env_var(n)),
        })
        .collect()
}

/// The curl command for one request; with a body, it reads it from standard input.
fn curl(secrets: &Secrets, req: &HttpRequest, extra: &str) -> String {
    let mut cmd = String::new();
    if let Some(b) = &req.body {
        cmd.push_str(&format!("printf '%s' {} | ", sh_word(secrets, b)));
    }
    cmd.push_str(&format!(
        "curl -sS {extra}-X {} --max-time {}",
        shell_quote(&req.method),
        req.timeout_ms.div_ceil(1000).max(1)
    ));
    for (k, v) in &req.headers {
        cmd.push_str(&format!(
            " \\\n  -H {}",
            sh_word(secrets, &format!("{k}: {v}"))
        ));
    }
    if let Some(a) = &req.basic_auth {
        // curl encodes it; the script holds the user and the password's reference only.
        cmd.push_str(&format!(
            " \\\n  -u {}",
            sh_word(secrets, &format!("{}:{}", a.user, a.password))
        ));
    }
    if req.body.is_some() {
        cmd.push_str(" \\\n  --data-binary @-");
    }
    cmd.push_str(&format!(" \\\n  {}", sh_word(secrets, &req.url)));
    cmd
}

/// Status codes as runs of consecutive codes (`200-299,404` rather than 101 numbers).
fn runs(codes: &[u16]) -> Vec<(u16, u16)> {
    let mut sorted = codes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for c in sorted {
        match out.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(c) => *end = c,
            _ => out.push((c, c)),
        }
    }
    out
}

/// A shell `case` pattern for the codes: a whole hundred as `2??`, other runs code by code.
fn case_pattern(codes: &[u16]) -> String {
    let mut parts = Vec::new();
    for (a, b) in runs(codes) {
        let (mut c, b) = (u32::from(a), u32::from(b));
        while c <= b {
            if c % 100 == 0 && c + 99 <= b {
                parts.push(format!("{}??", c / 100));
                c += 100;
            } else {
                parts.push(c.to_string());
                c += 1;
            }
        }
    }
    parts.join("|")
}

fn status_check(req: &HttpRequest, what: &str) -> String {
    let pattern = match &req.expect {
        Some(codes) if !codes.is_empty() => case_pattern(codes),
        _ => "2??".to_owned(),
    };
    format!(
        "case \"$code\" in\n  {pattern}) cat \"$out\" ;;\n  *) echo \"{what}: unexpected status $code\" >&2; cat \"$out\" >&2; exit 1 ;;\nesac\n"
    )
}

/// The `sh` form of a recipe: what the engine sends, as curl commands.
pub fn to_sh(plan: &RestPlan, secrets: &Secrets, title: &str) -> String {
    let mut used: Vec<String> = Vec::new();
    let mut note = |s: &str| {
        for p in secrets.split(s) {
            if let Piece::Secret(n) = p {
                let v = Secrets::env_var(n);
                if !used.contains(&v) {
                    used.push(v);
                }
            }
        }
    };
    let reqs: Vec<&HttpRequest> = match plan {
        RestPlan::Simple(r) => vec![r],
        RestPlan::Delta {
            observe,
            create,
            update,
            ..
        } => {
            let mut v = vec![observe];
            v.extend(create.iter());
            v.push(update);
            v
        }
    };
    for r in &reqs {
        note(&r.url);
        r.headers
            .iter()
            .for_each(|(k, v)| note(&format!("{k}: {v}")));
        if let Some(a) = &r.basic_auth {
            note(&format!("{}:{}", a.user, a.password));
        }
        if let Some(b) = &r.body {
            note(b);
        }
    }
    let mut out = format!(
        "#!/bin/sh\n# stepsync recipe for {}: sends what the engine sends.\nset -eu\n",
        one_line(title)
    );
    for v in &used {
        out.push_str(&format!(": \"${{{v}:?set {v} to the secret's value}}\"\n"));
    }
    out.push_str("out=$(mktemp)\ntrap 'rm -f \"$out\"' EXIT\n");
    let run = |req: &HttpRequest| {
        format!(
            "code=$({})\n",
            curl(secrets, req, "-o \"$out\" -w '%{http_code}' ")
        )
    };
    match plan {
        RestPlan::Simple(req) => {
            out.push_str(&run(req));
            out.push_str(&status_check(req, "request"));
        }
        RestPlan::Delta {
            observe,
            absent,
            create,
            update,
            ..
        } => {
            out.push_str(&run(observe));
            let absent_pat = if absent.is_empty() {
                "000".to_owned()
            } else {
                absent
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join("|")
            };
            let on_absent = create.as_ref().unwrap_or(update);
            let indent = |s: String| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
            out.push_str(&format!(
                "case \"$code\" in\n  {absent_pat})\n{}{}    ;;\n  2??)\n    # The engine sends this only when the observed state differs from the desired one.\n{}{}    ;;\n  *) echo \"observe: unexpected status $code\" >&2; cat \"$out\" >&2; exit 1 ;;\nesac\n",
                indent(run(on_absent)),
                indent(status_check(on_absent, if create.is_some() { "create" } else { "update" })),
                indent(run(update)),
                indent(status_check(update, "update")),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_written_as_ranges() {
        let mut codes: Vec<u16> = (200..=299).collect();
        codes.push(404);
        assert_eq!(runs(&codes), [(200, 299), (404, 404)]);
        assert_eq!(case_pattern(&codes), "2??|404");
        assert_eq!(case_pattern(&[200, 201, 204]), "200|201|204");
        assert_eq!(case_pattern(&[65535]), "65535");
    }
}
