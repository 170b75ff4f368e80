//! The actors besides actuators (SPEC §1): watchers (§11) and model policies (§12) at run
//! time, and the read/write graph that finds loops between all of them (§15).

pub(crate) mod guard;
pub mod loops;
pub(crate) mod police;
pub(crate) mod watch;
