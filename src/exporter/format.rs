//! Exposition formats: OpenMetrics for scrapers that ask for it, else Prometheus text 0.0.4.
//!
//! client_rust writes OpenMetrics only; the text format differs in a few lines that are rewritten
//! here: counters are typed under their `_total` sample name, info metrics are gauges named
//! `_info`, and `# UNIT` and `# EOF` lines do not exist.

use prometheus_client::registry::Registry;

/// The exposition format of a `/metrics` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0.
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    Text,
}

impl Format {
    /// Picks the format from an `Accept` header, as Prometheus's client libraries do.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Encodes everything in `registry` in `format`.
///
/// # Errors
/// Only if a collector fails to write.
pub fn encode(registry: &Registry, format: Format) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(match format {
        Format::OpenMetrics => out,
        Format::Text => openmetrics_to_text(&out),
    })
}

/// Rewrites OpenMetrics as the Prometheus text format.
fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut help: Option<&str> = None;
    let mut counter: Option<String> = None;
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => {
                    counter = Some(name.to_string());
                    (format!("{name}_total"), "counter")
                }
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                other => (name.to_string(), other),
            };
            if let Some(help) = help.take() {
                let text = help.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        // OpenMetrics `_created` samples of counters have no place in the text format.
        if let Some(name) = &counter {
            if line.starts_with(&format!("{name}_created")) {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_counters_info_and_units() {
        let om = "# HELP x_seconds A duration.\n# TYPE x_seconds gauge\n# UNIT x_seconds seconds\nx_seconds 1.5\n\
                  # HELP c Things.\n# TYPE c counter\nc_total{a=\"b\"} 3\nc_created{a=\"b\"} 1.0\n\
                  # HELP b Build.\n# TYPE b info\nb_info{version=\"1\"} 1\n# EOF\n";
        let text = openmetrics_to_text(om);
        assert_eq!(
            text,
            "# HELP x_seconds A duration.\n# TYPE x_seconds gauge\nx_seconds 1.5\n\
             # HELP c_total Things.\n# TYPE c_total counter\nc_total{a=\"b\"} 3\n\
             # HELP b_info Build.\n# TYPE b_info gauge\nb_info{version=\"1\"} 1\n"
        );
    }

    #[test]
    fn negotiates_like_client_libraries() {
        assert_eq!(Format::negotiate(Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
    }
}
