//! What `/metrics` serves: the rules' outputs and status (per rule an atomically swapped entry,
//! see [`Exporter`]), pulsewatch's own metrics, and process metrics.
//!
//! Evaluations write (`Exporter::record`, which replaces only the evaluated rule's entry); scrapes
//! only read the current entries and encode them, so a scrape never waits on or triggers model
//! work. Label names from upstream are escaped as the scrape negotiated ([`Format`], [`Escaping`]).

mod collector;
mod format;
mod metrics;
mod process;
mod snapshot;

pub use collector::{output_samples, OutputSample, SnapshotCollector};
pub use format::{encode, Escaping, Exposition, Format};
pub use metrics::Metrics;
pub use process::ProcessCollector;
pub use snapshot::{Exporter, GroupInfo, Health, Point, RuleEntry, RuleId, RuleStatus, SeriesOutput, Snapshot, Values};
