//! NAB's ground truth: anomaly windows per data file, read from `combined_windows.json`.
//!
//! Windows keep the order of the file: NAB opens them in that order while it walks the rows.
//! Whether an edge matches a row is checked when a file is scored, not here.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDateTime;

use super::Error;

/// A labelled anomaly window: the rows from the one at `start` to the one at `end`, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Timestamp of the window's first row.
    pub start: NaiveDateTime,
    /// Timestamp of the window's last row.
    pub end: NaiveDateTime,
}

/// Anomaly windows per data file, keyed like NAB: `category/file.csv`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels {
    files: BTreeMap<String, Vec<Window>>,
}

impl Labels {
    /// Parses NAB's `{"category/file.csv": [["2014-04-10 07:15:00.000000", "..."], ...]}`.
    ///
    /// # Errors
    /// [`Error::Json`] if the text is not of that shape, [`Error::Timestamp`] for a bad edge.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        let raw: BTreeMap<String, Vec<(String, String)>> = serde_json::from_str(text).map_err(Error::Json)?;
        let mut files = BTreeMap::new();
        for (key, windows) in raw {
            let edge =
                |text: &str| parse_timestamp(text).map_err(|source| Error::Timestamp { key: key.clone(), text: text.to_string(), source });
            let windows = windows
                .iter()
                .map(|(start, end)| Ok(Window { start: edge(start)?, end: edge(end)? }))
                .collect::<Result<Vec<_>, Error>>()?;
            files.insert(key, windows);
        }
        Ok(Labels { files })
    }

    /// Reads and parses a label file (see [`Labels::from_json`]).
    ///
    /// # Errors
    /// [`Error::Read`] if the file cannot be read, else as [`Labels::from_json`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
        Self::from_json(&text)
    }

    /// The windows of a data file, or `None` if it has no entry.
    pub fn windows(&self, key: &str) -> Option<&[Window]> {
        self.files.get(key).map(Vec::as_slice)
    }

    /// Every labelled file with its windows, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[Window])> {
        self.files.iter().map(|(key, windows)| (key.as_str(), windows.as_slice()))
    }
}

impl FromIterator<(String, Vec<Window>)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, Vec<Window>)>>(iter: I) -> Self {
        Labels { files: iter.into_iter().collect() }
    }
}

/// Parses a NAB timestamp, `YYYY-MM-DD HH:MM:SS` with optional fractional seconds: the form of
/// both the data files and the labels.
///
/// # Errors
/// When the text is not of that form.
pub fn parse_timestamp(text: &str) -> Result<NaiveDateTime, chrono::ParseError> {
    NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nab_windows_in_file_order() {
        let text = r#"{
            "realKnownCause/nyc_taxi.csv": [
                ["2014-11-01 19:00:00.000000", "2014-11-02 12:30:00.000000"],
                ["2014-10-30 15:30:00", "2014-11-01 22:30:00.000000"]
            ],
            "artificialNoAnomaly/art_flatline.csv": []
        }"#;
        let labels = Labels::from_json(text).unwrap();
        let t = |s| parse_timestamp(s).unwrap();
        assert_eq!(
            labels.windows("realKnownCause/nyc_taxi.csv").unwrap(),
            [
                Window { start: t("2014-11-01 19:00:00"), end: t("2014-11-02 12:30:00") },
                Window { start: t("2014-10-30 15:30:00"), end: t("2014-11-01 22:30:00") },
            ]
        );
        assert_eq!(labels.windows("artificialNoAnomaly/art_flatline.csv"), Some(&[][..]));
        assert_eq!(labels.windows("missing.csv"), None);
        assert_eq!(labels.iter().count(), 2);
    }

    #[test]
    fn rejects_bad_labels() {
        assert!(matches!(Labels::from_json("[]"), Err(Error::Json(_))));
        let err = Labels::from_json(r#"{"a/b.csv": [["2014-13-01 00:00:00", "x"]]}"#).unwrap_err();
        assert!(matches!(err, Error::Timestamp { ref key, .. } if key == "a/b.csv"), "{err}");
    }
}
