//! Exposition formats and label-name escaping: OpenMetrics for scrapers that ask for it, else the
//! Prometheus text format; label names outside the legacy set escaped as the scraper negotiated.
//!
//! client_rust writes OpenMetrics only; the text format differs in a few lines that are rewritten
//! here: counters are typed under their `_total` sample name, info metrics are gauges named
//! `_info`, and `# UNIT` and `# EOF` lines do not exist. The rules' outputs are written by
//! [`SnapshotCollector`] in either syntax, label names already escaped (or, for a scraper that
//! allows UTF-8, already quoted) by [`Escaping`]. The scheme follows Prometheus 3
//! (<https://prometheus.io/docs/instrumenting/escaping_schemes/>, prometheus/common
//! `model.EscapeName`): `underscores` unless the `Accept` header asks for another.

use std::borrow::Cow;

use prometheus_client::registry::Registry;

use super::SnapshotCollector;

/// The exposition format of a `/metrics` answer and how it writes label names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    /// The syntax.
    pub exposition: Exposition,
    /// How label names outside `[a-zA-Z_][a-zA-Z0-9_]*` are written.
    pub escaping: Escaping,
}

/// The syntax of a `/metrics` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0.0.
    OpenMetrics,
    /// Prometheus text format: 0.0.4, or 1.0.0 when the escaping is not the default.
    Text,
}

/// How a label name outside Prometheus's legacy set `[a-zA-Z_][a-zA-Z0-9_]*` is written, as the
/// `escaping` parameter of Prometheus 3's `Accept` header names the schemes. A legacy name is
/// written as it is under every scheme. No scheme can write an empty name: it becomes `_`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Escaping {
    /// `underscores`, the default for scrapers that do not negotiate: every character outside
    /// the set becomes `_` (`service.name` → `service_name`, `1st` → `_st`).
    #[default]
    Underscores,
    /// `dots`: `.` becomes `_dot_`, `_` becomes `__`, any other character outside the set `_`.
    Dots,
    /// `values`: a `U__` prefix, `_` doubled, any other character outside the set as its code
    /// point in hex between underscores (`service.name` → `U__service_2e_name`).
    Values,
    /// `allow-utf-8`: the name as it is, quoted (`{"service.name"="api"}`); only for scrapers
    /// that ask for it.
    AllowUtf8,
}

impl Format {
    /// Prometheus text format 0.0.4 with the default escaping.
    pub const TEXT: Format = Format { exposition: Exposition::Text, escaping: Escaping::Underscores };
    /// OpenMetrics 1.0.0 with the default escaping.
    pub const OPENMETRICS: Format = Format { exposition: Exposition::OpenMetrics, escaping: Escaping::Underscores };

    /// Picks the format from an `Accept` header as Prometheus's client libraries do: the clause
    /// with the highest `q` that names OpenMetrics or the text format (or `*/*`) wins, and its
    /// `escaping` parameter, if it names a known scheme, sets the escaping.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let mut best: Option<(f32, Format)> = None;
        for clause in accept.unwrap_or_default().split(',') {
            let mut parts = clause.split(';');
            let exposition = match parts.next().unwrap_or_default().trim().to_ascii_lowercase().as_str() {
                "application/openmetrics-text" => Exposition::OpenMetrics,
                "text/plain" | "text/*" | "*/*" => Exposition::Text,
                _ => continue,
            };
            let (mut q, mut escaping) = (1.0_f32, Escaping::default());
            for param in parts {
                let Some((key, value)) = param.split_once('=') else { continue };
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    // A malformed weight makes the clause unacceptable rather than preferred.
                    "q" => q = value.parse().unwrap_or(0.0),
                    "escaping" => escaping = Escaping::from_param(value).unwrap_or_default(),
                    _ => {}
                }
            }
            if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
                best = Some((q, Format { exposition, escaping }));
            }
        }
        best.map_or(Format::TEXT, |(_, format)| format)
    }

    /// The `Content-Type` of an answer in this format. Version 1.0.0 formats name their escaping,
    /// as the content negotiation spec asks; the text format stays 0.0.4 with the default one.
    pub fn content_type(self) -> &'static str {
        match (self.exposition, self.escaping) {
            (Exposition::Text, Escaping::Underscores) => "text/plain; version=0.0.4; charset=utf-8",
            (Exposition::Text, Escaping::Dots) => "text/plain; version=1.0.0; charset=utf-8; escaping=dots",
            (Exposition::Text, Escaping::Values) => "text/plain; version=1.0.0; charset=utf-8; escaping=values",
            (Exposition::Text, Escaping::AllowUtf8) => "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8",
            (Exposition::OpenMetrics, Escaping::Underscores) => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"
            }
            (Exposition::OpenMetrics, Escaping::Dots) => "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=dots",
            (Exposition::OpenMetrics, Escaping::Values) => "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=values",
            (Exposition::OpenMetrics, Escaping::AllowUtf8) => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8"
            }
        }
    }
}

