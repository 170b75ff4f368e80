//! The sys dir (SPEC §8): one folder per backend object holding its rendered recipe, its
//! attributes, its last status and its recent run logs. Folder names are made safe, so no
//! object name can place a file outside the sys dir.

use std::io;
use std::path::{Path, PathBuf};

/// Which recipe of an object: the one that creates/updates it, or the one that deletes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Sync,
    Delete,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Sync => "sync",
            Phase::Delete => "delete",
        }
    }
}

/// A file name for any string: characters outside `[A-Za-z0-9._-]` are percent-encoded, a
/// leading `.` too (so `.` and `..` cannot occur), and the empty string becomes `%`, which no
/// encoded name can be.
pub fn safe_name(s: &str) -> String {
    let name = encode_name(s);
    if name.len() <= MAX_NAME {
        return name;
    }
    // Too long for a file name (most file systems allow 255 bytes): cut to fit, and tell
    // keys with the same beginning apart by a digest of the whole key. `status.json` has
    // the key in full. A cut never splits a `%XX`, and `~` is never in an encoded name.
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(s.as_bytes());
    let hex = crate::definition::hex(&digest[..8]);
    let b = name.as_bytes();
    let mut cut = MAX_NAME - hex.len() - 1;
    while cut >= 2 && (b[cut - 1] == b'%' || b[cut - 2] == b'%') {
        cut -= 1;
    }
    format!("{}~{hex}", &name[..cut])
}

/// The longest folder name the sys dir writes, well inside the usual 255-byte limit so a
/// file system that counts differently still fits it.
const MAX_NAME: usize = 200;

fn encode_name(s: &str) -> String {
    if s.is_empty() {
        return "%".to_owned();
    }
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub struct SysDir {
    root: PathBuf,
    keep_runs: usize,
    keep_deleted: usize,
}

/// A file the engine wrote, with what it held before (for plan diffs).
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub old: Option<String>,
    pub new: String,
}

impl SysDir {
    pub fn new(root: PathBuf, keep_runs: usize) -> SysDir {
        SysDir {
            root,
            keep_runs,
            keep_deleted: 1000,
        }
    }

