//! The crash test of issue #13 (SPEC §5.1, §5.4, §5.5, §8 "The sys dir is crash-safe"): a
//! few hundred objects in three models with dependencies (Site <- Switch <- Port), REST
//! actuators against a real HTTP server, and the `stepsync run` daemon killed with SIGKILL
//! at random moments, at least 20 times, with applies and deletes between the kills. After
//! it converges, nothing may be lost, no stale update may have won, every `ok` object must
//! have its `status.json` and newest run log, no temporary file may be left in the sys dir,
//! and the SQLite file must pass `PRAGMA integrity_check`.
//!
//! The moments, the changes and the deletions are drawn from a seeded generator, printed with
//! the kill count: `STEPSYNC_CRASH_SEED=N` draws the same ones again (where each kill lands
//! in the daemon's work still varies with timing). `STEPSYNC_CRASH_KEEP=DIR` copies the
//! service directory (store, sys dir, `daemon.log` with every daemon's `-v` log between
//! `--- round N` lines) to DIR at the end, for a post-mortem.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::Service;
use crate::common::http::{Recorded, TestServer};

const SITES: usize = 10;
const SWITCHES: usize = 40;
const PORTS: usize = 250;
/// How many times the daemon is killed with SIGKILL.
const KILLS: usize = 24;
/// Every response is this slow, so a full pass takes long enough for kills to land in it.
const DELAY: Duration = Duration::from_millis(10);
/// A few objects per round answer this slowly, so kills land while their request is open.
const HOLD: Duration = Duration::from_millis(900);
/// How many `run --once` the final convergence may take.
const CONVERGE_TRIES: usize = 6;

const SCHEMA: &str = "models:
  Site:
    fields:
      name: {type: string, required: true}
      rev: {type: int, required: true}
  Switch:
    fields:
      name: {type: string, required: true}
      site: {type: ref, to: Site, required: true}
      rev: {type: int, required: true}
  Port:
    fields:
      name: {type: string, required: true}
      switch: {type: ref, to: Switch, required: true}
      rev: {type: int, required: true}
";

/// PUT on sync (the body carries `rev`, so the backend shows which update won), DELETE on
/// delete. A ref is read only for its key, which never changes: no reference drift here.
fn stepdef(model: &str, path: &str, parent: Option<&str>) -> String {
    let parent = parent.map_or(String::new(), |p| {
        format!(", {p}: \"{{{{ object.{p}.name }}}}\"")
    });
    format!(
        r#"kind: Actuator
model: {model}
attributes: {{n: "{{{{ object.name }}}}"}}
sync:
  rest:
    method: PUT
    url: "{{{{ vars.base }}}}/{path}/{{{{ n }}}}"
    body: {{name: "{{{{ n }}}}", rev: "{{{{ object.rev }}}}"{parent}}}
delete:
  rest: {{method: DELETE, url: "{{{{ vars.base }}}}/{path}/{{{{ n }}}}"}}
"#
    )
}

fn service(server: &TestServer) -> Service {
    let svc = Service::new(SCHEMA);
    svc.file(
        "stepsync.yaml",
        &format!(
            "name: crash-test\nvars: {{base: \"{}\"}}\nconcurrency: 8\n\
             backoff: {{initial: 200ms, factor: 2, max: 2s}}\n",
            server.url
        ),
    );
    svc.file("stepdefs/site.yaml", &stepdef("Site", "sites", None));
    svc.file(
        "stepdefs/switch.yaml",
        &stepdef("Switch", "switches", Some("site")),
    );
    svc.file(
        "stepdefs/port.yaml",
        &stepdef("Port", "ports", Some("switch")),
    );
    svc
}

/// splitmix64: small, seeded, good enough to pick moments and objects.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("index")
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64) < p * (1u64 << 53) as f64
    }
}

fn seed() -> u64 {
    std::env::var("STEPSYNC_CRASH_SEED")
        .ok()
        .map(|s| s.parse().expect("STEPSYNC_CRASH_SEED is a number"))
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock");
            t.as_nanos() as u64 ^ u64::from(std::process::id())
        })
}

/// One object as the test last applied it.
struct Obj {
    model: &'static str,
    key: String,
    /// The object it refers to, by index (Switch -> Site, Port -> Switch).
    parent: Option<usize>,
    rev: u64,
    deleted: bool,
}

