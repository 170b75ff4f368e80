//! What an object's recipe is made of besides the object itself (SPEC §5.1 rule 4): its
//! model's stepdef, the playbook, roles, templates and files a playbook payload reads, the
//! service `vars`, the inventory, the schema. Two digests come out of it:
//!
//! - a model's **definition digest**, over every file and value its recipes may depend on.
//!   The store keeps the last one it saw per model; when it differs, the model's synced
//!   objects are rendered again (suspects), and only those — an idle pass compares a few
//!   digests, not every object;
//! - an object's **recipe digest**, over its rendered recipe files plus the files and values
//!   the recipe uses at run time without containing them (a playbook's roles, the vars).
//!   Stored at each success; a render whose digest differs is pending, one that matches
//!   stays ok, unactuated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::in_dir;
use crate::payload::playbook::PLAYBOOKS_DIR;
use crate::playbook::inputs::inputs;
use crate::service::Service;
use crate::stepdef::PayloadKind;

/// The digests of one service's definitions, computed once when it is loaded.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    models: HashMap<String, ModelInputs>,
}

#[derive(Debug, Clone)]
struct ModelInputs {
    /// Hex SHA-256 over everything the model's recipes may depend on.
    definition: String,
    /// SHA-256 over what a sync recipe uses without containing it.
    runtime: [u8; 32],
}

impl Definitions {
    /// Reads every file the service's actuators depend on. A file that cannot be read
    /// counts by its name and the error, so it still changes the digest when it changes.
    pub fn of(svc: &Service) -> Definitions {
        let playbooks_dir = in_dir(&svc.dir, Path::new(PLAYBOOKS_DIR));
        let vars = serde_json::to_string(&svc.config.vars).unwrap_or_default();
        // Files every model's recipes may read: the configuration, the schemas (defaults,
        // field names), the dependencies, the inventory.
        let mut shared: Vec<PathBuf> = vec![svc.sources.config.clone()];
        shared.extend(svc.sources.schemas.iter().cloned());
        shared.extend(svc.sources.model_deps.iter().cloned());
        shared.extend(svc.sources.inventory.iter().cloned());
        let mut shared_hash = Sha256::new();
        hash_files(&mut shared_hash, &svc.dir, &shared);
        let shared_hash = shared_hash.finalize();
        let mut models = HashMap::new();
        for (model, act) in &svc.stepdefs.actuators {
            let mut used: Vec<PathBuf> = Vec::new();
            if let Some(PayloadKind::Playbook(pb)) = act.sync.as_ref().map(|p| &p.kind) {
                used.extend(inputs(&playbooks_dir, &pb.playbook));
            }
            let mut runtime = Sha256::new();
            field(&mut runtime, vars.as_bytes());
            hash_files(&mut runtime, &svc.dir, &used);
            let runtime: [u8; 32] = runtime.finalize().into();
            let mut definition = Sha256::new();
            field(&mut definition, &shared_hash);
            field(&mut definition, &runtime);
            hash_files(&mut definition, &svc.dir, std::slice::from_ref(&act.file));
            if let Some(PayloadKind::Playbook(pb)) = act.delete.as_ref().map(|p| &p.kind) {
                hash_files(
                    &mut definition,
                    &svc.dir,
                    &inputs(&playbooks_dir, &pb.playbook),
                );
            }
            models.insert(
                model.clone(),
                ModelInputs {
                    definition: hex(&definition.finalize()),
                    runtime,
                },
            );
        }
        Definitions { models }
    }

    /// Each model with an actuator, with its definition digest.
    pub fn digests(&self) -> HashMap<String, String> {
        self.models
            .iter()
            .map(|(m, i)| (m.clone(), i.definition.clone()))
            .collect()
    }

    /// The digest of a sync recipe of `model` made of `files` (name, content).
    pub fn recipe_digest(&self, model: &str, files: &[(String, String)]) -> String {
        let mut h = Sha256::new();
        if let Some(i) = self.models.get(model) {
            field(&mut h, &i.runtime);
        }
        for (name, content) in files {
            field(&mut h, name.as_bytes());
            field(&mut h, content.as_bytes());
        }
        hex(&h.finalize())
    }
}

/// A length-prefixed field, so that no two different inputs hash the same bytes.
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// Each file's path (relative to `dir`) and content.
fn hash_files(h: &mut Sha256, dir: &Path, files: &[PathBuf]) {
    for f in files {
        let name = f.strip_prefix(dir).unwrap_or(f);
        field(h, name.to_string_lossy().as_bytes());
        match std::fs::read(f) {
            Ok(bytes) => field(h, &bytes),
            Err(e) => field(h, format!("unreadable: {}", e.kind()).as_bytes()),
        }
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
