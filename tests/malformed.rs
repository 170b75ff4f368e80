//! The malformed-input corpus (issue #6): every file format of the spec, broken in every way
//! we could think of, must make stepsync exit 2 with the problem's `file:line:col` and a
//! helpful message, and must never panic or hang.
//!
//! Layout: `tests/malformed/base/` is a small valid service (a schema with a ref and a refs
//! field, model-deps.json, a playbook stepdef and a REST stepdef, a playbook with a role, an
//! include and a template, an inventory, an objects file). Every other folder of
//! `tests/malformed/` is one file format, and each file in it is ONE broken file: the
//! harness copies the base into a fresh temp dir, puts the case in the place of the base's
//! file of that format (see `FORMATS`), runs `stepsync validate -f objects.yaml` there
//! (so every path in a message is relative) and checks:
//!
//! - the exit code is 2, and nothing panicked;
//! - every expected diagnostic is there: an `error:` whose message contains the expected
//!   text, followed by `--> path:line:col` exactly;
//! - there are no other errors (warnings are ignored): one broken thing, one error;
//! - it finished within `HANG_GUARD` (a liveness guard, not a performance target).
//!
//! Expectations live in the case itself, as directives:
//!
//! - YAML cases (and playbooks) start with comment lines `# expect: [PATH:]LINE:COL TEXT`
//!   (one per expected error; PATH defaults to the case's own place). Lines and columns
//!   count the file as it is, comment lines included: the comment is line 1.
//! - JSON cases, invalid UTF-8 and binary cases, and empty files keep the same directives,
//!   without `# `, in a sidecar `<case>.expect`.
//! - `target: PATH` puts the case somewhere else than its format's place.
//! - `before: ARGS` runs a command first (must exit 0), `run: ARGS` replaces `validate -f
//!   objects.yaml`: templates that loop or recurse only show when rendered, so those cases
//!   (`render/`) apply the objects and render one.
//!
//! A few hostile inputs are generated here rather than checked in (`generated()`): a 20 MB
//! scalar, 10,000-deep nesting, 2,000 documents in one file.
//!
//! All cases run in one test, in a few threads, and every mismatch is reported at once with
//! what stepsync actually printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{bin, copy_dir};

/// Each format's folder and the file of the base service its cases replace.
const FORMATS: &[(&str, &str)] = &[
    ("config", "stepsync.yaml"),
    // Added next to the base's schema, so the base stepdefs keep their models.
    ("schema", "schemas/extra.yaml"),
    ("model-deps", "model-deps.json"),
    ("stepdef", "stepdefs/server.yaml"),
    ("stepdef-rest", "stepdefs/site.yaml"),
    ("playbook", "playbooks/server.yml"),
    ("role-tasks", "playbooks/roles/web/tasks/main.yml"),
    ("inventory", "inventory.yaml"),
    ("objects", "objects.yaml"),
    ("render", "stepdefs/server.yaml"),
];

const HANG_GUARD: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq)]
struct Expect {
    path: String,
    line: u32,
    col: u32,
    text: String,
}

struct Case {
    name: String,
    target: String,
    content: Vec<u8>,
    expects: Vec<Expect>,
    before: Vec<Vec<String>>,
    run: Vec<String>,
}

/// One diagnostic as printed: its first line and its `-->` location.
#[derive(Debug)]
struct Printed {
    error: bool,
    message: String,
    location: Option<String>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed")
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// Reads the directives of a case from `lines` (already stripped of any `# `).
fn directives<'a>(
    name: &str,
    lines: impl Iterator<Item = &'a str>,
    case: &mut Case,
) -> Result<(), String> {
    for line in lines {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "expect" => {
                let (loc, text) = value.split_once(' ').unwrap_or((value, ""));
                let mut parts: Vec<&str> = loc.rsplitn(3, ':').collect();
                parts.reverse();
                let (path, line, col) = match parts.as_slice() {
                    [p, l, c] => (p.to_string(), *l, *c),
                    [l, c] => (case.target.clone(), *l, *c),
                    _ => return Err(format!("{name}: bad expect location `{loc}`")),
                };
                let num = |s: &str| {
                    s.parse::<u32>()
                        .map_err(|_| format!("{name}: bad expect location `{loc}`"))
                };
                if text.trim().is_empty() {
                    return Err(format!("{name}: `expect: {loc}` says no message"));
                }
                case.expects.push(Expect {
                    path,
                    line: num(line)?,
                    col: num(col)?,
                    text: text.trim().to_owned(),
                });
            }
            "target" => case.target = value.to_owned(),
            "before" => case.before.push(words(value)),
            "run" => case.run = words(value),
            _ => {}
        }
    }
    Ok(())
}

