//! `stepsync retry` and the API's retry (SPEC §5.3): clear the backoff of objects in error
//! so the next pass tries them.

use crate::error::{Error, Result};
use crate::service::Service;
use crate::store::Store;

/// Clears the backoff of `model`'s objects (or the one `key`) that wait on one, and says
/// what it did, a line each.
pub fn retry(
    svc: &Service,
    store: &dyn Store,
    model: &str,
    key: Option<&str>,
) -> Result<Vec<String>> {
    let m = svc.model(model)?;
    // Edited definitions count as the next pass will count them (SPEC §5.1 rule 4): the
    // model's synced objects become suspects, its failed ones lose their backoff.
    let edited =
        crate::store::sync_definitions(store, &crate::definition::Definitions::of(svc).digests())?;
    let mut lines = Vec::new();
    if let Some((_, touched)) = edited.iter().find(|(e, _)| *e == m.name) {
        lines.push(format!(
            "{}: definitions changed; {touched} object(s) are rendered again on the next pass and sent if their recipe changed",
            m.name
        ));
    }
    let mut tx = store.write()?;
    let targets = match key {
        Some(k) => vec![
            tx.get(&m.name, k)?
                .ok_or_else(|| Error::failed(format!("{}/{k} not found", m.name)))?,
        ],
        None => tx.list(Some(&m.name))?,
    };
    for o in targets
        .iter()
        .filter(|o| o.book.next_retry_at.is_some() || o.book.policy_retry_at.is_some())
    {
        crate::store::clear_backoff(&mut *tx, o.id)?;
        lines.push(format!("{}: backoff cleared", o.name()));
    }
    tx.commit()?;
    if lines.is_empty() {
        lines.push(format!("no {} object is waiting on a backoff", m.name));
    }
    Ok(lines)
}
