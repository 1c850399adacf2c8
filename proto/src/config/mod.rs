//! The routing config: endpoints, pools, features and breaker policies.
//!
//! [`load_str`] parses YAML and validates it in one step, so no caller can hold a
//! [`RoutingConfig`] that was parsed but never checked. Every problem is reported with the file,
//! the path inside it (`features.ai_search.hierarchy[2]`) and what is wrong.

pub mod bounds;
mod error;
mod load;
mod model;
mod region;
mod validate;
mod version;
pub mod watch;

pub use error::{ConfigError, ConfigErrors};
pub use load::{load_file, load_str, parse_str};
pub use model::*;
pub use region::region_group;
pub use version::version_of;
