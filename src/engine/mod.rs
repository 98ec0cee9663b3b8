//! The evaluation engine: one task per rule group, each evaluating its rules on the group's
//! schedule, and the manager that starts, stops and swaps groups on reload.

mod detect;
mod evaluation;
mod forecast;
mod group;
mod manager;
mod rule_state;
mod shard;
#[cfg(test)]
mod testing;

pub use detect::{fetch_channels, DetectorState};
pub use evaluation::{EvalContext, EvalError, FitPool, Outcome};
pub use forecast::ForecastState;
pub use group::{slot_offset, Context};
pub use manager::RuleManager;
pub use rule_state::RuleState;
pub use shard::{Shard, ShardError};
