//! `stepsync.yaml`, the service configuration (SPEC §3).

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::diag::Diagnostic;
use crate::duration::Dur;
use crate::yaml::Source;

pub const CONFIG_FILE: &str = "stepsync.yaml";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub name: String,
    #[serde(default = "default_store")]
    pub store: StoreUrl,
    #[serde(default = "default_sys_dir")]
    pub sys_dir: PathBuf,
    #[serde(default = "default_keep_runs")]
    pub sys_keep_runs: u32,
    #[serde(default)]
    pub dependency_graph: Option<PathBuf>,
    #[serde(default)]
    pub inventory: Option<PathBuf>,
    #[serde(default)]
    pub pretend: bool,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default = "default_concurrency")]
    pub concurrency: NonZeroU32,
    #[serde(default)]
    pub backoff: Backoff,
    #[serde(default)]
    pub resync: Dur,
    #[serde(default = "default_defer_retry")]
    pub defer_retry: Dur,
    #[serde(default)]
    pub runner: Runner,
    #[serde(default)]
    pub vars: IndexMap<String, serde_json::Value>,
    #[serde(default)]
    pub secrets: IndexMap<String, SecretSource>,
    #[serde(default)]
    pub ssh: Ssh,
    #[serde(default)]
    pub logging: Logging,
}

fn default_store() -> StoreUrl {
    StoreUrl::Sqlite(PathBuf::from(".stepsync/state.db"))
}
fn default_sys_dir() -> PathBuf {
    PathBuf::from(".stepsync/sys")
}
fn default_keep_runs() -> u32 {
    5
}
fn default_concurrency() -> NonZeroU32 {
    NonZeroU32::new(16).unwrap_or(NonZeroU32::MIN)
}
fn default_defer_retry() -> Dur {
    Dur::secs(5)
}

/// Where the data model lives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum StoreUrl {
    Sqlite(PathBuf),
    /// Planned (SPEC §11); accepted in the file so configs can be written ahead of time.
    Postgres(String),
}

impl TryFrom<String> for StoreUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err("`sqlite:` needs a file path, e.g. `sqlite:.stepsync/state.db`".into());
            }
            Ok(StoreUrl::Sqlite(PathBuf::from(path)))
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(StoreUrl::Postgres(s))
        } else {
            Err(format!(
                "unknown store `{s}`: expected `sqlite:PATH` or `postgres://...`"
            ))
        }
    }
}

impl From<StoreUrl> for String {
    fn from(s: StoreUrl) -> String {
        match s {
            StoreUrl::Sqlite(p) => format!("sqlite:{}", p.display()),
            StoreUrl::Postgres(u) => u,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    pub initial: Dur,
    pub factor: Factor,
    pub max: Dur,
    pub jitter: Jitter,
    pub disabled: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Dur::secs(10),
            factor: Factor(2.0),
            max: Dur::secs(30 * 60),
            jitter: Jitter(0.1),
            disabled: false,
        }
    }
}

/// The backoff growth factor, at least 1 so intervals never shrink.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Factor(pub f64);

impl TryFrom<f64> for Factor {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        if v.is_finite() && v >= 1.0 {
            Ok(Factor(v))
        } else {
            Err(format!("`factor` must be a number of at least 1, not {v}"))
        }
    }
}

impl From<Factor> for f64 {
    fn from(f: Factor) -> f64 {
        f.0
    }
}

/// The random spread applied to each backoff interval, as a fraction (0 to 1).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Jitter(pub f64);

impl TryFrom<f64> for Jitter {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&v) {
            Ok(Jitter(v))
        } else {
            Err(format!("`jitter` must be between 0 and 1, not {v}"))
        }
    }
}