// === impl Escaping ===

/// Whether `name` is in Prometheus's legacy label-name set `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(crate) fn is_legacy_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty() && !bytes[0].is_ascii_digit() && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

fn is_legacy_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || (!first && c.is_ascii_digit())
}

impl Escaping {
    /// The scheme an `escaping=` parameter names, `None` for an unknown one.
    pub fn from_param(value: &str) -> Option<Self> {
        match value {
            "underscores" => Some(Escaping::Underscores),
            "dots" => Some(Escaping::Dots),
            "values" => Some(Escaping::Values),
            "allow-utf-8" => Some(Escaping::AllowUtf8),
            _ => None,
        }
    }

    /// The name a scraper stores for label `name` under this scheme (before any `exported_`
    /// renaming of collisions). prometheus/common treats `:` as legal here, as in metric names;
    /// it is not legal in a label name, so it is escaped like any other character.
    pub(crate) fn escape(self, name: &str) -> Cow<'_, str> {
        if name.is_empty() {
            return Cow::Borrowed("_");
        }
        if is_legacy_label_name(name) || self == Escaping::AllowUtf8 {
            return Cow::Borrowed(name);
        }
        let mut out = String::with_capacity(name.len() + 8);
        if self == Escaping::Values {
            out.push_str("U__");
        }
        for (i, c) in name.chars().enumerate() {
            match (self, c) {
                (Escaping::Dots | Escaping::Values, '_') => out.push_str("__"),
                (Escaping::Dots, '.') => out.push_str("_dot_"),
                (_, c) if is_legacy_char(c, i == 0) => out.push(c),
                (Escaping::Values, c) => {
                    out.push('_');
                    out.push_str(&format!("{:x}", u32::from(c)));
                    out.push('_');
                }
                _ => out.push('_'),
            }
        }
        Cow::Owned(out)
    }
}

