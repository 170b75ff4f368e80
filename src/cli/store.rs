//! `stepsync store info | migrate | copy` (SPEC §17): what a store is, its schema brought
//! up to date, and the whole data model copied into another store.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use stepsync::config::StoreUrl;
use stepsync::error::{Error, Result};
use stepsync::service::Service;
use stepsync::store::{Millis, Store};

use super::{print, stdout_err};

/// `STORE`: `sqlite:PATH` or `postgres://...`, the service's own store when not given.
fn url(svc: &Service, given: Option<&str>) -> Result<StoreUrl> {
    match given {
        None => Ok(svc.config.store.clone()),
        Some(s) => StoreUrl::try_from(s.to_owned()).map_err(Error::failed),
    }
}

/// `store info [STORE]`.
pub(crate) fn info(dir: &Path, store: Option<&str>, out: &mut dyn Write) -> Result<ExitCode> {
    let svc = Service::load(dir)?;
    let url = url(&svc, store)?;
    let store = svc.open_store_at(&url)?;
    let counts = store.counts()?;
    let total: usize = counts.by_status.iter().map(|(_, n)| n).sum();
    let mut text = format!(
        "store:     {url}\nkind:      {}\nschema:    version {}\nobjects:   {total}",
        if store.shared() {
            "PostgreSQL (several workers may share it)"
        } else {
            "SQLite (one runner at a time)"
        },
        store.schema_version()?,
    );
    for (status, n) in &counts.by_status {
        text.push_str(&format!(", {n} {status}"));
    }
    text.push_str(&format!("\nrevision:  {}\n", store.revision()?));
    let now = Millis::now();
    match store.lease()? {
        Some(l) if l.expires > now => text.push_str(&format!(
            "lease:     pid {} on {}, since {}\n",
            l.pid,
            l.host,
            l.since.rfc3339()
        )),
        _ => text.push_str("lease:     free\n"),
    }
    for w in store.workers()? {
        text.push_str(&format!(
            "worker:    {} (pid {} on {}), {} claims, heartbeat {}\n",
            w.name,
            w.pid,
            w.host,
            w.claims,
            w.heartbeat.rfc3339()
        ));
    }
    print(out, &text)?;
    Ok(ExitCode::SUCCESS)
}

/// `store migrate [STORE]`: opening a store migrates it; this says to which version.
pub(crate) fn migrate(dir: &Path, store: Option<&str>, out: &mut dyn Write) -> Result<ExitCode> {
    let svc = Service::load(dir)?;
    let url = url(&svc, store)?;
    let store = svc.open_store_at(&url)?;
    print(
        out,
        &format!(
            "{url}: schema version {}, up to date\n",
            store.schema_version()?
        ),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `store copy FROM TO`.
pub(crate) fn copy(dir: &Path, from: &str, to: &str, out: &mut dyn Write) -> Result<ExitCode> {
    let svc = Service::load(dir)?;
    let (from_url, to_url) = (url(&svc, Some(from))?, url(&svc, Some(to))?);
    let source = svc.open_store_at(&from_url)?;
    let target: Box<dyn Store> = svc.open_store_at(&to_url)?;
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("copying {bar:30} {pos}/{len} objects")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let copied = stepsync::store::copy::copy(
        &*source,
        &*target,
        |o| svc.graph.edges(&o.model, &o.fields),
        &|done, total| {
            bar.set_length(u64::try_from(total).unwrap_or(u64::MAX));
            bar.set_position(u64::try_from(done).unwrap_or(u64::MAX));
        },
    );
    bar.finish_and_clear();
    let c = copied?;
    writeln!(
        out,
        "copied {from_url} to {to_url}: {} objects, {} edges, {} outbox entries, {} positions, {} dead letters",
        c.objects, c.edges, c.outbox, c.positions, c.dead_letters
    )
    .map_err(stdout_err)?;
    Ok(ExitCode::SUCCESS)
}
