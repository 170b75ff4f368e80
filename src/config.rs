//! `stepsync.yaml`, the service configuration (SPEC §3).

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diag::Diagnostic;
use crate::duration::Dur;
use crate::yaml::Source;

pub const CONFIG_FILE: &str = "stepsync.yaml";

/// The service configuration of a stepsync service directory. Paths are relative to the
/// service directory; durations are written like `500ms`, `10s`, `5m`, `1h`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "stepsync service config (stepsync.yaml)")]
pub struct Config {
    /// The synchronizer's name (required, not blank).
    #[schemars(extend("pattern" = "\\S", "patternErrorMessage" = "the name must not be blank"))]
    pub name: String,
    /// Where the data model lives: `sqlite:PATH` (embedded) or `postgres://...` (planned).
    #[serde(default = "default_store")]
    pub store: StoreUrl,
    /// The sys dir: one folder per backend object holding its rendered recipes.
    #[serde(default = "default_sys_dir")]
    pub sys_dir: PathBuf,
    /// Run logs kept per object in the sys dir.
    #[serde(default = "default_keep_runs")]
    pub sys_keep_runs: u32,
    /// Folders of purged objects kept under `<sys_dir>/.deleted/`, oldest removed first.
    #[serde(default = "default_keep_deleted")]
    pub sys_keep_deleted: u32,
    /// Explicit model dependencies in the original framework's format (default:
    /// `model-deps.json` when it exists).
    #[serde(default)]
    pub dependency_graph: Option<PathBuf>,
    /// An Ansible YAML inventory for playbook runs (default: `inventory.yaml` when it exists).
    #[serde(default)]
    pub inventory: Option<PathBuf>,
    /// Always run in pretend mode, as with `--pretend`: render and plan, touch no backend.
    #[serde(default)]
    pub pretend: bool,
    /// Run nothing and write no bookkeeping.
    #[serde(default)]
    pub disabled: bool,
    /// Actuator runs in flight at once, all models together.
    #[serde(
        default = "default_concurrency",
        deserialize_with = "crate::config::nonzero"
    )]
    pub concurrency: NonZeroU32,
    /// Retry intervals of objects in error.
    #[serde(default)]
    pub backoff: Backoff,
    /// Re-actuate in-sync objects this often (`0s` = never).
    #[serde(default)]
    pub resync: Dur,
    /// The daemon's pass interval while deferred objects exist.
    #[serde(default = "default_defer_retry")]
    pub defer_retry: Dur,
    /// Who runs playbooks: the built-in runner or `ansible-playbook`.
    #[serde(default)]
    pub runner: Runner,
    /// Service-level template variables, available as `vars` in every template.
    #[serde(default)]
    pub vars: IndexMap<String, serde_json::Value>,
    /// Secret name -> where its value comes from; values are never written anywhere.
    #[serde(default)]
    pub secrets: IndexMap<String, SecretSource>,
    /// Defaults for playbook runs over SSH.
    #[serde(default)]
    pub ssh: Ssh,
    /// Log level, format and file.
    #[serde(default)]
    pub logging: Logging,
    /// The runner's lease on the store: one `stepsync run` drives a store at a time.
    #[serde(default)]
    pub lease: LeaseConfig,
    /// Limits of REST payloads.
    #[serde(default)]
    pub http: HttpConfig,
    /// The event bus that event steps consume (SPEC §14); none: no event steps.
    #[serde(default)]
    pub event_bus: Option<EventBus>,
    /// `stepsync serve`: where it listens and who may call it (SPEC §16).
    #[serde(default)]
    pub serve: Option<ServeConfig>,
}

/// `serve:` (SPEC §16).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// `HOST:PORT` to listen on (`--listen` overrides it).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The bearer tokens: a read token for reads, a write token for reads and writes.
    /// Without them `serve` listens on loopback only, and the API is open to this host.
    #[serde(default)]
    pub tokens: Option<ServeTokens>,
    /// `/metrics` and `/healthz` answer without a token.
    #[serde(default)]
    pub open_metrics: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: default_listen(),
            tokens: None,
            open_metrics: false,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

/// `serve.tokens:` where the API's tokens come from, as secrets do (never stored).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServeTokens {
    pub read: SecretSource,
    pub write: SecretSource,
}

/// `event_bus:` (SPEC §14): where event steps read their messages.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBus {
    pub kind: BusKind,
    /// `HOST:PORT` of a broker (Kafka bootstrap server, or NATS server).
    #[schemars(extend("pattern" = "^[^\\s:]+:[0-9]+$", "patternErrorMessage" = "expected HOST:PORT"))]
    pub endpoint: String,
    /// The Kafka consumer group (default: the service's `name`). For NATS, the durable
    /// consumers are named `<group>-<step>`.
    #[serde(default)]
    pub group: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// Kafka topics, read by a consumer group.
    Kafka,
    /// NATS JetStream: a subject captured by a stream, read by durable consumers.
    Nats,
}

/// `http:` (SPEC §3, §6.2).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// A larger response fails the run; it is never held whole in memory.
    pub max_response: crate::duration::Size,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_response: crate::duration::Size(8 * 1024 * 1024),
        }
    }
}