/// `name` as a quoted label name of the UTF-8 syntax: `"service.name"`, with `\`, `"` and a
/// newline escaped by a backslash.
pub(crate) fn quote(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Encodes everything in `registry`, then `snapshot` if given, in `format`.
///
/// # Errors
/// Only if a collector of `registry` fails to write.
pub fn encode(registry: &Registry, snapshot: Option<&SnapshotCollector>, format: Format) -> Result<String, std::fmt::Error> {
    let mut om = String::new();
    prometheus_client::encoding::text::encode_registry(&mut om, registry)?;
    let mut out = match format.exposition {
        Exposition::OpenMetrics => om,
        Exposition::Text => openmetrics_to_text(&om),
    };
    if let Some(snapshot) = snapshot {
        snapshot.write(&mut out, format.exposition, format.escaping);
    }
    if format.exposition == Exposition::OpenMetrics {
        out.push_str("# EOF\n");
    }
    Ok(out)
}

/// Rewrites OpenMetrics as the Prometheus text format.
fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut help: Option<&str> = None;
    // The `_created` sample name of the current counter family, if the family is a counter.
    let mut created: Option<String> = None;
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
            created = None;
            let (name, kind) = match kind {
                "counter" => {
                    created = Some(format!("{name}_created"));
                    (format!("{name}_total"), "counter")
                }
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                other => (name.to_string(), other),
            };
            if let Some(help) = help.take() {
                let text = help.split_once(' ').map_or("", |(_, t)| t);
                out.push_str("# HELP ");
                out.push_str(&name);
                out.push(' ');
                out.push_str(text);
                out.push('\n');
            }
            out.push_str("# TYPE ");
            out.push_str(&name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            continue;
        }
        // OpenMetrics `_created` samples of counters have no place in the text format.
        if let Some(created) = &created {
            if line.strip_prefix(created.as_str()).is_some_and(|rest| rest.starts_with(['{', ' '])) {
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
        struct Case {
            accept: Option<&'static str>,
            expected: Format,
        }
        let utf8 = |exposition| Format { exposition, escaping: Escaping::AllowUtf8 };
        let cases = [
            Case { accept: Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"), expected: Format::OPENMETRICS },
            Case { accept: Some("text/plain"), expected: Format::TEXT },
            Case { accept: None, expected: Format::TEXT },
            Case { accept: Some(""), expected: Format::TEXT },
            Case { accept: Some("application/json"), expected: Format::TEXT },
            // the weights decide, not the order
            Case { accept: Some("text/plain;q=0.9, application/openmetrics-text;q=0.5"), expected: Format::TEXT },
            Case { accept: Some("application/openmetrics-text;q=0,text/plain;q=0.1"), expected: Format::TEXT },
            // Prometheus 3 by default
            Case {
                accept: Some(
                    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,\
                     text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                ),
                expected: utf8(Exposition::OpenMetrics),
            },
            Case { accept: Some("text/plain;version=1.0.0;escaping=allow-utf-8"), expected: utf8(Exposition::Text) },
            Case {
                accept: Some("application/openmetrics-text; version=1.0.0; escaping=dots"),
                expected: Format { exposition: Exposition::OpenMetrics, escaping: Escaping::Dots },
            },
            Case {
                accept: Some("text/plain;version=1.0.0;escaping=values"),
                expected: Format { exposition: Exposition::Text, escaping: Escaping::Values },
            },
            // an unknown scheme (the docs once spelled it `allow-utf8`) is ignored, as client_golang does
            Case { accept: Some("text/plain;version=1.0.0;escaping=allow-utf8"), expected: Format::TEXT },
            // Prometheus 2
            Case {
                accept: Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
                expected: Format::OPENMETRICS,
            },
        ];
        for case in cases {
            assert_eq!(Format::negotiate(case.accept), case.expected, "{:?}", case.accept);
        }
        assert_eq!(Format::TEXT.content_type(), "text/plain; version=0.0.4; charset=utf-8");
    }

    #[test]
    fn escapes_names_as_prometheus_3_does() {
        struct Case {
            name: &'static str,
            underscores: &'static str,
            dots: &'static str,
            values: &'static str,
        }
        let cases = [
            Case { name: "job", underscores: "job", dots: "job", values: "job" },
            Case { name: "http_status", underscores: "http_status", dots: "http_status", values: "http_status" },
            Case { name: "service.name", underscores: "service_name", dots: "service_dot_name", values: "U__service_2e_name" },
            Case {
                name: "http.status_code",
                underscores: "http_status_code",
                dots: "http_dot_status__code",
                values: "U__http_2e_status__code",
            },
            Case { name: "1st", underscores: "_st", dots: "_st", values: "U___31_st" },
            Case { name: "a:b", underscores: "a_b", dots: "a_b", values: "U__a_3a_b" },
            Case { name: "größe", underscores: "gr__e", dots: "gr__e", values: "U__gr_f6__df_e" },
            Case { name: "", underscores: "_", dots: "_", values: "_" },
        ];
        for case in cases {
            assert_eq!(Escaping::Underscores.escape(case.name), case.underscores, "{:?}", case.name);
            assert_eq!(Escaping::Dots.escape(case.name), case.dots, "{:?}", case.name);
            assert_eq!(Escaping::Values.escape(case.name), case.values, "{:?}", case.name);
            assert_eq!(Escaping::AllowUtf8.escape(case.name), if case.name.is_empty() { "_" } else { case.name });
        }
        assert_eq!(quote("a\"b\\c\nd.e"), r#""a\"b\\c\nd.e""#);
    }
}
