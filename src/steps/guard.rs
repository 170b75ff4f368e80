//! The run-time loop guard (SPEC §15): an object actuated more than 10 times within a minute
//! with no outside change is stopped in error.

#[derive(Default)]
pub(crate) struct Guard;
