//! Model policies at run time (SPEC §12).
