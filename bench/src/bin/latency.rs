//! B4: with `stepsync run` (the daemon) running on a synced service directory made by `gen`,
//! apply one changed Site at a time from another process and time how long the first backend
//! request for that Site takes to reach the bench server.
//!
//! latency --stepsync BIN --dir SVC --server URL [--changes 50] [--sites 100] [--tag T]
//!         [--timeout-s 10] [--gap-ms 200] [--samples FILE]
//!
//! Each change rewrites one Site's `login_base` (to a value unique to `--tag` and the change)
//! in a one-object file, then: t0 = just before `stepsync apply` is spawned; t1 = when it has
//! exited (committed); t2 = the server's arrival time of the first request for that Site's
//! path at or after t0. Latency is t2 - t0: it includes the apply process itself. One warm-up
//! change (not counted) first proves the daemon is up. Prints
//! `p50_ms=.. p99_ms=.. max_ms=.. commit_p50_ms=.. apply_p50_ms=..` (nearest-rank
//! percentiles); `--samples` gets one `latency_ms commit_to_request_ms apply_ms` line per change.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "latency: {msg}\nusage: latency --stepsync BIN --dir SVC --server URL [--changes N] [--sites N] [--tag T] [--timeout-s S] [--gap-ms MS] [--samples FILE]"
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

impl Probe {
    /// Applies the change and returns (latency, commit-to-request, apply duration) in ms.
    async fn change(
        &self,
        site: usize,
        value: &str,
        timeout: Duration,
    ) -> Result<(f64, f64, f64), String> {
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
                let ms = |a: u64, b: u64| (a as f64 - b as f64) / 1e6;
                return Ok((ms(t2, t0), ms(t2, t1), ms(t1, t0)));
            }
            if Instant::now() > until {
                return Err(format!(
                    "no request for site-{site} within {timeout:?} of the apply"
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (mut bin, mut dir, mut server) = (None, None, None);
    let (mut changes, mut sites, mut timeout_s, mut gap_ms) = (50usize, 100usize, 10u64, 200u64);
    let mut tag = "t".to_owned();
    let mut samples = None;
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
    let timeout = Duration::from_secs(timeout_s);
    // Warm-up: the daemon may still be starting; give it longer.
    let warm = Duration::from_secs(timeout_s.max(30));
    if let Err(e) = probe.change(0, &format!("warm-{tag}"), warm).await {
        eprintln!("latency: warm-up: {e}");
        std::process::exit(1);
    }
    tokio::time::sleep(Duration::from_millis(gap_ms)).await;
    let mut lat = Vec::new();
    let mut commit = Vec::new();
    let mut apply = Vec::new();
    let mut out = samples.map(|p| std::fs::File::create(p).expect("samples file"));
    for i in 0..changes {
        // Site 0 took the warm-up; spread the changes over the others.
        let site = 1 + i % sites.saturating_sub(1).max(1);
        match probe.change(site, &format!("{tag}-{i}"), timeout).await {
            Ok((l, c, a)) => {
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
    for v in [&mut lat, &mut commit, &mut apply] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    println!(
        "p50_ms={:.1} p99_ms={:.1} max_ms={:.1} commit_p50_ms={:.1} apply_p50_ms={:.1}",
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        lat.last().copied().unwrap_or(f64::NAN),
        pct(&commit, 50.0),
        pct(&apply, 50.0)
    );
}
