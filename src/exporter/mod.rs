//! What `/metrics` serves: the rules' outputs and status in an atomically swapped [`Snapshot`],
//! pulsewatch's own metrics, and process metrics.
//!
//! Evaluations write (`Exporter::record`); scrapes only read the current snapshot and encode it,
//! so a scrape never waits on or triggers model work.

mod collector;
mod format;
mod metrics;
mod process;
mod snapshot;

pub use collector::SnapshotCollector;
pub use format::{encode, Format};
pub use metrics::Metrics;
pub use process::ProcessCollector;
pub use snapshot::{Exporter, GroupInfo, Health, Point, RuleEntry, RuleId, RuleStatus, SeriesOutput, Snapshot, Values};
