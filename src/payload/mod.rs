//! Payloads: what an actuator dispatches (SPEC §6.2, §6.3). This module is the one boundary
//! between the engine and the backends: the engine hands a stepdef's payload and its
//! template context to a [`Dispatcher`], gets a [`Recipe`] back (for the sys dir, `plan` and
//! `replay`), and later the one [`Execution`] result of running it. Runners, SSH masters,
//! HTTP clients and `ansible-playbook` live behind it; a new payload kind touches this folder.
//! Rendering is kept apart from execution so pretend mode, the sys dir and `replay` share
//! the same recipe.

pub mod playbook;
pub mod rest;
pub mod rest_recipe;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value as Json};

use crate::config::{Runner, Ssh, in_dir};
use crate::inventory::Inventory;
use crate::playbook::ssh::SshPool;
use crate::secrets::Secrets;
use crate::service::Service;
use crate::stepdef::PayloadKind;
use crate::sysdir::Phase;
use crate::template::{RenderError, Templates};
use playbook::PlaybookPlan;
use rest::RestPlan;

/// A rendered payload: what the sys dir shows and what [`Dispatcher::execute`] runs.
// One per object run, never held in bulk: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Recipe {
    Rest(RestPlan),
    Playbook(PlaybookPlan),
}

impl Recipe {
    pub fn payload_name(&self) -> &'static str {
        match self {
            Recipe::Rest(_) => "rest",
            Recipe::Playbook(_) => "playbook",
        }
    }

    /// The recipe's files for an object's sys dir folder, the main recipe first. `vars` is
    /// the attributes' `vars.json`, already masked.
    pub fn files(
        &self,
        phase: Phase,
        secrets: &Secrets,
        title: &str,
        vars: String,
    ) -> Vec<(String, String)> {
        let p = phase.as_str();
        match self {
            Recipe::Rest(plan) => vec![
                (
                    format!("{p}.http"),
                    rest_recipe::to_http(plan, secrets, title),
                ),
                (format!("{p}.sh"), rest_recipe::to_sh(plan, secrets, title)),
                ("vars.json".to_owned(), vars),
            ],
            Recipe::Playbook(plan) => {
                // After the "Rendered by" line: how to run this very file.
                let (first, body) = plan
                    .playbook
                    .split_once('\n')
                    .unwrap_or(("", &plan.playbook));
                let recipe = format!(
                    "{first}\n# Run from this folder: ansible-playbook -i inventory.yml {p}.yml\n{body}"
                );
                vec![
                    (format!("{p}.yml"), recipe),
                    ("inventory.yml".to_owned(), plan.inventory.clone()),
                    ("ansible.cfg".to_owned(), plan.ansible_cfg.clone()),
                    ("vars.json".to_owned(), vars),
                ]
            }
        }
    }
}

/// Why a payload could not be rendered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderFailure {
    #[error(transparent)]
    Template(#[from] RenderError),
    /// The service's playbook could not be read or turned into a recipe.
    #[error("{0}")]
    Playbook(String),
}

/// What came back from a backend, for the engine to classify (SPEC §6.4).
pub struct Response {
    /// `result` in `feedback` and `defer_when` templates.
    pub result: Json,
    /// What `{jsonpath: ...}` feedback reads: a REST body, a playbook result.
    pub jsonpath_root: Json,
    /// The backend answered, but not as `expect` wants: an error unless deferred.
    pub failure: Option<String>,
    /// Deferred when the stepdef has no `defer_when` (REST: 429 and 503).
    pub default_defer: bool,
    /// How a deferral describes the answer (`status 503`).
    pub described: String,
}

/// The one result of executing a recipe.
pub struct Execution {
    /// `Err`: no answer to classify (a transport error, a failed playbook).
    pub response: Result<Response, String>,
    /// The run log, secrets not yet masked.
    pub log: String,
}

/// Everything the payloads need from the service, and the connections they keep: one HTTP
/// client, and the built-in runner's SSH masters opened on first use.
pub struct Dispatcher {
    http: rest::Http,
    ssh_pool: OnceLock<Arc<SshPool>>,
    runner: Runner,
    playbooks_dir: PathBuf,
    inventory: Inventory,
    /// The `ssh:` settings as written, for recipes run by hand from the sys dir.
    ssh_config: Ssh,
    /// The same with their paths resolved against the service directory, for the built-in
    /// runner, which runs from wherever stepsync was started.
    ssh: Ssh,
    secrets: Arc<Secrets>,
    sys_root: PathBuf,
}

impl Dispatcher {
    pub fn new(svc: &Service, sys_root: &Path) -> Result<Dispatcher, String> {
        // reqwest is built without a default TLS provider; ring is the one we ship.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(concat!("stepsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
        let mut ssh = svc.config.ssh.clone();
        ssh.private_key = ssh.private_key.map(|k| in_dir(&svc.dir, &k));
        ssh.known_hosts_file = ssh.known_hosts_file.map(|k| in_dir(&svc.dir, &k));
        Ok(Dispatcher {
            http: rest::Http {
                client,
                max_response: svc.config.http.max_response.0,
            },
            ssh_pool: OnceLock::new(),
            runner: svc.config.runner,
            playbooks_dir: in_dir(&svc.dir, Path::new(playbook::PLAYBOOKS_DIR)),
            inventory: svc.inventory.clone(),
            ssh_config: svc.config.ssh.clone(),
            ssh,
            secrets: svc.secrets.clone(),
            sys_root: sys_root.to_path_buf(),
        })
    }

    /// The HTTP client REST payloads and pull steps share.
    pub(crate) fn http(&self) -> &rest::Http {
        &self.http
    }

