//! Standard `process_*` metrics (CPU, memory, file descriptors, start time) read from `/proc`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// Reads this process's stats on each scrape (a few small `/proc` reads).
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(me) = procfs::process::Process::myself() else { return Ok(()) };
        let Ok(stat) = me.stat() else { return Ok(()) };
        let ticks = procfs::ticks_per_second() as f64;
        let page = procfs::page_size() as f64;
        let cpu = (stat.utime + stat.stime) as f64 / ticks;
        let start = procfs::boot_time_secs().map(|boot| boot as f64 + stat.starttime as f64 / ticks).ok();
        let fds = me.fd_count().ok();
        let max_fds = me.limits().ok().and_then(|l| match l.max_open_files.soft_limit {
            procfs::process::LimitValue::Value(v) => Some(v as f64),
            procfs::process::LimitValue::Unlimited => None,
        });
        let mut gauge = |name: &str, help: &str, unit: Option<&Unit>, v: Option<f64>| -> Result<(), std::fmt::Error> {
            if let Some(v) = v {
                ConstGauge::new(v).encode(encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?)?;
            }
            Ok(())
        };
        gauge("process_resident_memory", "Resident memory size", Some(&Unit::Bytes), Some(stat.rss as f64 * page))?;
        gauge("process_virtual_memory", "Virtual memory size", Some(&Unit::Bytes), Some(stat.vsize as f64))?;
        gauge("process_open_fds", "Number of open file descriptors", None, fds.map(|n| n as f64))?;
        gauge("process_max_fds", "Maximum number of open file descriptors", None, max_fds)?;
        gauge("process_start_time", "Start time of the process since the Unix epoch", Some(&Unit::Seconds), start)?;
        let counter =
            encoder.encode_descriptor("process_cpu", "Total user and system CPU time spent", Some(&Unit::Seconds), MetricType::Counter)?;
        ConstCounter::new(cpu).encode(counter)
    }
}
