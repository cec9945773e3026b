//! Scenario files: parse YAML into a [`Scenario`] that is valid by
//! construction, or fail with an error naming file, line and key.

mod model;
mod parse;
pub mod schema;

pub use model::*;
pub use parse::{ScenarioError, check_scenario, load, parse_str};