impl Obj {
    fn name(&self) -> String {
        format!("{}/{}", self.model, self.key)
    }

    /// The backend path its actuator sends to.
    fn path(&self) -> String {
        let dir = match self.model {
            "Site" => "sites",
            "Switch" => "switches",
            _ => "ports",
        };
        format!("/{dir}/{}", self.key)
    }
}

/// What the data model should be: the latest applied value of every object, and which were
/// deleted.
struct World {
    objs: Vec<Obj>,
}

impl World {
    fn new() -> World {
        let mut objs = Vec::new();
        for i in 0..SITES {
            objs.push(Obj {
                model: "Site",
                key: format!("site-{i:02}"),
                parent: None,
                rev: 1,
                deleted: false,
            });
        }
        for i in 0..SWITCHES {
            objs.push(Obj {
                model: "Switch",
                key: format!("sw-{i:02}"),
                parent: Some(i % SITES),
                rev: 1,
                deleted: false,
            });
        }
        for i in 0..PORTS {
            objs.push(Obj {
                model: "Port",
                key: format!("port-{i:03}"),
                parent: Some(SITES + i % SWITCHES),
                rev: 1,
                deleted: false,
            });
        }
        World { objs }
    }

    /// An objects file with the whole declarative state of `which`.
    fn yaml(&self, which: &[usize]) -> String {
        let mut by_model: BTreeMap<&str, String> = BTreeMap::new();
        for &i in which {
            let o = &self.objs[i];
            let line = match (o.model, o.parent) {
                ("Switch", Some(p)) => format!(
                    "  - {{name: {}, site: {}, rev: {}}}\n",
                    o.key, self.objs[p].key, o.rev
                ),
                ("Port", Some(p)) => format!(
                    "  - {{name: {}, switch: {}, rev: {}}}\n",
                    o.key, self.objs[p].key, o.rev
                ),
                _ => format!("  - {{name: {}, rev: {}}}\n", o.key, o.rev),
            };
            by_model.entry(o.model).or_default().push_str(&line);
        }
        // Parents first, though one apply is all or nothing either way.
        ["Site", "Switch", "Port"]
            .iter()
            .filter_map(|m| by_model.get(m).map(|body| format!("{m}:\n{body}")))
            .collect()
    }

    fn live(&self, model: Option<&str>) -> Vec<usize> {
        (0..self.objs.len())
            .filter(|&i| !self.objs[i].deleted && model.is_none_or(|m| self.objs[i].model == m))
            .collect()
    }

    /// `i` and everything that depends on it, as `delete --cascade` takes them.
    fn mark_deleted(&mut self, i: usize) -> usize {
        let mut n = 1;
        self.objs[i].deleted = true;
        let dependents: Vec<usize> = (0..self.objs.len())
            .filter(|&j| self.objs[j].parent == Some(i) && !self.objs[j].deleted)
            .collect();
        for j in dependents {
            n += self.mark_deleted(j);
        }
        n
    }
}