    /// Files the sys dir's root needs for these payloads (`ansible.cfg` and the result
    /// callback, when any actuator runs playbooks).
    pub fn root_files(&self, svc: &Service) -> Vec<(&'static str, String)> {
        let uses_playbooks = svc.stepdefs.actuators.values().any(|a| {
            [&a.sync, &a.delete]
                .into_iter()
                .flatten()
                .any(|p| matches!(p.kind, PayloadKind::Playbook(_)))
        });
        if !uses_playbooks {
            return Vec::new();
        }
        vec![
            (
                "ansible.cfg",
                playbook::ansible_cfg(&self.playbooks_dir, &self.ssh_config),
            ),
            (
                "callback_plugins/stepsync_result.py",
                playbook::RESULT_CALLBACK.to_owned(),
            ),
        ]
    }

    /// Renders `kind` in `ctx` (attributes as top-level variables, `object`, `vars`).
    pub(crate) fn render(
        &self,
        templates: &Templates,
        kind: &PayloadKind,
        ctx: &minijinja::Value,
        attributes: &Map<String, Json>,
    ) -> Result<Recipe, RenderFailure> {
        Ok(match kind {
            PayloadKind::Rest(r) => {
                Recipe::Rest(rest::render(templates, r, ctx, rest::DEFAULT_TIMEOUT)?)
            }
            PayloadKind::Playbook(pb) => {
                let hosts = match &pb.hosts {
                    Some(h) => Some(templates.render_string(h, ctx)?),
                    None => None,
                };
                let cx = playbook::Context {
                    playbooks_dir: &self.playbooks_dir,
                    inventory: &self.inventory,
                    ssh: &self.ssh_config,
                    secrets: &self.secrets,
                };
                Recipe::Playbook(
                    playbook::render(&cx, &pb.playbook, attributes, hosts.as_deref())
                        .map_err(RenderFailure::Playbook)?,
                )
            }
        })
    }

    /// `plan --refresh`: what a REST recipe would do, asking only its read-only observe
    /// request (`Ok(None)`: nothing would be sent); `None` for recipes that cannot tell.
    pub async fn refresh(&self, recipe: &Recipe) -> Option<Result<Option<rest::Action>, String>> {
        match recipe {
            Recipe::Rest(plan) => Some(rest::refresh(&self.http, plan).await),
            Recipe::Playbook(_) => None,
        }
    }

    /// Runs `recipe` (written for `phase` in `object_dir`, which `runner: ansible` runs from)
    /// with the given attributes.
    pub async fn execute(
        &self,
        recipe: &Recipe,
        phase: Phase,
        object_dir: &Path,
        attributes: &Map<String, Json>,
    ) -> Execution {
        match recipe {
            Recipe::Rest(plan) => {
                let ex = rest::execute(&self.http, plan, phase == Phase::Delete).await;
                let log = rest::log(&ex);
                let response = match &ex.result {
                    // No response at all: connection errors and timeouts are errors, with backoff.
                    None => Err(ex.failure.unwrap_or_else(|| "no response".to_owned())),
                    Some(result) => Ok(Response {
                        result: serde_json::to_value(result).unwrap_or(Json::Null),
                        jsonpath_root: result.body.clone(),
                        default_defer: matches!(result.status, 429 | 503),
                        described: ex
                            .failure
                            .clone()
                            .unwrap_or_else(|| format!("status {}", result.status)),
                        failure: ex.failure,
                    }),
                };
                Execution { response, log }
            }
            Recipe::Playbook(plan) => {
                let (result, log) = match self.runner {
                    Runner::Builtin => self.run_builtin(plan, attributes).await,
                    Runner::Ansible => {
                        let recipe = format!("{}.yml", phase.as_str());
                        playbook::run_ansible(object_dir, &self.sys_root, &recipe, &self.secrets)
                            .await
                    }
                };
                let response = result.map(|r| {
                    let json = serde_json::to_value(&r).unwrap_or(Json::Null);
                    Response {
                        result: json.clone(),
                        jsonpath_root: json,
                        failure: None,
                        default_defer: false,
                        described: String::new(),
                    }
                });
                Execution { response, log }
            }
        }
    }

    async fn run_builtin(
        &self,
        plan: &PlaybookPlan,
        attributes: &Map<String, Json>,
    ) -> (Result<playbook::PlaybookResult, String>, String) {
        let source = plan.source.clone();
        let hosts = plan.hosts.clone();
        let attributes = attributes.clone();
        let playbooks_dir = self.playbooks_dir.clone();
        let inventory = self.inventory.clone();
        let ssh = self.ssh.clone();
        let pool = self
            .ssh_pool
            .get_or_init(|| Arc::new(SshPool::new(tokio::runtime::Handle::current())))
            .clone();
        // The built-in runner is synchronous (processes and files): keep it off the
        // scheduler's threads.
        let joined = tokio::task::spawn_blocking(move || {
            let opts = crate::playbook::run::Options {
                playbooks_dir: &playbooks_dir,
                inventory: &inventory,
                attributes: &attributes,
                hosts: hosts.as_deref(),
                ssh_pool: Some(&pool),
                ssh: &ssh,
            };
            crate::playbook::run::run(&source, &opts)
        })
        .await;
        match joined {
            Ok(Ok((r, log))) if r.failed > 0 || r.unreachable > 0 => {
                let msg = r
                    .message
                    .clone()
                    .unwrap_or_else(|| "the playbook failed".to_owned());
                (Err(msg), log)
            }
            Ok(Ok((r, log))) => (Ok(r), log),
            Ok(Err(e)) => (Err(e), String::new()),
            Err(e) => (
                Err(format!("the playbook run panicked: {e}")),
                String::new(),
            ),
        }
    }
}