    /// Keeps at most `n` purged objects' folders under `.deleted/` ([`SysDir::prune_deleted`]).
    pub fn keeping_deleted(mut self, n: usize) -> SysDir {
        self.keep_deleted = n;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn object_dir(&self, model: &str, key: &str) -> PathBuf {
        self.root.join(safe_name(model)).join(safe_name(key))
    }

    /// Writes `files` (name, content) into the object's folder; returns each with its
    /// previous content. Unchanged files are not rewritten, so mtimes stay meaningful.
    pub fn write_files(
        &self,
        model: &str,
        key: &str,
        files: &[(String, String)],
    ) -> io::Result<Vec<Written>> {
        let dir = self.object_dir(model, key);
        // In a folder made just now there is nothing to read back.
        let fresh = make_dir(&dir)?;
        let mut out = Vec::with_capacity(files.len());
        for (name, content) in files {
            let path = dir.join(name);
            let old = if fresh {
                None
            } else {
                std::fs::read_to_string(&path).ok()
            };
            if old.as_deref() != Some(content.as_str()) {
                write_atomic(&path, content, name.ends_with(".sh"))?;
            }
            out.push(Written {
                path,
                old,
                new: content.clone(),
            });
        }
        Ok(out)
    }

    /// Writes files that belong to the sys dir as a whole (`ansible.cfg`), when changed.
    pub fn write_root_files(&self, files: &[(&str, String)]) -> io::Result<()> {
        for (rel, content) in files {
            let path = self.root.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if std::fs::read_to_string(&path).ok().as_deref() != Some(content.as_str()) {
                write_atomic(&path, content, false)?;
            }
        }
        Ok(())
    }

    /// Where the run log of a run recorded at `stamp` goes (one recorded twice within the
    /// same millisecond gets a `.2` after the stamp instead).
    pub fn run_log_path(&self, model: &str, key: &str, phase: Phase, stamp: &str) -> PathBuf {
        self.object_dir(model, key)
            .join("runs")
            .join(format!("{stamp}-{}.log", phase.as_str()))
    }

    /// Adds a run log and keeps only the newest `keep_runs`.
    pub fn write_run_log(
        &self,
        model: &str,
        key: &str,
        phase: Phase,
        stamp: &str,
        text: &str,
    ) -> io::Result<PathBuf> {
        let mut path = self.run_log_path(model, key, phase, stamp);
        let runs = self.object_dir(model, key).join("runs");
        let fresh = make_dir(&runs)?;
        let mut n = 1;
        while !fresh && path.exists() {
            n += 1;
            path = runs.join(format!("{stamp}.{n}-{}.log", phase.as_str()));
        }
        write_atomic(&path, text, false)?;
        if fresh {
            return Ok(path);
        }
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&runs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        let excess = logs.len().saturating_sub(self.keep_runs.max(1));
        for old in &logs[..excess] {
            std::fs::remove_file(old)?;
        }
        Ok(path)
    }

    /// Removes the temporary files a writer killed mid-write left in the object's folder
    /// (SPEC §8: crash-safe); returns how many.
    pub fn sweep(&self, model: &str, key: &str) -> io::Result<usize> {
        let dir = self.object_dir(model, key);
        let mut n = 0;
        for d in [dir.join("runs"), dir] {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for e in entries.flatten() {
                if e.file_name().to_str().is_some_and(is_temp) {
                    std::fs::remove_file(e.path())?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Moves a purged object's folder to `.deleted/<Model>/<key>/`, replacing an older one.
    pub fn retire(&self, model: &str, key: &str) -> io::Result<()> {
        let from = self.object_dir(model, key);
        if !from.exists() {
            return Ok(());
        }
        let to = self
            .root
            .join(".deleted")
            .join(safe_name(model))
            .join(safe_name(key));
        if to.exists() {
            std::fs::remove_dir_all(&to)?;
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&from, &to)?;
        // A rename keeps the folder's own times; its age in `.deleted/` starts now.
        std::fs::File::open(&to)?.set_modified(std::time::SystemTime::now())
    }

    /// Removes the oldest folders of `.deleted/` beyond the last `keep_deleted` (SPEC §8);
    /// returns how many. Called once after a batch of [`SysDir::retire`]s.
    pub fn prune_deleted(&self) -> io::Result<usize> {
        let deleted = self.root.join(".deleted");
        let mut folders = Vec::new();
        let models = match std::fs::read_dir(&deleted) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        for model in models.flatten() {
            for obj in std::fs::read_dir(model.path())?.flatten() {
                let modified = obj.metadata()?.modified()?;
                folders.push((modified, obj.path()));
            }
        }
        if folders.len() <= self.keep_deleted {
            return Ok(0);
        }
        folders.sort();
        let excess = folders.len() - self.keep_deleted;
        for (_, path) in &folders[..excess] {
            std::fs::remove_dir_all(path)?;
        }
        Ok(excess)
    }
}

/// Makes `dir` (and its parents); whether it was made now rather than there already.
fn make_dir(dir: &Path) -> io::Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)?;
            }
            match std::fs::create_dir(dir) {
                Ok(()) => Ok(true),
                // Another writer made it in between.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Whether `name` is one of [`write_atomic`]'s temporary files: `.<name>.tmp<pid>.<n>`.
fn is_temp(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some((_, tail)) = rest.rsplit_once(".tmp") else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    tail.split_once('.')
        .is_some_and(|(pid, n)| digits(pid) && digits(n))
}

/// Write to a temporary file beside `path` and rename, so a reader never sees half a
/// recipe; the rename stays in one folder (a rename across folders takes a lock that is one
/// per file system). Scripts are created executable (as far as the umask allows). A write
/// that fails removes its temporary file: a full disk is not made fuller.
fn write_atomic(path: &Path, content: &str, executable: bool) -> io::Result<()> {
    use std::io::Write as _;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let tmp = path.with_file_name(format!(".{name}.tmp{}.{n}", std::process::id()));
    let written = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(if executable { 0o777 } else { 0o666 });
        }
        #[cfg(not(unix))]
        let _ = executable;
        let mut f = opts.open(&tmp)?;
        f.write_all(content.as_bytes())?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_are_told_apart_and_swept() {
        let root = tempfile::tempdir().unwrap();
        let sys = SysDir::new(root.path().to_path_buf(), 5);
        sys.write_files("Site", "a", &[("sync.http".into(), "GET /\n".into())])
            .unwrap();
        let dir = sys.object_dir("Site", "a");
        std::fs::create_dir_all(dir.join("runs")).unwrap();
        for name in [".sync.http.tmp123.0", ".status.json.tmp9.17"] {
            std::fs::write(dir.join(name), "half").unwrap();
        }
        std::fs::write(dir.join("runs/.x-sync.log.tmp1.2"), "half").unwrap();
        // Look-alikes stay.
        for name in ["sync.http.tmp1.2", ".tmp1.2x", ".notes.tmp.1"] {
            std::fs::write(dir.join(name), "mine").unwrap();
        }
        assert_eq!(sys.sweep("Site", "a").unwrap(), 3);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".notes.tmp.1",
                ".tmp1.2x",
                "runs",
                "sync.http",
                "sync.http.tmp1.2"
            ]
        );
        assert_eq!(sys.sweep("Site", "missing").unwrap(), 0);
    }

    #[test]
    fn names_cannot_escape() {
        assert_eq!(safe_name("site-a"), "site-a");
        assert_eq!(safe_name("../../etc"), "%2E.%2F..%2Fetc");
        assert_eq!(safe_name("a/b"), "a%2Fb");
        assert_eq!(safe_name(".."), "%2E.");
        assert_eq!(safe_name("."), "%2E");
        assert_eq!(safe_name(""), "%");
        assert_eq!(safe_name("é"), "%C3%A9");
        assert_eq!(safe_name("a%b"), "a%25b");
        for k in ["../../etc", "a/b", "..", ".", "", "é", "x\0y", "/abs"] {
            let n = safe_name(k);
            assert!(
                !n.contains('/') && n != "." && n != ".." && !n.is_empty(),
                "{k:?} -> {n}"
            );
        }
    }

    #[test]
    fn scripts_are_executable_and_rewrites_report_the_old_content() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sys = SysDir::new(dir.path().join("sys"), 2);
        let files = |sh: &str| {
            vec![
                ("sync.sh".to_owned(), sh.to_owned()),
                ("vars.json".to_owned(), "{}".to_owned()),
            ]
        };
        let first = sys.write_files("M", "k", &files("echo 1")).unwrap();
        assert!(first.iter().all(|w| w.old.is_none()));
        let sh = sys.object_dir("M", "k").join("sync.sh");
        let mode = std::fs::metadata(&sh).unwrap().permissions().mode();
        assert_ne!(mode & 0o100, 0, "sync.sh is not executable: {mode:o}");
        assert_eq!(mode & 0o002, 0, "sync.sh is world-writable: {mode:o}");
        let second = sys.write_files("M", "k", &files("echo 2")).unwrap();
        assert_eq!(second[0].old.as_deref(), Some("echo 1"));
        assert_eq!(second[1].old.as_deref(), Some("{}"));
        assert_eq!(std::fs::read_to_string(&sh).unwrap(), "echo 2");
        assert_ne!(
            std::fs::metadata(&sh).unwrap().permissions().mode() & 0o100,
            0
        );
    }

