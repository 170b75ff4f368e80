//! stepsync: a goal-oriented synchronizer. Service developers describe a data model and
//! YAML step definitions; the engine keeps every object in step with its backend.
//!
//! The path through the code reads in one direction: [`config`] → [`model`] → [`store`] →
//! [`engine`] → [`payload`] → [`sysdir`], with the operations on objects ([`apply`],
//! [`deletion`]) beside the engine. The library never prints: the commands and all they print
//! are the binary's (`src/cli/`), which reports progress through [`engine::progress`].

pub mod apply;
pub(crate) mod backoff;
pub(crate) mod bookkeeping;
pub(crate) mod boolean;
pub mod config;
pub mod definition;
pub mod deletion;
pub mod diag;
pub(crate) mod duration;
pub mod engine;
pub mod error;
pub mod inventory;
pub mod json_schema;
pub mod model;
pub mod output;
pub mod payload;
pub mod plan;
pub mod playbook;
pub mod retry;
pub mod secrets;
pub mod serve;
pub mod service;
pub mod snapshot;
pub mod stepdef;
pub mod steps;
pub mod store;
pub mod sysdir;
pub mod template;
pub mod validate;
pub mod yaml;

pub use error::{Error, Result};