/// Runs `args` (an apply or a delete); a failure is retried a few times and each failed try
/// is a problem of its own: SPEC §5.5 says no command shows the user `database is locked`.
fn must(svc: &Service, args: &[&str], problems: &mut Problems) {
    for attempt in 1..=3 {
        let out = svc.test().args(args).any_status().run();
        if out.code == 0 {
            return;
        }
        problems.add(
            COMMANDS,
            format!(
                "`stepsync {}` exited {} (try {attempt}): {}",
                args.join(" "),
                out.code,
                out.stderr.trim()
            ),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "`stepsync {}` failed three times; the test cannot know the intended state:\n{}",
        args.join(" "),
        problems.report()
    );
}

/// Bumps `rev` of a few live objects and applies them.
fn change(svc: &Service, world: &mut World, rng: &mut Rng, problems: &mut Problems) -> usize {
    let live = world.live(None);
    let n = rng.range(10, 30) as usize;
    let mut picked: Vec<usize> = (0..n).map(|_| live[rng.below(live.len())]).collect();
    picked.sort_unstable();
    picked.dedup();
    for &i in &picked {
        world.objs[i].rev += 1;
    }
    svc.file("change.yaml", &world.yaml(&picked));
    must(svc, &["apply", "-f", "change.yaml"], problems);
    picked.len()
}

/// Deletes a few live Ports, sometimes a Switch with its Ports, once a whole Site.
fn delete(
    svc: &Service,
    world: &mut World,
    rng: &mut Rng,
    round: usize,
    problems: &mut Problems,
) -> usize {
    let mut deleted = 0;
    for _ in 0..rng.range(1, 4) {
        let ports = world.live(Some("Port"));
        if ports.is_empty() {
            break;
        }
        let i = ports[rng.below(ports.len())];
        must(svc, &["delete", "Port", &world.objs[i].key], problems);
        deleted += world.mark_deleted(i);
    }
    let cascade_of = if round == KILLS / 2 {
        Some("Site")
    } else if rng.chance(0.2) {
        Some("Switch")
    } else {
        None
    };
    if let Some(model) = cascade_of {
        let live = world.live(Some(model));
        if !live.is_empty() {
            let i = live[rng.below(live.len())];
            must(
                svc,
                &["delete", model, &world.objs[i].key, "--cascade"],
                problems,
            );
            deleted += world.mark_deleted(i);
        }
    }
    deleted
}

/// Appends a line to the daemons' log.
fn note(log: &Path, line: &str) {
    use std::io::Write as _;
    let mut f = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("daemon log");
    writeln!(f, "{line}").expect("daemon log");
}

/// `stepsync -v run`, its log appended to `log` after a line naming the round.
fn daemon(svc: &Service, log: &Path, round: usize) -> Child {
    note(log, &format!("--- round {round}: daemon started"));
    let out = File::options().append(true).open(log).expect("daemon log");
    let err = out.try_clone().expect("daemon log");
    svc.command(&["-v", "run"])
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("start the daemon")
}

/// What is wrong, by assertion, reported together at the end.
#[derive(Default)]
struct Problems(BTreeMap<&'static str, Vec<String>>);

impl Problems {
    fn add(&mut self, check: &'static str, what: String) {
        self.0.entry(check).or_default().push(what);
    }

    fn count(&self, check: &str) -> usize {
        self.0.get(check).map_or(0, Vec::len)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every check with its count, and at most 100 problems of each.
    fn report(&self) -> String {
        let mut out = String::new();
        for (check, list) in &self.0 {
            out.push_str(&format!("\n{check}: {} problem(s)\n", list.len()));
            for p in list.iter().take(100) {
                out.push_str(&format!("  - {p}\n"));
            }
            if list.len() > 100 {
                out.push_str(&format!("  ... and {} more\n", list.len() - 100));
            }
        }
        out
    }
}

const COMMANDS: &str = "0. apply and delete succeed";
const LOST: &str = "1. nothing lost (store)";
const STALE: &str = "2. no stale update won (backend)";
const SYSDIR: &str = "3. every ok object has status.json and its newest run log";
const TEMP: &str = "4. no temporary file left in the sys dir";
const INTEGRITY: &str = "5. PRAGMA integrity_check";
const CONVERGE: &str = "6. convergence";

#[test]
fn kill_9_at_random_moments_loses_nothing_and_leaves_a_whole_sys_dir() {
    let seed = seed();
    let mut rng = Rng(seed);
    eprintln!("crash test: seed {seed} (STEPSYNC_CRASH_SEED={seed} draws the same moments)");
    let started = Instant::now();
    let server = TestServer::start();
    server.set_delay(DELAY);
    let svc = service(&server);
    let mut world = World::new();
    let mut problems = Problems::default();
    svc.file("objects.yaml", &world.yaml(&world.live(None)));
    svc.ok(&["apply", "-f", "objects.yaml"]);

    let log = svc.path().join("daemon.log");
    let mut kills = 0;
    let (mut changed, mut deleted) = (0, 0);
    let mut held: Vec<String> = Vec::new();
    for round in 0..KILLS {
        // A few objects' responses are slow this round: kills land while they are open.
        for p in held.drain(..) {
            server.hold(&p, DELAY);
        }
        let live = world.live(None);
        for _ in 0..4 {
            let p = world.objs[live[rng.below(live.len())]].path();
            server.hold(&p, HOLD);
            held.push(p);
        }
        let born = Instant::now();
        let mut d = daemon(&svc, &log, round);
        if rng.chance(0.5) {
            // An apply the running daemon picks up (and may be killed in the middle of).
            std::thread::sleep(Duration::from_millis(rng.range(0, 400)));
            changed += change(&svc, &mut world, &mut rng, &mut problems);
        }
        std::thread::sleep(Duration::from_millis(rng.range(30, 900)));
        d.kill().expect("kill -9 the daemon");
        // Reaped, so its PID is gone and the next runner takes its lease over at once.
        d.wait().expect("reap the daemon");
        kills += 1;
        note(
            &log,
            &format!("--- round {round}: kill -9 after {:?}", born.elapsed()),
        );
        changed += change(&svc, &mut world, &mut rng, &mut problems);
        deleted += delete(&svc, &mut world, &mut rng, round, &mut problems);
    }
    eprintln!(
        "crash test: seed {seed}: {kills} kill -9 of the daemon, {changed} changes and \
         {deleted} deletions applied, in {:?}",
        started.elapsed()
    );

    // Converge: no slow answers any more, `run --once` until it exits 0.
    for p in held.drain(..) {
        server.hold(&p, Duration::ZERO);
    }
    server.set_delay(Duration::ZERO);
    for attempt in 1..=CONVERGE_TRIES {
        let out = svc.test().args(["run", "--once"]).any_status().run();
        if out.code == 0 {
            eprintln!("crash test: converged after {attempt} run --once");
            break;
        }
        if attempt == CONVERGE_TRIES {
            problems.add(
                CONVERGE,
                format!(
                    "`run --once` exited {} {CONVERGE_TRIES} times; the last said:\n{}\n{}",
                    out.code,
                    tail(&out.stdout, 15),
                    tail(&out.stderr, 15)
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    check_store(&svc, &world, &mut problems);
    check_backend(&server.requests(), &world, &mut problems);
    let sys = svc.path().join(".stepsync/sys");
    check_sys_dir(&svc, &sys, &world, &mut problems);
    check_temp_files(&sys, &mut problems);
    check_integrity(&svc.path().join(".stepsync/state.db"), &mut problems);

    eprintln!(
        "crash test: seed {seed}, {kills} kills, {:?} in all; problems by assertion: {}",
        started.elapsed(),
        [COMMANDS, LOST, STALE, SYSDIR, TEMP, INTEGRITY, CONVERGE]
            .iter()
            .map(|c| format!("{} = {}", &c[..2], problems.count(c)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(dir) = std::env::var_os("STEPSYNC_CRASH_KEEP") {
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(svc.path())
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        eprintln!(
            "crash test: service directory {} to {}",
            if ok { "copied" } else { "NOT copied" },
            PathBuf::from(&dir).display()
        );
    }
    assert!(
        problems.is_empty(),
        "crash test (seed {seed}, {kills} kill -9; STEPSYNC_CRASH_SEED={seed} draws the same \
         moments, STEPSYNC_CRASH_KEEP=DIR keeps the service directory):{}",
        problems.report()
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `get MODEL -o json` of every model, by (model, key).
fn store_objects(svc: &Service) -> HashMap<(String, String), Value> {
    let mut out = HashMap::new();
    for model in ["Site", "Switch", "Port"] {
        let text = svc.ok(&["get", model, "-o", "json"]).stdout;
        let list: Value = serde_json::from_str(&text).expect("get -o json prints JSON");
        for o in list.as_array().expect("a JSON array") {
            let key = o["key"].as_str().expect("key").to_owned();
            out.insert((model.to_owned(), key), o.clone());
        }
    }
    out
}

/// Assertion 1, nothing lost: every live object is in the store, `ok` at its generation with
/// the latest applied value; every deleted one is gone.
fn check_store(svc: &Service, world: &World, problems: &mut Problems) {
    let mut store = store_objects(svc);
    for o in &world.objs {
        let found = store.remove(&(o.model.to_owned(), o.key.clone()));
        match (o.deleted, found) {
            (false, None) => problems.add(
                LOST,
                format!(
                    "{}: lost: applied at rev {}, not in the store",
                    o.name(),
                    o.rev
                ),
            ),
            (false, Some(v)) => {
                let st = &v["status"];
                if st["status"] != "ok" || st["synced_generation"] != st["generation"] {
                    problems.add(
                        LOST,
                        format!(
                            "{}: status {} at synced_generation {} / generation {} \
                             (wanted ok, in sync): {}",
                            o.name(),
                            st["status"],
                            st["synced_generation"],
                            st["generation"],
                            st["message"]
                        ),
                    );
                }
                if v["fields"]["rev"] != o.rev {
                    problems.add(
                        LOST,
                        format!(
                            "{}: the store has rev {}, the last apply said rev {}",
                            o.name(),
                            v["fields"]["rev"],
                            o.rev
                        ),
                    );
                }
            }
            (true, Some(v)) => problems.add(
                LOST,
                format!(
                    "{}: deleted, but still in the store (status {}: {})",
                    o.name(),
                    v["status"]["status"],
                    v["status"]["message"]
                ),
            ),
            (true, None) => {}
        }
    }
    let mut extra: Vec<_> = store.into_keys().collect();
    extra.sort();
    for (model, key) in extra {
        problems.add(
            LOST,
            format!("{model}/{key}: in the store, but never applied"),
        );
    }
}

/// Assertion 2, no stale update won: the backend's last request for each object is a PUT of
/// the latest `rev` for a live object, a DELETE (or nothing) for a deleted one.
fn check_backend(requests: &[Recorded], world: &World, problems: &mut Problems) {
    let mut last: HashMap<&str, &Recorded> = HashMap::new();
    for r in requests {
        last.insert(r.path.as_str(), r);
    }
    for o in &world.objs {
        let path = o.path();
        let r = last.get(path.as_str());
        let rev = r.and_then(|r| {
            serde_json::from_str::<Value>(&r.body)
                .ok()
                .map(|b| b["rev"].clone())
        });
        match (o.deleted, r) {
            (false, None) => problems.add(
                STALE,
                format!(
                    "{}: the backend never got it (wanted PUT {path} with rev {})",
                    o.name(),
                    o.rev
                ),
            ),
            (false, Some(r)) if r.method != "PUT" => problems.add(
                STALE,
                format!(
                    "{}: the backend's last request is {} {path}, wanted PUT with rev {}",
                    o.name(),
                    r.method,
                    o.rev
                ),
            ),
            (false, Some(_)) if rev.as_ref() != Some(&Value::from(o.rev)) => problems.add(
                STALE,
                format!(
                    "{}: the backend's last PUT {path} has rev {}, the last apply said rev {}",
                    o.name(),
                    rev.unwrap_or_default(),
                    o.rev
                ),
            ),
            (true, Some(r)) if r.method != "DELETE" => problems.add(
                STALE,
                format!(
                    "{}: deleted, but the backend's last request is {} {path} (rev {}): \
                     the backend still has it",
                    o.name(),
                    r.method,
                    rev.unwrap_or_default()
                ),
            ),
            _ => {}
        }
    }
}

/// `20261122T032411.123Z` (a run log's stamp) or `2026-11-22T03:24:11Z` (`enacted`) cut to
/// the second, `20261122T032411`, which sorts as time does.
fn to_second(t: &str) -> String {
    t.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(15)
        .collect()
}

/// Assertion 3, the sys dir agrees with the store: every object the store calls `ok` has a
/// `status.json` saying the same, its recipe (`sync.http`) for the value that made it ok, and
/// a newest `runs/*-sync.log` not older than its `enacted` (the log's stamp and `enacted` are
/// one clock reading, `record_runs`) that sent that value. A purged object's folder is not
/// left among the live ones (it moves to `.deleted/`).
fn check_sys_dir(svc: &Service, sys: &Path, world: &World, problems: &mut Problems) {
    let store = store_objects(svc);
    let mut keys: Vec<_> = store.keys().collect();
    keys.sort();
    for k in keys {
        let v = &store[k];
        let st = &v["status"];
        if st["status"] != "ok" {
            continue;
        }
        let name = format!("{}/{}", k.0, k.1);
        let dir = sys.join(&k.0).join(&k.1);
        let status = dir.join("status.json");
        match std::fs::read_to_string(&status) {
            Err(e) => problems.add(
                SYSDIR,
                format!(
                    "{name}: the store says ok at generation {}, but {} is missing ({e})",
                    st["generation"],
                    status.display()
                ),
            ),
            Ok(text) => match serde_json::from_str::<Value>(&text) {
                Err(e) => problems.add(
                    SYSDIR,
                    format!("{name}: {} is not JSON ({e})", status.display()),
                ),
                Ok(file) => {
                    let fs = &file["status"];
                    if fs["status"] != st["status"]
                        || fs["generation"] != st["generation"]
                        || fs["synced_generation"] != st["synced_generation"]
                    {
                        problems.add(
                            SYSDIR,
                            format!(
                                "{name}: {} says status {} generation {} synced_generation {}, \
                                 the store says ok generation {} synced_generation {}",
                                status.display(),
                                fs["status"],
                                fs["generation"],
                                fs["synced_generation"],
                                st["generation"],
                                st["synced_generation"]
                            ),
                        );
                    }
                }
            },
        }
        let runs = dir.join("runs");
        let newest = std::fs::read_dir(&runs).ok().and_then(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with("-sync.log"))
                .max()
        });
        let enacted = st["enacted"].as_str().unwrap_or("");
        let rev = &v["fields"]["rev"];
        let recipe = dir.join("sync.http");
        match std::fs::read_to_string(&recipe) {
            Err(e) => problems.add(
                SYSDIR,
                format!(
                    "{name}: the store says ok, but {} is missing ({e})",
                    recipe.display()
                ),
            ),
            Ok(text) if body_rev(&text, "").as_ref() != Some(rev) => problems.add(
                SYSDIR,
                format!(
                    "{name}: {} sends rev {}, but the run that made it ok sent rev {rev} \
                     (SPEC §8: the recipe is the one last executed)",
                    recipe.display(),
                    body_rev(&text, "").unwrap_or_default()
                ),
            ),
            Ok(_) => {}
        }
        match newest {
            None => problems.add(
                SYSDIR,
                format!(
                    "{name}: the store says ok (enacted {enacted}), but {} has no *-sync.log",
                    runs.display()
                ),
            ),
            Some(log) if to_second(&log) < to_second(enacted) => problems.add(
                SYSDIR,
                format!(
                    "{name}: the newest run log {} is older than enacted {enacted}: the log \
                     of its last run is missing",
                    runs.join(&log).display()
                ),
            ),
            Some(log) => {
                let path = runs.join(&log);
                let sent = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| body_rev(&t, "> "));
                if sent.as_ref() != Some(rev) {
                    problems.add(
                        SYSDIR,
                        format!(
                            "{name}: the newest run log {} sent rev {}, but the store's ok is \
                             for rev {rev}: the log of its last run is missing",
                            path.display(),
                            sent.unwrap_or_default()
                        ),
                    );
                }
            }
        }
    }
    for o in world.objs.iter().filter(|o| o.deleted) {
        let dir = sys.join(o.model).join(&o.key);
        if dir.exists() {
            problems.add(
                SYSDIR,
                format!(
                    "{}: purged from the store, but its folder {} is still there (not moved \
                     to .deleted/)",
                    o.name(),
                    dir.display()
                ),
            );
        }
    }
}

/// `rev` of the last JSON body line (after `prefix`) of a `.http` recipe or a run log.
fn body_rev(text: &str, prefix: &str) -> Option<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .rfind(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .map(|b| b["rev"].clone())
}

/// Assertion 4: no `.<name>.tmp<pid>.<n>` file (src/sysdir.rs `write_atomic`) anywhere in the
/// sys dir, `.deleted/` included.
fn check_temp_files(sys: &Path, problems: &mut Problems) {
    let temp = regex::Regex::new(r"^\..+\.tmp[0-9]+\.[0-9]+$").expect("regex");
    let mut found: Vec<PathBuf> = crate::common::walk(sys)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| temp.is_match(n))
        })
        .collect();
    found.sort();
    for p in found {
        problems.add(TEMP, format!("temporary file left: {}", p.display()));
    }
}

/// Assertion 5: the store's SQLite file is whole.
fn check_integrity(db: &Path, problems: &mut Problems) {
    use rusqlite::{Connection, OpenFlags};
    let conn = match Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY) {
        Ok(c) => c,
        Err(e) => {
            problems.add(INTEGRITY, format!("cannot open {}: {e}", db.display()));
            return;
        }
    };
    let rows: rusqlite::Result<Vec<String>> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect());
    match rows {
        Ok(rows) if rows == ["ok"] => {}
        Ok(rows) => {
            for r in rows {
                problems.add(INTEGRITY, format!("{}: {r}", db.display()));
            }
        }
        Err(e) => problems.add(
            INTEGRITY,
            format!("{}: integrity_check failed: {e}", db.display()),
        ),
    }
}
