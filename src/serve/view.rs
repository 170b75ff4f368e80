//! What the API and the dashboard both show of one object beyond its row: the dependency
//! tree around it, and the files of its sys dir folder (recipes and run logs). One home, so
//! the two views cannot disagree.

use std::io::Read;
use std::path::PathBuf;

use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::store::{ObjectRecord, Status};

/// Nodes listed per level of a tree, at most (a Site with 10,000 Slices shows 50).
pub(crate) const TREE_WIDTH: usize = 50;
/// The deepest a tree goes when the caller does not say, and at most.
pub(crate) const TREE_DEPTH: usize = 3;
pub(crate) const TREE_DEPTH_MAX: usize = 6;
/// A file's content shown, at most: a run log of a chatty playbook can be large.
const FILE_LIMIT: usize = 256 * 1024;

/// The worst of two statuses along a dependency path: error over blocked over deferred
/// over pending over deleting over ok.
pub(crate) fn worse(a: Status, b: Status) -> Status {
    let rank = |s: Status| match s {
        Status::Error => 5,
        Status::Blocked => 4,
        Status::Deferred => 3,
        Status::Pending => 2,
        Status::Deleting => 1,
        Status::Ok => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// One node of a dependency tree, with the worst status at or below it.
pub(crate) struct Node {
    pub(crate) obj: ObjectRecord,
    pub(crate) worst: Status,
    pub(crate) children: Vec<Node>,
}

/// What `obj` depends on (`up`) or what depends on it, `depth` levels at most, each level
/// cut to [`TREE_WIDTH`].
pub(crate) fn tree(state: &AppState, obj: &ObjectRecord, up: bool, depth: usize) -> Vec<Node> {
    if depth == 0 {
        return Vec::new();
    }
    let next: Vec<ObjectRecord> = if up {
        state
            .svc
            .graph
            .edges(&obj.model, &obj.fields)
            .into_iter()
            .filter_map(|e| {
                let key_field = state.svc.schema.model(&e.to_model).map(|m| m.key.clone())?;
                (e.to_field == key_field)
                    .then(|| state.store.get(&e.to_model, &e.value).ok().flatten())
                    .flatten()
            })
            .collect()
    } else {
        crate::deletion::referrers_of(&*state.store, obj, false).unwrap_or_default()
    };
    next.into_iter()
        .take(TREE_WIDTH)
        .map(|o| {
            let children = tree(state, &o, up, depth - 1);
            let worst = children
                .iter()
                .fold(o.book.status, |w, c| worse(w, c.worst));
            Node {
                obj: o,
                worst,
                children,
            }
        })
        .collect()
}

/// A tree node as the API returns it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GraphNode {
    model: String,
    key: String,
    status: String,
    /// The worst status at this node or anywhere below it.
    worst: String,
    #[schema(no_recursion)]
    children: Vec<GraphNode>,
}

impl From<&Node> for GraphNode {
    fn from(n: &Node) -> GraphNode {
        GraphNode {
            model: n.obj.model.clone(),
            key: n.obj.key.clone(),
            status: n.obj.book.status.as_str().to_owned(),
            worst: n.worst.as_str().to_owned(),
            children: n.children.iter().map(GraphNode::from).collect(),
        }
    }
}

/// One file of an object's sys dir folder.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SysFile {
    /// Its name in the folder (`runs/...` for a run log).
    pub(crate) name: String,
    /// Its text, secrets masked, cut at 256 KiB.
    pub(crate) content: String,
    pub(crate) truncated: bool,
}

/// An object's sys dir folder: its recipes (the files an operator can read and re-run) and
/// its run logs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SysFiles {
    pub(crate) folder: String,
    pub(crate) recipes: Vec<SysFile>,
    pub(crate) runs: Vec<SysFile>,
}

/// Reads `obj`'s folder. The path is the sys dir's own (names made safe there), so no
/// object name leads outside it. A folder not yet written (nothing rendered) has no files.
pub(crate) fn sys_files(state: &AppState, obj: &ObjectRecord) -> SysFiles {
    let root = crate::config::in_dir(&state.svc.dir, &state.svc.config.sys_dir);
    let folder = state.svc.sys_dir_at(root).object_dir(&obj.model, &obj.key);
    let read = |dir: &PathBuf, prefix: &str| -> Vec<SysFile> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                // Only what is shown is read: one byte past the limit tells it was cut.
                let mut bytes = Vec::new();
                let _ = std::fs::File::open(dir.join(&n))
                    .and_then(|f| f.take(FILE_LIMIT as u64 + 1).read_to_end(&mut bytes));
                let truncated = bytes.len() > FILE_LIMIT;
                bytes.truncate(FILE_LIMIT);
                // A multi-byte character cut at the limit shows as one replacement mark.
                let text = String::from_utf8_lossy(&bytes);
                SysFile {
                    name: format!("{prefix}{n}"),
                    content: state.svc.secrets.mask(&text),
                    truncated,
                }
            })
            .collect()
    };
    let recipes = read(&folder, "");
    let mut runs = read(&folder.join("runs"), "runs/");
    // Named by their time stamps: the newest last in name order.
    runs.reverse();
    SysFiles {
        folder: folder.display().to_string(),
        recipes,
        runs,
    }
}
