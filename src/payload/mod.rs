//! Payloads: what an actuator dispatches. Rendering (templates → a concrete recipe) is kept
//! apart from execution so pretend mode, the sys dir and `replay` share the same recipe.

pub mod playbook;
pub mod rest;
pub mod rest_recipe;
