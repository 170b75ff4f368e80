//! Loop detection (SPEC §15): the read/write graph of actuators, watchers and policies.
