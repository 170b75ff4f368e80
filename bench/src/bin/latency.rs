//! B4: with `stepsync run` (the daemon) running on a synced service directory made by `gen`,
//! apply one changed Site at a time from another process and time how long the first backend
//! request for that Site takes to reach the bench server.
//!
//! latency --stepsync BIN --dir SVC --server URL [--changes 50] [--sites 100] [--tag T]
//!         [--timeout-s 10] [--gap-ms 200] [--samples FILE] [--hang-site K [--hang-s 10]]
//!
//! Each change rewrites one Site's `login_base` (to a value unique to `--tag` and the change)
//! in a one-object file, then: t0 = just before `stepsync apply` is spawned; t1 = when it has
//! exited (committed); t2 = the server's arrival time of the first request for that Site's
//! path at or after t0. Latency is t2 - t0: it includes the apply process itself. One warm-up
//! change (not counted) first proves the daemon is up. Prints
//! `p50_ms=.. p99_ms=.. max_ms=.. commit_p50_ms=.. apply_p50_ms=..` (nearest-rank
//! percentiles); `--samples` gets one `latency_ms commit_to_request_ms apply_ms` line per change.
//!
//! `--hang-site K` measures the same with one unrelated request hung the whole time: after the
//! warm-up it asks the server to hold every request for `site-K` for `--hang-s` seconds
//! (`/_bench/hold`), applies a change to `site-K`, and waits until that request has reached
//! the server and is held. Each measured change is then applied while it hangs; when less than
//! `HANG_GUARD` of the hold is left, the tool waits for the held request to be answered and
//! its outcome recorded, and hangs a new one the same way (untimed, between two measured
//! changes), so one request is held whenever a measured change is. The measured changes skip `site-K`. The output line then also has
//! `hangs=N` (held requests started) and `hung_during=M` (measured changes whose apply and
//! request both fell inside a hold, from the server's own arrival times; M = `--changes` when
//! every one did).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// With `--hang-site`: a new hung request is started before a measured change when less than
/// this is left of the current one.
const HANG_GUARD: Duration = Duration::from_millis(1500);

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "latency: {msg}\nusage: latency --stepsync BIN --dir SVC --server URL [--changes N] [--sites N] [--tag T] [--timeout-s S] [--gap-ms MS] [--samples FILE] [--hang-site K [--hang-s S]]"
    );
    std::process::exit(2);
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

struct Probe {
    bin: PathBuf,
    dir: PathBuf,
    server: String,
    client: reqwest::Client,
}

/// The hung request's window on the server's clock (Unix ns).
#[derive(Clone, Copy)]
struct Hold {
    from: u64,
    until: u64,
}

impl Probe {
    /// Applies the change and returns (latency, commit-to-request, apply duration) in ms.
    async fn change(
        &self,
        site: usize,
        value: &str,
        timeout: Duration,
    ) -> Result<(f64, f64, f64), String> {
        self.change_at(site, value, timeout)
            .await
            .map(|(t0, t1, t2)| {
                let ms = |a: u64, b: u64| (a as f64 - b as f64) / 1e6;
                (ms(t2, t0), ms(t2, t1), ms(t1, t0))
            })
    }