fn load_cases() -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    for (format, target) in FORMATS {
        let dir = corpus_dir().join(format);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .map(|e| e.map(|e| e.path()).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        files.sort();
        for f in files {
            if f.extension().is_some_and(|e| e == "expect") {
                continue;
            }
            let name = format!("{format}/{}", f.file_name().unwrap().to_string_lossy());
            let content = std::fs::read(&f).map_err(|e| format!("{name}: {e}"))?;
            let mut case = Case {
                name: name.clone(),
                target: (*target).to_owned(),
                content,
                expects: Vec::new(),
                before: Vec::new(),
                run: words("validate -f objects.yaml"),
            };
            let sidecar = f.with_extension("expect");
            if sidecar.exists() {
                let text = std::fs::read_to_string(&sidecar).map_err(|e| e.to_string())?;
                directives(&name, text.lines(), &mut case)?;
            } else {
                let text = String::from_utf8_lossy(&case.content).into_owned();
                let header = text
                    .lines()
                    .map_while(|l| l.strip_prefix('#'))
                    .map(str::trim_start)
                    .collect::<Vec<_>>();
                directives(&name, header.into_iter(), &mut case)?;
            }
            if case.expects.is_empty() {
                return Err(format!("{name}: no `expect:` directive"));
            }
            cases.push(case);
        }
    }
    cases.extend(generated());
    Ok(cases)
}

/// Hostile inputs too big (or too silly) to check in.
fn generated() -> Vec<Case> {
    let case = |name: &str, target: &str, content: String, expect: Expect| Case {
        name: format!("generated/{name}"),
        target: target.to_owned(),
        content: content.into_bytes(),
        expects: vec![expect],
        before: Vec::new(),
        run: words("validate -f objects.yaml"),
    };
    let at = |path: &str, line: u32, col: u32, text: &str| Expect {
        path: path.to_owned(),
        line,
        col,
        text: text.to_owned(),
    };
    let huge = "x".repeat(20 * 1024 * 1024);
    let deep = 10_000;
    vec![
        // A 20 MB scalar where an int belongs: reported, and quoted as a short window.
        case(
            "huge-scalar-objects",
            "objects.yaml",
            format!(
                "Site:\n  - {{name: site-a}}\nServer:\n  - {{name: s1, site: site-a, port: \"{huge}\"}}\n"
            ),
            at(
                "objects.yaml",
                4,
                36,
                "field `port`: expected int, found string",
            ),
        ),
        // A 20 MB value echoed by the message: the message is cut, not the terminal flooded.
        case(
            "huge-scalar-config",
            "stepsync.yaml",
            format!("name: base\nresync: {huge}\n"),
            at("stepsync.yaml", 2, 9, "invalid duration `xxx"),
        ),
        // 10,000-deep flow nesting in an objects file.
        case(
            "deep-flow-objects",
            "objects.yaml",
            format!(
                "Site:\n  - name: site-a\n    address: {}{}\n",
                "[".repeat(deep),
                "]".repeat(deep)
            ),
            at(
                "objects.yaml",
                3,
                269,
                "nested too deeply: more than 64 levels",
            ),
        ),
        // 10,000-deep nesting in a schema default.
        case(
            "deep-flow-schema",
            "schemas/extra.yaml",
            format!(
                "models:\n  Rack:\n    fields:\n      name: string\n      data: {{type: json, default: {}{}}}\n",
                "{a: ".repeat(deep),
                "}".repeat(deep)
            ),
            at(
                "schemas/extra.yaml",
                5,
                271,
                "nested too deeply: more than 64 levels",
            ),
        ),
        // 10,000-deep block nesting would be 50 MB of indentation; 200 levels make the point.
        case(
            "deep-block-config",
            "stepsync.yaml",
            format!(
                "name: base\nvars:\n{}",
                (0..200)
                    .map(|i| format!("{}k:\n", "  ".repeat(i + 1)))
                    .collect::<String>()
            ),
            at(
                "stepsync.yaml",
                66,
                129,
                "nested too deeply: more than 64 levels",
            ),
        ),
        // A storm of empty documents.
        case(
            "document-storm",
            "objects.yaml",
            format!("Tag:\n  - {{label: blue}}\n{}", "---\n".repeat(2000)),
            at(
                "objects.yaml",
                1026,
                1,
                "more than 1,024 YAML documents in one file",
            ),
        ),
        // 10,000 parentheses in one template expression.
        case(
            "deep-template",
            "stepdefs/server.yaml",
            format!(
                "kind: Actuator\nmodel: Server\nattributes:\n  a: \"{{{{ {}1{} }}}}\"\n",
                "(".repeat(deep),
                ")".repeat(deep)
            ),
            at(
                "stepdefs/server.yaml",
                4,
                6,
                "template exceeds maximum recursion limits",
            ),
        ),
    ]
}