impl From<Jitter> for f64 {
    fn from(j: Jitter) -> f64 {
        j.0
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runner {
    #[default]
    Builtin,
    Ansible,
}

/// Where a secret's value comes from; the value itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ssh {
    pub user: Option<String>,
    pub port: u16,
    pub private_key: Option<PathBuf>,
    pub known_hosts: KnownHosts,
    pub known_hosts_file: Option<PathBuf>,
    pub connect_timeout: Dur,
}

impl Default for Ssh {
    fn default() -> Self {
        Ssh {
            user: Some("root".into()),
            port: 22,
            private_key: None,
            known_hosts: KnownHosts::Strict,
            known_hosts_file: None,
            connect_timeout: Dur::secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KnownHosts {
    #[default]
    Strict,
    AcceptNew,
    Off,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    pub level: LogLevel,
    pub format: LogFormat,
    pub file: Option<PathBuf>,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            level: LogLevel::Info,
            format: LogFormat::Text,
            file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Config {
    /// Reads and checks `stepsync.yaml` in `dir`.
    pub fn load(dir: &Path) -> Result<Config, Diagnostic> {
        let path = in_dir(dir, Path::new(CONFIG_FILE));
        if !path.exists() {
            return Err(Diagnostic::in_file(
                format!("no {CONFIG_FILE} in {}", dir.display()),
                &path,
            )
            .with_hint("run `stepsync init` to scaffold a service, or pass `-C DIR`"));
        }
        let src = Source::read(&path)?;
        Config::parse(&src)
    }

    pub fn parse(src: &Source) -> Result<Config, Diagnostic> {
        let cfg: Config = src.parse()?;
        if cfg.name.trim().is_empty() {
            return Err(src.diag("`name` must not be empty", None));
        }
        Ok(cfg)
    }

    /// A path from the config, relative paths resolved against the service directory.
    pub fn resolve(&self, dir: &Path, p: &Path) -> PathBuf {
        in_dir(dir, p)
    }
}

/// `p` inside the service directory `dir`, written without a `./` prefix when `dir` is the
/// current directory, so messages show the paths users wrote.
pub fn in_dir(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() || dir == Path::new(".") || dir.as_os_str().is_empty() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Pos;

    fn parse(text: &str) -> Result<Config, Diagnostic> {
        Config::parse(&Source::from_text("stepsync.yaml", text))
    }

    #[test]
    fn defaults_fill_every_key() {
        let c = parse("name: hello\n").unwrap();
        assert_eq!(c.store, StoreUrl::Sqlite(".stepsync/state.db".into()));
        assert_eq!(c.sys_dir, PathBuf::from(".stepsync/sys"));
        assert_eq!(c.sys_keep_runs, 5);
        assert_eq!(c.concurrency.get(), 16);
        assert_eq!(c.backoff.initial, Dur::secs(10));
        assert_eq!(c.backoff.factor, Factor(2.0));
        assert_eq!(c.backoff.max, Dur::secs(1800));
        assert_eq!(c.defer_retry, Dur::secs(5));
        assert_eq!(c.resync, Dur::default());
        assert_eq!(c.runner, Runner::Builtin);
        assert_eq!(c.ssh.known_hosts, KnownHosts::Strict);
        assert_eq!(c.ssh.port, 22);
        assert_eq!(c.logging.format, LogFormat::Text);
    }

    #[test]
    fn full_example_parses() {
        let c = parse(
            "name: hello\nstore: sqlite:db.sqlite\nbackoff: {initial: 1s, factor: 3, max: 1m, jitter: 0, disabled: true}\n\
             secrets:\n  tok: {env: TOK}\n  f: {file: /run/x}\nssh: {known_hosts: accept-new, connect_timeout: 500ms}\n\
             vars: {controller: 'http://x'}\nrunner: ansible\nresync: 1h\n",
        )
        .unwrap();
        assert_eq!(c.secrets["tok"], SecretSource::Env("TOK".into()));
        assert_eq!(c.secrets["f"], SecretSource::File("/run/x".into()));
        assert_eq!(c.ssh.known_hosts, KnownHosts::AcceptNew);
        assert_eq!(c.runner, Runner::Ansible);
        assert_eq!(c.backoff.max, Dur::secs(60));
    }

    #[test]
    fn unknown_nested_key_is_located() {
        let d = parse("name: x\nbackoff:\n  initial: 1s\n  factr: 2\n").unwrap_err();
        assert_eq!(d.pos, Some(Pos { line: 4, col: 3 }));
        assert!(d.message.contains("factr"));
    }

    #[test]
    fn bad_duration_is_located() {
        let d = parse("name: x\nresync: soon\n").unwrap_err();
        assert_eq!(d.pos, Some(Pos { line: 2, col: 9 }));
        assert!(d.message.contains("invalid duration"), "{}", d.message);
    }

    #[test]
    fn bad_jitter_is_located() {
        let d = parse("name: x\nbackoff: {jitter: 3}\n").unwrap_err();
        assert_eq!(d.pos.map(|p| p.line), Some(2));
    }
}
