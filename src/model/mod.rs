//! The data model: schema, dependencies and objects files.

pub mod deps;
pub mod objects;
pub mod schema;

pub use deps::{Dep, ModelGraph};
pub use schema::{Field, FieldType, Model, Schema};