struct Ran {
    code: Option<i32>,
    stderr: String,
    took: Duration,
}

/// Runs stepsync in `dir`, killing it after `HANG_GUARD`. Output goes to files: a pipe
/// would need a reader thread per stream not to stall on a big message.
fn run(dir: &Path, args: &[String]) -> Ran {
    let out = dir.join(".out");
    let err = dir.join(".err");
    let start = Instant::now();
    let mut child = Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("BASE_TOKEN", "t0ken")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("run stepsync");
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if start.elapsed() > HANG_GUARD {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let bytes = std::fs::read(&err).unwrap_or_default();
    Ran {
        code,
        stderr: String::from_utf8_lossy(&bytes).into_owned(),
        took: start.elapsed(),
    }
}

fn parse_stderr(stderr: &str) -> Vec<Printed> {
    let mut out: Vec<Printed> = Vec::new();
    for line in stderr.lines() {
        if let Some(m) = line.strip_prefix("error: ") {
            out.push(Printed {
                error: true,
                message: m.to_owned(),
                location: None,
            });
        } else if let Some(m) = line.strip_prefix("warning: ") {
            out.push(Printed {
                error: false,
                message: m.to_owned(),
                location: None,
            });
        } else if let Some(loc) = line.strip_prefix("  --> ")
            && let Some(last) = out.last_mut()
            && last.location.is_none()
        {
            last.location = Some(loc.to_owned());
        }
    }
    out
}

/// What is wrong with how `case` ran, if anything.
fn check(case: &Case) -> Option<String> {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    copy_dir(&corpus_dir().join("base"), dir);
    let target = dir.join(&case.target);
    std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
    std::fs::write(&target, &case.content).expect("write case");
    for args in &case.before {
        let r = run(dir, args);
        if r.code != Some(0) {
            return Some(format!(
                "`stepsync {}` exited {:?}\n{}",
                args.join(" "),
                r.code,
                r.stderr
            ));
        }
    }
    let r = run(dir, &case.run);
    let shown = if r.stderr.len() > 4000 {
        format!(
            "{}… ({} bytes)",
            &r.stderr[..r.stderr.floor_char_boundary(4000)],
            r.stderr.len()
        )
    } else {
        r.stderr.clone()
    };
    let mut problems = Vec::new();
    match r.code {
        None => problems.push(format!("killed after {:?}: a hang?", r.took)),
        Some(2) => {}
        Some(c) => problems.push(format!("exit code {c}, wanted 2")),
    }
    if r.stderr.contains("panicked") {
        problems.push("panicked".to_owned());
    }
    let printed = parse_stderr(&r.stderr);
    let errors: Vec<&Printed> = printed.iter().filter(|p| p.error).collect();
    for e in &case.expects {
        let loc = format!("{}:{}:{}", e.path, e.line, e.col);
        let found = errors
            .iter()
            .any(|p| p.location.as_deref() == Some(&loc) && p.message.contains(&e.text));
        if !found {
            problems.push(format!("no error `{}` at {loc}", e.text));
        }
    }
    if errors.len() != case.expects.len() {
        problems.push(format!(
            "{} errors printed, {} expected",
            errors.len(),
            case.expects.len()
        ));
    }
    (!problems.is_empty()).then(|| format!("{}\nstderr:\n{shown}", problems.join("\n")))
}

#[test]
fn every_malformed_input_is_located_and_nothing_panics() {
    // The base itself must be valid, or every case would fail for the wrong reason.
    let tmp = tempfile::tempdir().expect("temp dir");
    copy_dir(&corpus_dir().join("base"), tmp.path());
    let base = run(tmp.path(), &words("validate -f objects.yaml"));
    assert_eq!(
        base.code,
        Some(0),
        "the base service is invalid:\n{}",
        base.stderr
    );

    let cases = load_cases().unwrap_or_else(|e| panic!("{e}"));
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    if let Some(problem) = check(case) {
                        failures
                            .lock()
                            .expect("lock")
                            .push(format!("--- {}\n{problem}", case.name));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().expect("lock");
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} of {} malformed inputs were not reported right:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
