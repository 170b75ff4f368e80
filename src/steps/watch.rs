//! Watchers at run time (SPEC §11): the outbox the store fills on write, drained by passes.