/// `lease:` (SPEC §5.5): how long a runner's lease lasts without renewal; it is renewed
/// every third of that.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseConfig {
    pub ttl: Dur,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig { ttl: Dur::secs(15) }
    }
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
fn default_keep_deleted() -> u32 {
    1000
}
fn default_concurrency() -> NonZeroU32 {
    NonZeroU32::new(16).unwrap_or(NonZeroU32::MIN)
}
/// A count of at least 1, said in words a user knows ("nonzero u32" is Rust's).
pub(crate) fn nonzero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NonZeroU32, D::Error> {
    let n = u32::deserialize(d)?;
    NonZeroU32::new(n).ok_or_else(|| serde::de::Error::custom("must be at least 1"))
}

/// [`nonzero`] for an optional field.
pub(crate) fn opt_nonzero<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<NonZeroU32>, D::Error> {
    nonzero(d).map(Some)
}

fn default_defer_retry() -> Dur {
    Dur::secs(5)
}

/// Where the data model lives: `sqlite:PATH` or `postgres://...` (planned).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
// The same two prefixes `TryFrom<String>` accepts, so editors flag what loading would refuse.
#[schemars(extend(
    "pattern" = "^(sqlite:.+|postgres(ql)?://.*)$",
    "patternErrorMessage" = "expected `sqlite:PATH` or `postgres://...`"
))]
pub enum StoreUrl {
    Sqlite(PathBuf),
    /// A PostgreSQL database (SPEC §17), as the `postgres` client takes it.
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

impl std::fmt::Display for StoreUrl {
    /// The URL for logs and messages: a password in it is shown as `********`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            StoreUrl::Postgres(u) => {
                let (scheme, rest) = u.split_once("://").unwrap_or(("postgres", u));
                let (auth, host) = match rest.split_once('@') {
                    Some((a, h)) => (Some(a), h),
                    None => (None, rest),
                };
                // The client also takes a password as a query parameter.
                let host = match host.split_once('?') {
                    Some((h, query)) => {
                        let params: Vec<String> = query
                            .split('&')
                            .map(|p| match p.split_once('=') {
                                Some(("password", _)) => "password=********".to_owned(),
                                _ => p.to_owned(),
                            })
                            .collect();
                        format!("{h}?{}", params.join("&"))
                    }
                    None => host.to_owned(),
                };
                match auth.map(|a| a.split_once(':').map_or(a, |(user, _)| user)) {
                    Some(user) if auth.is_some_and(|a| a.contains(':')) => {
                        write!(f, "{scheme}://{user}:********@{host}")
                    }
                    Some(user) => write!(f, "{scheme}://{user}@{host}"),
                    None => write!(f, "{scheme}://{host}"),
                }
            }
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

/// The retry intervals of objects in error: `initial`, then multiplied by `factor` up to `max`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    /// The first retry interval.
    pub initial: Dur,
    /// Each interval is the previous one times this (at least 1).
    pub factor: Factor,
    /// The longest interval.
    pub max: Dur,
    /// The random spread applied to each interval, as a fraction (0 to 1).
    pub jitter: Jitter,
    /// Retry objects in error on every pass, without waiting.
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
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(try_from = "f64", into = "f64")]
#[schemars(extend("minimum" = 1))]
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
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(try_from = "f64", into = "f64")]
#[schemars(extend("minimum" = 0, "maximum" = 1))]
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

/// Who runs playbooks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Runner {
    /// stepsync's own playbook runner.
    #[default]
    Builtin,
    /// Delegate to `ansible-playbook`.
    Ansible,
}

/// Where a secret's value comes from; the value itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretSource {
    /// The value of this environment variable.
    Env(String),
    /// The content of this file.
    File(PathBuf),
}

/// Defaults for playbook runs over SSH.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Ssh {
    /// The remote user (null: the ssh client's default).
    pub user: Option<String>,
    pub port: u16,
    /// A private key file (null: the ssh client's defaults).
    pub private_key: Option<PathBuf>,
    /// How host keys are checked.
    pub known_hosts: KnownHosts,
    /// The known hosts file (null: `~/.ssh/known_hosts`).
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

/// How SSH host keys are checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KnownHosts {
    /// Only hosts whose key is already known.
    #[default]
    Strict,
    /// Record the key of a new host; refuse a changed one.
    AcceptNew,
    /// No host key checking.
    Off,
}

/// Log level, format and file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    pub level: LogLevel,
    pub format: LogFormat,
    /// Also write the log to this file.
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
        let cfg: Config = src.parse().map_err(|d| {
            if d.message == "the file is empty" {
                d.with_hint("a service needs at least `name: <service name>`")
            } else {
                d
            }
        })?;
        if cfg.name.trim().is_empty() {
            // The typed config keeps no positions; find the value in the document.
            let at = src
                .documents()
                .ok()
                .and_then(|docs| match &docs.first()?.value {
                    crate::yaml::Node::Map(m) => m
                        .iter()
                        .find(|(k, _)| k.value == "name")
                        .and_then(|(_, v)| crate::yaml::pos(v)),
                    _ => None,
                });
            return Err(src.diag("`name` must not be empty", at));
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
    fn store_urls_are_shown_without_their_password() {
        let shown = |u: &str| StoreUrl::try_from(u.to_owned()).unwrap().to_string();
        assert_eq!(
            shown("postgres://sync:hunter2@db/x"),
            "postgres://sync:********@db/x"
        );
        assert_eq!(shown("postgres://sync@db/x"), "postgres://sync@db/x");
        assert_eq!(shown("postgresql://db/x"), "postgresql://db/x");
        assert_eq!(
            shown("postgres://sync@db/x?sslmode=disable&password=hunter2"),
            "postgres://sync@db/x?sslmode=disable&password=********"
        );
        assert_eq!(shown("sqlite:a.db"), "sqlite:a.db");
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
