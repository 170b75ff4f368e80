//! `serve [--listen ADDR]`: the daemon plus the HTTP API and metrics (SPEC §16), in one
//! process holding one lease.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use stepsync::engine::Engine;
use stepsync::engine::daemon::runtime;
use stepsync::error::Result;
use stepsync::serve::{Metrics, bind};
use stepsync::service::Service;

use super::stdout_err;

/// Runs until SIGINT/SIGTERM; prints `serve: listening on http://ADDR` once bound (the
/// address a `--listen 127.0.0.1:0` got, for scripts and tests).
pub(crate) fn serve(dir: &Path, listen: Option<&str>, out: &mut dyn Write) -> Result<ExitCode> {
    let svc = Service::load(dir)?;
    let metrics = Arc::new(Metrics::default());
    let engine = Arc::new(Engine::open(svc, None)?.with_progress(metrics.clone()));
    let reload = || Ok(Engine::open(Service::load(dir)?, None)?.with_progress(metrics.clone()));
    let rt = runtime()?;
    // The HTTP side on a runtime of its own, at a lower priority than the daemon's.
    let http_rt = stepsync::serve::runtime()?;
    // The API reads through a store handle of its own (the daemon's stays its own).
    let listener = http_rt.block_on(bind(Service::load(dir)?, listen, metrics.clone()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| stepsync::error::Error::failed(format!("serve: {e}")))?;
    writeln!(out, "serve: listening on http://{addr}").map_err(stdout_err)?;
    out.flush().map_err(stdout_err)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = http_rt.spawn(listener.serve(stop_rx));
    let ran = rt.block_on(engine.run_daemon(&reload));
    let _ = stop_tx.send(true);
    match http_rt.block_on(server) {
        Ok(Err(e)) => tracing::warn!(error = %e, "the HTTP server failed"),
        Err(e) => tracing::warn!(error = %e, "the HTTP server stopped"),
        Ok(Ok(())) => {}
    }
    ran?;
    Ok(ExitCode::SUCCESS)
}
