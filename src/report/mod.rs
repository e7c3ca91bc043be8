//! Renderers of the report model ([`crate::model`]): text and Prometheus metrics
//! (JSON is the model's own serde shape).

pub mod prometheus;
pub mod text;

pub use crate::model::report::*;
