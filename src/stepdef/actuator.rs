//! The typed, checked form of a stepdef: what the engine, `validate` and the payloads use.

use std::num::NonZeroU32;
use std::path::PathBuf;

use crate::diag::Origin;
use crate::duration::Dur;
use crate::template::{TValue, Tmpl};

/// One actuator: how objects of `model` reach the backend.
#[derive(Debug)]
pub struct Actuator {
    pub model: String,
    pub attributes: Vec<(String, TValue)>,
    pub sync: Option<Payload>,
    pub delete: Option<Payload>,
    pub feedback: Vec<(String, Feedback)>,
    pub defer_when: Option<Tmpl>,
    pub concurrency: Option<NonZeroU32>,
    pub resync: Option<Dur>,
    pub file: PathBuf,
}

#[derive(Debug)]
pub struct Payload {
    pub kind: PayloadKind,
    /// Extra attributes for this payload only.
    pub vars: Vec<(String, TValue)>,
}

// Parsed once per stepdef and never copied, so the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum PayloadKind {
    Rest(Rest),
    Playbook(PlaybookRef),
}

impl PayloadKind {
    pub fn name(&self) -> &'static str {
        match self {
            PayloadKind::Rest(_) => "rest",
            PayloadKind::Playbook(_) => "playbook",
        }
    }
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
pub struct PlaybookRef {
    /// Relative to `playbooks/`.
    pub playbook: PathBuf,
    pub hosts: Option<Tmpl>,
    /// Where the stepdef names the playbook, for "does not exist".
    pub origin: Origin,
}

#[derive(Debug)]
pub enum Feedback {
    Template(Tmpl),
    JsonPath(String),
}
