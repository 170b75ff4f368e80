//! A service directory (SPEC §2): its config, data model and store, loaded once per command.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, StoreUrl, in_dir};
use crate::diag::{Diagnostic, Diagnostics, expected_hint};
use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::model::deps::load_model_deps;
use crate::model::{Model, ModelGraph, Schema};
use crate::secrets::Secrets;
use crate::stepdef::Stepdefs;
use crate::store::{PostgresStore, SqliteStore, Store};
use crate::template::Templates;

pub const SCHEMAS_DIR: &str = "schemas";
pub const MODEL_DEPS_FILE: &str = "model-deps.json";
pub const INVENTORY_FILE: &str = "inventory.yaml";

pub struct Service {
    pub dir: PathBuf,
    pub config: Config,
    pub schema: Arc<Schema>,
    pub graph: ModelGraph,
    pub secrets: Arc<Secrets>,
    pub stepdefs: Stepdefs,
    pub inventory: Inventory,
    /// The files it was loaded from besides stepdefs and playbooks (which have folders of
    /// their own): what definition digests read and the daemon watches.
    pub sources: Sources,
}

/// The service's own files, as found when it was loaded.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub config: PathBuf,
    pub schemas: Vec<PathBuf>,
    pub model_deps: Option<PathBuf>,
    pub inventory: Option<PathBuf>,
}

impl Service {
    /// Loads config, schema and dependencies, reporting every problem found.
    pub fn load(dir: &Path) -> Result<Service> {
        let (svc, diags) = Service::check(dir);
        match svc {
            Some(svc) if !diags.has_errors() => Ok(svc),
            _ => Err(Error::Invalid(diags)),
        }
    }

    /// Loads as far as the files allow, collecting every problem (and warning) on the way:
    /// `validate` reports them all, every other command stops at the first error.
    pub fn check(dir: &Path) -> (Option<Service>, Diagnostics) {
        let mut diags = Diagnostics::default();
        let mut take = |d: Diagnostics| diags.0.extend(d.0);
        let config = Config::load(dir).map_err(|d| take(d.into())).ok();
        let schema = Schema::load_dir(&in_dir(dir, Path::new(SCHEMAS_DIR)))
            .map_err(&mut take)
            .ok();
        let Some(schema) = schema else {
            // Stepdefs name models: without the schema only their syntax can be checked.
            syntax_only(
                &in_dir(dir, Path::new(crate::stepdef::STEPDEFS_DIR)),
                &mut diags,
            );
            return (None, diags);
        };
        // A config that does not load is reported; the other files are still checked, on
        // the defaults, so one run of `validate` shows every file's problems.
        let config = match config {
            Some(c) => c,
            None => match Config::parse(&crate::yaml::Source::from_text(
                crate::config::CONFIG_FILE,
                "name: unnamed\n",
            )) {
                Ok(c) => c,
                Err(_) => return (None, diags),
            },
        };
        let deps_file = match &config.dependency_graph {
            Some(p) => Some(config.resolve(dir, p)),
            None => Some(in_dir(dir, Path::new(MODEL_DEPS_FILE))).filter(|p| p.exists()),
        };
        let model_deps = deps_file.clone();
        let explicit = match deps_file {
            Some(path) => load_model_deps(&path, &schema)
                .map_err(&mut take)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let graph = ModelGraph::build(&schema, explicit).map_err(&mut take);
        let inventory_file = match &config.inventory {
            Some(p) => Some(config.resolve(dir, p)),
            None => Some(in_dir(dir, Path::new(INVENTORY_FILE))).filter(|p| p.exists()),
        };
        let sources = Sources {
            config: in_dir(dir, Path::new(crate::config::CONFIG_FILE)),
            schemas: crate::model::schema::yaml_files(&in_dir(dir, Path::new(SCHEMAS_DIR)))
                .unwrap_or_default(),
            model_deps,
            inventory: inventory_file.clone(),
        };
        let inventory = match inventory_file {
            Some(p) => Inventory::load(&p).map_err(&mut take).unwrap_or_default(),
            None => Inventory::default(),
        };
        let secrets = Arc::new(Secrets::load(&config, dir));
        let Ok(graph) = graph else {
            // Watchers' paths need the graph: the stepdefs are checked on an empty one.
            let (_, more) = Stepdefs::load_partial(
                dir,
                &schema,
                &ModelGraph::default(),
                Templates::new(secrets.clone()),
            );
            take(more);
            return (None, diags);
        };
        let (stepdefs, more) =
            Stepdefs::load_partial(dir, &schema, &graph, Templates::new(secrets.clone()));
        take(more);
        if config.event_bus.is_none() {
            for e in &stepdefs.events {
                diags.push(
                    e.origin
                        .diag(format!("event step `{}` needs an event bus", e.name))
                        .with_hint(
                            "set `event_bus: {kind: kafka|nats, endpoint: HOST:PORT}` in stepsync.yaml",
                        ),
                );
            }
        }
        let svc = Service {
            dir: dir.to_path_buf(),
            config,
            schema: Arc::new(schema),
            graph,
            secrets,
            stepdefs,
            inventory,
            sources,
        };
        (Some(svc), diags)
    }

    /// The model named on the command line, or an error suggesting the closest one.
    pub fn model(&self, name: &str) -> Result<&Model> {
        self.schema.model(name).ok_or_else(|| {
            Error::from(
                Diagnostic::error(format!("unknown model `{name}`"))
                    .with_hint(expected_hint(name, &self.schema.model_names())),
            )
        })
    }

    /// The configured sys dir, with its retention settings.
    pub fn sys_dir(&self) -> crate::sysdir::SysDir {
        self.sys_dir_at(crate::config::in_dir(&self.dir, &self.config.sys_dir))
    }

    /// A sys dir at `root` with this service's retention settings.
    pub fn sys_dir_at(&self, root: std::path::PathBuf) -> crate::sysdir::SysDir {
        let n = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
        crate::sysdir::SysDir::new(root, n(self.config.sys_keep_runs))
            .keeping_deleted(n(self.config.sys_keep_deleted))
    }

    /// Opens the configured store, noting this service's watchers on every write to it.
    pub fn open_store(&self) -> Result<Box<dyn Store>> {
        self.open_store_at(&self.config.store)
    }

    /// Opens (and migrates) the store at `url`, a relative SQLite path taken from the
    /// service directory, with the service's watchers noted on its writes.
    pub fn open_store_at(&self, url: &StoreUrl) -> Result<Box<dyn Store>> {
        let store: Box<dyn Store> = match url {
            StoreUrl::Sqlite(p) => Box::new(SqliteStore::open(&self.config.resolve(&self.dir, p))?),
            StoreUrl::Postgres(url) => Box::new(PostgresStore::open(url)?),
        };
        store.set_triggers(Arc::new(self.stepdefs.triggers()));
        Ok(store)
    }

    /// Objects of models without an actuator have nothing to dispatch: they are in sync as
    /// soon as they are written, and purged as soon as nothing depends on them.
    pub fn is_actuated(&self, model: &str) -> bool {
        self.stepdefs.actuator(model).is_some()
    }
}

/// Reports the YAML syntax errors of every file in `dir`, for when nothing more can be checked.
fn syntax_only(dir: &Path, diags: &mut Diagnostics) {
    for f in crate::model::schema::yaml_files(dir).unwrap_or_default() {
        if let Err(d) = crate::yaml::Source::read(&f).and_then(|s| s.documents().map(drop)) {
            diags.push(d);
        }
    }
}
