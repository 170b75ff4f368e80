//! `command`, `shell` and `raw`: run a command line (or an argv) on the target.

use super::params::Inert;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::params::{Flag, Str};
use super::{ModCtx, ModResult, Module, texts};
use crate::playbook::target::quote;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Command,
    Shell,
    Raw,
}

pub(super) struct Command(Kind);

impl Command {
    pub(super) const COMMAND: Command = Command(Kind::Command);
    pub(super) const SHELL: Command = Command(Kind::Shell);
    pub(super) const RAW: Command = Command(Kind::Raw);
}

/// The parameters of the three modules together; each ignores what it does not have, as the
/// built-in runner did before. `stdin`, `stdin_add_newline` and shell's `executable` act;
/// `strip_empty_ends` and `expand_argument_vars` are Ansible's: refused unless given what this runner does (`INERT`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// The free-form command line (`command: ls -l`).
    #[serde(rename = "_raw_params")]
    raw_params: Option<Str>,
    cmd: Option<Str>,
    argv: Option<Json>,
    chdir: Option<Str>,
    creates: Option<Str>,
    removes: Option<Str>,
    executable: Option<Str>,
    stdin: Option<Str>,
    stdin_add_newline: Option<Flag>,
    #[allow(dead_code)]
    strip_empty_ends: Option<Flag>,
    #[allow(dead_code)]
    expand_argument_vars: Option<Flag>,
}

impl Module for Command {
    type Params = Params;

    /// Output is always stripped of its empty ends, and arguments always expanded.
    const INERT: &'static [Inert] = &[
        Inert::only("strip_empty_ends", &["true"]),
        Inert::only("expand_argument_vars", &["true"]),
    ];

    fn free_form(&self) -> bool {
        true
    }

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        let raw = p.raw_params.or(p.cmd).map(|s| s.0);
        let argv: Option<Vec<String>> = match &p.argv {
            Some(Json::Array(a)) => Some(texts(a)),
            _ => None,
        };
        // raw is a bare command line: Ansible ignores creates/removes for it and reports a
        // change every time.
        let guarded = self.0 != Kind::Raw;
        // Check mode: raw is always skipped; command and shell only look at creates/removes.
        if mc.check_mode && !guarded {
            return ModResult {
                skipped: true,
                ..ModResult::default()
            };
        }
        let did = if mc.check_mode { "Would" } else { "Did" };
        if guarded
            && let Some(Str(creates)) = &p.creates
            && mc.target.matches_any(creates).unwrap_or(false)
        {
            let mut r = ModResult::ok(false);
            r.msg = Some(format!("{did} not run command since '{creates}' exists"));
            r.data.insert("rc".into(), json!(0));
            return r;
        }
        if guarded
            && let Some(Str(removes)) = &p.removes
            && !mc.target.matches_any(removes).unwrap_or(true)
        {
            let mut r = ModResult::ok(false);
            r.msg = Some(format!(
                "{did} not run command since '{removes}' does not exist"
            ));
            r.data.insert("rc".into(), json!(0));
            return r;
        }
        if mc.check_mode {
            // A command with creates/removes would have run: a change; without them, Ansible
            // cannot tell and skips it.
            let unguarded = p.creates.is_none() && p.removes.is_none();
            let mut r = ModResult {
                changed: !unguarded,
                skipped: unguarded,
                msg: Some("Command would have run if not in check mode".into()),
                ..ModResult::default()
            };
            r.data.insert("rc".into(), json!(0));
            return r;
        }
        let chdir = p.chdir.map(|s| s.0);
        // Ansible adds a newline to `stdin` unless told not to.
        let stdin = p.stdin.map(|Str(mut s)| {
            if p.stdin_add_newline.is_none_or(|f| f.0) {
                s.push('\n');
            }
            s
        });
        // An async job still running after its seconds is killed, as Ansible's wrapper does.
        let limit = |script: String| match mc.async_secs {
            Some(n) => format!("timeout -s KILL {n} /bin/sh -c {}", quote(&script)),
            None => script,
        };
        let (out, shown) = if self.0 == Kind::Command {
            let argv = match (argv, &raw) {
                (Some(a), _) => a,
                (None, Some(r)) => match shlex::split(r) {
                    Some(a) => a,
                    None => return ModResult::fail(format!("cannot split the command line: {r}")),
                },
                (None, None) => return ModResult::fail("no command given"),
            };
            let shown = shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_default();
            match &stdin {
                // The argv, quoted word by word, reading the given input.
                Some(input) => {
                    let words: Vec<String> = argv.iter().map(|a| quote(a)).collect();
                    let script = format!("printf %s {} | exec {}", quote(input), words.join(" "));
                    (
                        mc.target
                            .run(&[], Some(&limit(script)), chdir.as_deref(), &mc.env),
                        shown,
                    )
                }
                None => {
                    let argv = match mc.async_secs {
                        Some(n) => ["timeout", "-s", "KILL", &n.to_string()]
                            .iter()
                            .map(|w| (*w).to_owned())
                            .chain(argv)
                            .collect(),
                        None => argv,
                    };
                    (mc.target.run(&argv, None, chdir.as_deref(), &mc.env), shown)
                }
            }
        } else {
            let Some(script) = raw else {
                return ModResult::fail("no command given");
            };
            // `executable` (shell only): the command line runs in that shell instead of sh.
            let mut run = match (&p.executable, self.0) {
                (Some(Str(exe)), Kind::Shell) => {
                    format!("exec {} -c {}", quote(exe), quote(&script))
                }
                _ => script.clone(),
            };
            if let Some(input) = &stdin {
                run = format!("printf %s {} | {{\n{run}\n}}", quote(input));
            }
            (
                mc.target
                    .run(&[], Some(&limit(run)), chdir.as_deref(), &mc.env),
                script,
            )
        };
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                return ModResult::fail(format!(
                    "[Errno 2] No such file or directory: {shown}: {e}"
                ));
            }
        };
        let mut r = ModResult::ok(true);
        let lines = |s: &str| Json::Array(s.lines().map(|l| Json::String(l.to_owned())).collect());
        let stdout = out.stdout.trim_end_matches('\n').to_owned();
        let stderr = out.stderr.trim_end_matches('\n').to_owned();
        r.data.insert("cmd".into(), Json::String(shown));
        r.data.insert("rc".into(), json!(out.rc));
        r.data.insert("stdout_lines".into(), lines(&stdout));
        r.data.insert("stderr_lines".into(), lines(&stderr));
        r.data.insert("stdout".into(), Json::String(stdout));
        r.data.insert("stderr".into(), Json::String(stderr));
        if out.rc != 0 {
            r.failed = true;
            r.msg = Some("non-zero return code".into());
        }
        r
    }
}