    #[test]
    fn long_keys_are_cut_to_fit_and_stay_apart() {
        let long = "é".repeat(150);
        let (a, b) = (
            safe_name(&format!("{long}a")),
            safe_name(&format!("{long}b")),
        );
        assert!(a.len() <= MAX_NAME && b.len() <= MAX_NAME, "{}", a.len());
        assert_ne!(a, b);
        assert!(a.contains('~'));
        // The cut never leaves half a `%XX`.
        let head = a.split('~').next().unwrap();
        assert_eq!(head.rfind('%'), Some(head.len() - 3), "{head}");
        let dir = tempfile::tempdir().unwrap();
        let sys = SysDir::new(dir.path().to_path_buf(), 2);
        sys.write_files("M", &format!("{long}a"), &[("x".into(), "y".into())])
            .unwrap();
    }

    #[test]
    fn deleted_folders_are_kept_up_to_the_limit_oldest_removed_first() {
        let dir = tempfile::tempdir().unwrap();
        let sys = SysDir::new(dir.path().to_path_buf(), 2).keeping_deleted(3);
        for k in ["a", "b", "c", "d", "e"] {
            sys.write_files("Site", k, &[("sync.sh".into(), k.into())])
                .unwrap();
            sys.retire("Site", k).unwrap();
            // Distinct ages even on a file system with coarse times.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(sys.prune_deleted().unwrap(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path().join(".deleted/Site"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["c", "d", "e"]);
        assert_eq!(sys.prune_deleted().unwrap(), 0);
    }

    #[test]
    fn run_logs_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let sys = SysDir::new(dir.path().to_path_buf(), 2);
        for i in 0..4 {
            sys.write_run_log("M", "k", Phase::Sync, &format!("2026010{i}T000000Z"), "x")
                .unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(sys.object_dir("M", "k").join("runs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["20260102T000000Z-sync.log", "20260103T000000Z-sync.log"]
        );
    }
}
