//! The typed, checked form of a stepdef: what the engine, `validate` and the payloads use.

use std::num::NonZeroU32;
use std::path::PathBuf;

use crate::diag::Origin;
use crate::duration::Dur;
use crate::template::{TValue, Tmpl};

/// One actuator: how objects of `model` reach the backend.
#[derive(Debug)]
pub(crate) struct Actuator {
    pub(crate) model: String,
    pub(crate) attributes: Vec<(String, TValue)>,
    pub(crate) sync: Option<Payload>,
    pub(crate) delete: Option<Payload>,
    pub(crate) feedback: Vec<(String, Feedback)>,
    pub(crate) defer_when: Option<Tmpl>,
    pub(crate) concurrency: Option<NonZeroU32>,
    pub(crate) resync: Option<Dur>,
    pub(crate) file: PathBuf,
}

#[derive(Debug)]
pub(crate) struct Payload {
    pub(crate) kind: PayloadKind,
    /// Extra attributes for this payload only.
    pub(crate) vars: Vec<(String, TValue)>,
}

// Parsed once per stepdef and never copied, so the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum PayloadKind {
    Rest(Rest),
    Playbook(PlaybookRef),
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Rest {
    /// One request, sent on every run.
    Simple(Request),
    /// Observe first, then create, update or nothing.
    Delta {
        observe: Request,
        absent: Vec<u16>,
        create: Option<Request>,
        update: Request,
        /// A JSONPath selecting the part of the observed body compared with the desired body.
        compare: Option<String>,
    },
}

#[derive(Debug)]
pub struct Request {
    pub method: reqwest::Method,
    pub url: Tmpl,
    pub headers: Vec<(String, Tmpl)>,
    pub auth: Option<Auth>,
    pub body: Option<TValue>,
    pub timeout: Option<Dur>,
    pub expect: Option<Vec<u16>>,
}

#[derive(Debug)]
pub enum Auth {
    Bearer(Tmpl),
    Basic { user: Tmpl, password: Tmpl },
}

#[derive(Debug)]
pub(crate) struct PlaybookRef {
    /// Relative to `playbooks/`.
    pub(crate) playbook: PathBuf,
    pub(crate) hosts: Option<Tmpl>,
    /// Where the stepdef names the playbook, for "does not exist".
    pub(crate) origin: Origin,
}

#[derive(Debug)]
pub(crate) enum Feedback {
    Template(Tmpl),
    JsonPath(String),
}