    /// Applies the change and returns (t0, t1, t2): before the apply, after it, and the
    /// server's arrival time of the first request for the Site after t0 (Unix ns).
    async fn change_at(
        &self,
        site: usize,
        value: &str,
        timeout: Duration,
    ) -> Result<(u64, u64, u64), String> {
        let file = self.dir.join(".bench-change.yaml");
        std::fs::write(
            &file,
            format!("Site:\n  - {{name: site-{site}, login_base: {value}}}\n"),
        )
        .map_err(|e| format!("{}: {e}", file.display()))?;
        let t0 = now_ns();
        let status = tokio::process::Command::new(&self.bin)
            .arg("-C")
            .arg(&self.dir)
            .args(["-q", "apply", "-f"])
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        let t1 = now_ns();
        if !status.success() {
            return Err(format!("apply exited with {status}"));
        }
        let url = format!(
            "{}/_bench/first?path=/sites/site-{site}&after={t0}",
            self.server
        );
        let until = Instant::now() + timeout;
        loop {
            let resp = self
                .client
                .get(&url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if resp.status().is_success() {
                let t2: u64 = resp
                    .text()
                    .await
                    .map_err(|e| e.to_string())?
                    .trim()
                    .parse()
                    .map_err(|e| format!("bad answer from the server: {e}"))?;
                return Ok((t0, t1, t2));
            }
            if Instant::now() > until {
                return Err(format!(
                    "no request for site-{site} within {timeout:?} of the apply"
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Sets the server's hold for `site`'s path (`ms` 0: removes it, answering what it holds).
    async fn set_hold(&self, site: usize, ms: u64) -> Result<(), String> {
        let url = format!(
            "{}/_bench/hold?path=/sites/site-{site}&ms={ms}",
            self.server
        );
        let resp = self
            .client
            .post(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("{url}: {}", resp.status()))
        }
    }

    /// The server's count of requests held right now.
    async fn holding(&self) -> Result<u64, String> {
        let url = format!("{}/_bench/stats", self.server);
        let text = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .text()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{url}: {e}: {text}"))?;
        v["holding"]
            .as_u64()
            .ok_or_else(|| format!("{url}: no `holding` in {v}"))
    }

    /// `site`'s (generation, synced_generation), from `stepsync get`.
    async fn generations(&self, site: usize) -> Result<(u64, u64), String> {
        let out = tokio::process::Command::new(&self.bin)
            .arg("-C")
            .arg(&self.dir)
            .args(["get", "Site", &format!("site-{site}"), "-o", "json"])
            .stderr(std::process::Stdio::inherit())
            .output()
            .await
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        if !out.status.success() {
            return Err(format!("get Site site-{site} exited with {}", out.status));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("get Site site-{site}: {e}"))?;
        let g = |k: &str| {
            v["status"][k]
                .as_u64()
                .ok_or_else(|| format!("get Site site-{site}: no status.{k}"))
        };
        Ok((g("generation")?, g("synced_generation")?))
    }

    /// Starts a hung request: a change of `site`, whose request the server holds for `hold`.
    /// Waits first until no request is held any more (the previous one was answered) and the
    /// daemon has recorded that run (`synced_generation` = `generation`): a change applied
    /// while the run is still in flight is not what this measures (and the daemon at b1009d3
    /// loses it: the run's outcome sets status `ok`, and the change is never sent).
    async fn hang(
        &self,
        site: usize,
        value: &str,
        hold: Duration,
        timeout: Duration,
    ) -> Result<Hold, String> {
        let until = Instant::now() + timeout + hold;
        while self.holding().await? > 0 {
            if Instant::now() > until {
                return Err("the previous hung request was never answered".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        loop {
            let (g, synced) = self.generations(site).await?;
            if synced >= g {
                break;
            }
            if Instant::now() > until {
                return Err(format!(
                    "site-{site} still at synced_generation {synced} < generation {g}: the daemon did not record the previous hung run"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (_, _, from) = self.change_at(site, value, timeout).await?;
        Ok(Hold {
            from,
            until: from + hold.as_nanos() as u64,
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (mut bin, mut dir, mut server) = (None, None, None);
    let (mut changes, mut sites, mut timeout_s, mut gap_ms) = (50usize, 100usize, 10u64, 200u64);
    let mut tag = "t".to_owned();
    let mut samples = None;
    let (mut hang_site, mut hang_s) = (None, 10u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args
            .next()
            .unwrap_or_else(|| usage(&format!("{a} needs a value")));
        let num = |v: &str| {
            v.parse::<u64>()
                .unwrap_or_else(|_| usage(&format!("bad {a}")))
        };
        match a.as_str() {
            "--stepsync" => bin = Some(PathBuf::from(v)),
            "--dir" => dir = Some(PathBuf::from(v)),
            "--server" => server = Some(v.trim_end_matches('/').to_owned()),
            "--changes" => changes = num(&v) as usize,
            "--sites" => sites = num(&v).max(1) as usize,
            "--tag" => tag = v,
            "--timeout-s" => timeout_s = num(&v),
            "--gap-ms" => gap_ms = num(&v),
            "--samples" => samples = Some(PathBuf::from(v)),
            "--hang-site" => hang_site = Some(num(&v) as usize),
            "--hang-s" => hang_s = num(&v).max(1),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let dir = std::path::absolute(dir.unwrap_or_else(|| usage("--dir is required"))).expect("dir");
    let probe = Probe {
        bin: bin.unwrap_or_else(|| usage("--stepsync is required")),
        dir,
        server: server.unwrap_or_else(|| usage("--server is required")),
        client: reqwest::Client::new(),
    };
    if let Some(k) = hang_site
        && (k == 0 || k >= sites || sites < 3)
    {
        usage("--hang-site must be a Site other than site-0 below --sites (at least 3)");
    }
    let timeout = Duration::from_secs(timeout_s);
    // Warm-up: the daemon may still be starting; give it longer.
    let warm = Duration::from_secs(timeout_s.max(30));
    if let Err(e) = probe.change(0, &format!("warm-{tag}"), warm).await {
        eprintln!("latency: warm-up: {e}");
        std::process::exit(1);
    }
    tokio::time::sleep(Duration::from_millis(gap_ms)).await;
    let hold_len = Duration::from_secs(hang_s);
    let mut holds: Vec<Hold> = Vec::new();
    if let Some(k) = hang_site {
        let started = async {
            probe.set_hold(k, hold_len.as_millis() as u64).await?;
            probe
                .hang(k, &format!("hang-{tag}-0"), hold_len, timeout)
                .await
        };
        match started.await {
            Ok(h) => holds.push(h),
            Err(e) => {
                eprintln!("latency: starting the hung request: {e}");
                std::process::exit(1);
            }
        }
    }
    // Site 0 took the warm-up and the hung site is not changed; spread the changes over the
    // others.
    let targets: Vec<usize> = (1..sites.max(2))
        .filter(|&s| Some(s) != hang_site)
        .collect();
    let mut hung_during = 0usize;
    let mut lat = Vec::new();
    let mut commit = Vec::new();
    let mut apply = Vec::new();
    let mut out = samples.map(|p| std::fs::File::create(p).expect("samples file"));
    for i in 0..changes {
        let site = targets[i % targets.len()];
        if let (Some(k), Some(h)) = (hang_site, holds.last().copied())
            && now_ns() + HANG_GUARD.as_nanos() as u64 >= h.until
        {
            let n = holds.len();
            match probe
                .hang(k, &format!("hang-{tag}-{n}"), hold_len, timeout)
                .await
            {
                Ok(h) => holds.push(h),
                Err(e) => {
                    eprintln!("latency: hung request {n}: {e}");
                    std::process::exit(1);
                }
            }
        }
        match probe.change_at(site, &format!("{tag}-{i}"), timeout).await {
            Ok((t0, t1, t2)) => {
                if holds.iter().any(|h| h.from <= t0 && t2 <= h.until) {
                    hung_during += 1;
                }
                let ms = |a: u64, b: u64| (a as f64 - b as f64) / 1e6;
                let (l, c, a) = (ms(t2, t0), ms(t2, t1), ms(t1, t0));
                if let Some(f) = out.as_mut() {
                    writeln!(f, "{l:.2} {c:.2} {a:.2}").ok();
                }
                lat.push(l);
                commit.push(c);
                apply.push(a);
            }
            Err(e) => {
                eprintln!("latency: change {i}: {e}");
                std::process::exit(1);
            }
        }
        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
    }
    if let Some(k) = hang_site
        && let Err(e) = probe.set_hold(k, 0).await
    {
        eprintln!("latency: removing the hold: {e}");
    }
    for v in [&mut lat, &mut commit, &mut apply] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    let hang = match hang_site {
        Some(_) => format!(" hangs={} hung_during={hung_during}", holds.len()),
        None => String::new(),
    };
    println!(
        "p50_ms={:.1} p99_ms={:.1} max_ms={:.1} commit_p50_ms={:.1} apply_p50_ms={:.1}{hang}",
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        lat.last().copied().unwrap_or(f64::NAN),
        pct(&commit, 50.0),
        pct(&apply, 50.0)
    );
}
