//! Validation problems, located like `promtool check rules` reports them.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a config or rule file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    file: PathBuf,
    line: Option<(u64, u64)>,
    group: Option<String>,
    rule: Option<(usize, String)>,
    msg: String,
}

impl Problem {
    /// A problem with the file as a whole (e.g. it cannot be read).
    pub fn file(path: &Path, msg: impl Into<String>) -> Self {
        Self { file: path.to_path_buf(), line: None, group: None, rule: None, msg: msg.into() }
    }

    /// A problem at a line and column; complete it with `group`, `rule` and `msg`.
    pub(crate) fn at(path: &Path, (line, col): (u64, u64)) -> Self {
        let line = (line > 0).then_some((line, col));
        Self { line, ..Self::file(path, String::new()) }
    }

    /// A YAML syntax or schema error, at the location serde-saphyr gives.
    pub(crate) fn yaml(path: &Path, err: &serde_saphyr::Error) -> Self {
        let line = err.location().map(|loc| (loc.line(), loc.column())).unwrap_or((0, 0));
        // The rendered error carries a source snippet; one line is what a checker prints.
        let text = err.without_snippet().to_string();
        let msg = text.lines().next().unwrap_or("invalid YAML").trim().to_string();
        Self::at(path, line).msg(msg)
    }

    pub(crate) fn group(mut self, name: &str) -> Self {
        self.group = Some(name.to_string());
        self
    }

    pub(crate) fn rule(mut self, index: usize, name: &str) -> Self {
        self.rule = Some((index, name.to_string()));
        self
    }

    pub(crate) fn msg(mut self, msg: impl Into<String>) -> Self {
        self.msg = msg.into();
        self
    }

    /// The file the problem is in.
    pub fn path(&self) -> &Path {
        &self.file
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.line {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        if let Some(group) = &self.group {
            write!(f, "group {group:?}, ")?;
        }
        if let Some((index, name)) = &self.rule {
            write!(f, "rule {index}, {name:?}: ")?;
        }
        f.write_str(&self.msg)
    }
}

/// Every problem found while validating one or more files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub(crate) fn one(problem: Problem) -> Self {
        Self(vec![problem])
    }

    pub(crate) fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }

    pub(crate) fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    /// `Ok(value)` when nothing was found.
    pub(crate) fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// The problems, in the order found.
    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}
