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
use crate::store::{SqliteStore, Store};
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
        let (Some(config), Some(schema)) = (config, schema) else {
            return (None, diags);
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
        let stepdefs = Stepdefs::load(dir, &schema, Templates::new(secrets.clone()))
            .map_err(&mut take)
            .ok();
        let (Ok(graph), Some(stepdefs)) = (graph, stepdefs) else {
            return (None, diags);
        };
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

    pub fn open_store(&self) -> Result<Box<dyn Store>> {
        match &self.config.store {
            StoreUrl::Sqlite(p) => Ok(Box::new(SqliteStore::open(
                &self.config.resolve(&self.dir, p),
            )?)),
            StoreUrl::Postgres(_) => Err(Error::failed(
                "the PostgreSQL store is planned but not built yet; use `store: sqlite:PATH`",
            )),
        }
    }

    /// Objects of models without an actuator have nothing to dispatch: they are in sync as
    /// soon as they are written, and purged as soon as nothing depends on them.
    pub fn is_actuated(&self, model: &str) -> bool {
        self.stepdefs.actuator(model).is_some()
    }
}
