//! Configuration: the main file (`--config.file`) and the rule files it names.
//!
//! Everything is validated before anything starts: a file with problems yields all of them, each
//! located, and nothing of it is used. Rule-file paths and globs are relative to the config
//! file's directory, as in Prometheus.

mod duration;
mod error;
mod model;
mod remote_write;
pub mod rules;
mod schedule;
mod source;

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use duration::{Duration, DurationError};
pub use error::{Problem, Problems};
pub use model::{Combine, ModelError, ModelSpec, Seasonality};
pub use remote_write::{QueueConfig, RemoteWriteConfig};
pub use rules::{Anomaly, Channel, DetectorSpec, Direction, Forecast, GroupKey, Rule, RuleGroup, RuleKind};
pub use schedule::{CronError, CronSchedule, Schedule};
pub use source::{redact_url, BasicAuth, Secret, SecretError, SourceConfig, TlsConfig};

/// The main configuration file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Defaults for every group and rule.
    #[serde(default)]
    pub global: Defaults,
    /// The Prometheus-compatible server to query.
    pub source: SourceConfig,
    /// Rule files: paths or globs, relative to this file's directory.
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// Endpoints that receive every output series after each evaluation.
    #[serde(default)]
    pub remote_write: Vec<RemoteWriteConfig>,
}

/// Global defaults (`global:`); a rule or group setting overrides them.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// How often a group without `interval` or `cron` evaluates.
    pub evaluation_interval: Duration,
    /// Resolution of history queries.
    pub step: Duration,
    /// Training window.
    pub history: Duration,
    /// Full refit cadence.
    pub refit: Duration,
    /// Prediction-interval level of the band.
    pub band: f64,
    /// The model of rules that name none.
    pub model: ModelSpec,
    /// Outputs not refreshed for this long are removed (at least twice the group interval).
    pub staleness: Duration,
    /// Most model fits running at once (0: one per CPU).
    pub max_concurrent_fits: usize,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            evaluation_interval: Duration::from_secs(60),
            step: Duration::from_secs(60),
            history: Duration::from_secs(7 * 86400),
            refit: Duration::from_secs(6 * 3600),
            band: 0.999,
            model: ModelSpec::default(),
            staleness: Duration::from_secs(300),
            max_concurrent_fits: 0,
        }
    }
}

/// A config with its rule files, all validated.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The main config.
    pub config: Config,
    /// The rule files the globs matched, sorted.
    pub rule_files: Vec<PathBuf>,
    /// Every group of every rule file.
    pub groups: Vec<RuleGroup>,
    /// A hash of the text of the config and of every rule file, to tell a change from a save
    /// that changed nothing (in-process only: not stable across runs).
    pub digest: u64,
}

/// Most fits at once: far beyond any machine's cores (each fit takes one), and within what a
/// semaphore can count.
const MAX_CONCURRENT_FITS: usize = 4096;

/// Reads the main config file.
///
/// # Errors
/// Every problem with the file, located.
pub fn load_config(path: &Path) -> Result<Config, Problems> {
    parse_config(path, &read_config(path)?)
}

fn read_config(path: &Path) -> Result<String, Problems> {
    crate::files::read_to_string(path, crate::files::MAX_CONFIG_BYTES)
        .map_err(|err| Problems::one(Problem::file(path, format!("reading config file: {err}"))))
}

fn parse_config(path: &Path, text: &str) -> Result<Config, Problems> {
    let config: Config = serde_saphyr::from_str(text).map_err(|err| Problems::one(Problem::yaml(path, &err)))?;
    let mut problems = Problems::default();
    let here = |msg: String| Problem::file(path, msg);
    if config.global.max_concurrent_fits > MAX_CONCURRENT_FITS {
        problems.push(here(format!("global max_concurrent_fits {} is more than {MAX_CONCURRENT_FITS}", config.global.max_concurrent_fits)));
    }
    if config.global.evaluation_interval.get() < std::time::Duration::from_secs(1) {
        problems.push(here(format!("global evaluation_interval {} is shorter than 1s", config.global.evaluation_interval)));
    }
    if !(config.global.band > 0.0 && config.global.band < 1.0) {
        problems.push(here(format!("global band {} must be between 0 and 1", config.global.band)));
    }
    if let Err(err) = reqwest::Url::parse(&config.source.url) {
        problems.push(here(format!("source url {:?}: {err}", source::redact_url(&config.source.url))));
    }
    let mut names = std::collections::HashSet::new();
    for rw in &config.remote_write {
        for problem in rw.problems() {
            problems.push(here(problem));
        }
        if !names.insert(rw.remote_name()) {
            problems.push(here(format!("remote_write {} is listed twice; give one a `name`", rw.remote_name())));
        }
    }
    for pattern in &config.rule_files {
        if let Err(err) = glob::Pattern::new(pattern) {
            problems.push(here(format!("rule_files pattern {pattern:?}: {err}")));
        }
    }
    problems.into_result(config)
}

/// Reads the main config and every rule file it names.
///
/// # Errors
/// Every problem in the config and in all rule files.
pub fn load(path: &Path) -> Result<Loaded, Problems> {
    let text = read_config(path)?;
    let config = parse_config(path, &text)?;
    let rule_files = expand_rule_files(path, &config.rule_files)?;
    let mut digest = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut digest);
    let groups = read_rule_files(&rule_files, &config.global, &mut digest)?;
    Ok(Loaded { config, rule_files, groups, digest: digest.finish() })
}

/// Validates several rule files; problems from all of them are collected.
///
/// # Errors
/// Every problem in every file.
pub fn load_rule_files(files: &[PathBuf], defaults: &Defaults) -> Result<Vec<RuleGroup>, Problems> {
    read_rule_files(files, defaults, &mut std::collections::hash_map::DefaultHasher::new())
}

/// [`load_rule_files`], adding each file's path and text to `digest`.
fn read_rule_files(files: &[PathBuf], defaults: &Defaults, digest: &mut impl Hasher) -> Result<Vec<RuleGroup>, Problems> {
    let mut problems = Problems::default();
    let mut groups: Vec<RuleGroup> = Vec::new();
    for file in files {
        let parsed = crate::files::read_to_string(file, crate::files::MAX_CONFIG_BYTES)
            .map_err(|err| Problems::one(Problem::file(file, format!("reading rule file: {err}"))))
            .and_then(|text| {
                (file, &text).hash(digest);
                rules::parse(file, &text, defaults)
            });
        match parsed {
            Ok(found) => groups.extend(found),
            Err(found) => problems.extend(found),
        }
    }
    // Outputs carry only rule="<name>": the same name twice would export colliding series.
    let mut seen: std::collections::HashMap<&str, &GroupKey> = std::collections::HashMap::new();
    for group in &groups {
        for rule in &group.rules {
            if let Some(first) = seen.insert(&rule.name, &group.key) {
                if first != &group.key {
                    problems.push(Problem::file(
                        &group.key.file,
                        format!(
                            "group {:?}: rule name {:?} is already used in group {:?} of {}",
                            group.key.name,
                            rule.name,
                            first.name,
                            first.file.display()
                        ),
                    ));
                }
            }
        }
    }
    problems.into_result(groups)
}

/// Resolves `rule_files` globs relative to the config file's directory.
pub fn expand_rule_files(config_path: &Path, patterns: &[String]) -> Result<Vec<PathBuf>, Problems> {
    let base = config_path.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    let mut problems = Problems::default();
    for pattern in patterns {
        let full = if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { base.join(pattern) };
        // Hidden entries are never rule files; Kubernetes keeps ConfigMap copies in `..data/`.
        let options = glob::MatchOptions { require_literal_leading_dot: true, ..Default::default() };
        let paths = match glob::glob_with(&full.to_string_lossy(), options) {
            Ok(paths) => paths,
            Err(err) => {
                problems.push(Problem::file(config_path, format!("rule_files pattern {pattern:?}: {err}")));
                continue;
            }
        };
        let before = files.len();
        for path in paths {
            match path {
                Ok(path) => files.push(path),
                // A directory that cannot be read would silently drop its rules and their models.
                Err(err) => problems.push(Problem::file(config_path, format!("rule_files pattern {pattern:?}: {err}"))),
            }
        }
        // A path without wildcards names one file: its absence is a mistake, not an empty match.
        if files.len() == before && !pattern.contains(['*', '?', '[']) {
            problems.push(Problem::file(config_path, format!("rule file {} does not exist", full.display())));
        }
    }
    files.sort();
    files.dedup();
    problems.into_result(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_config_and_globbed_rules_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(
            dir.path().join("pulsewatch.yml"),
            "source: { url: 'http://127.0.0.1:9090', headers: { X-Scope-OrgID: t1 } }\nrule_files: ['rules/*.yaml']\nglobal: { band: 0.9 }\n",
        )
        .unwrap();
        for name in ["a", "b"] {
            std::fs::write(
                dir.path().join(format!("rules/{name}.yaml")),
                format!("groups:\n  - name: {name}\n    rules:\n      - forecast: r_{name}\n        expr: up\n"),
            )
            .unwrap();
        }
        let loaded = load(&dir.path().join("pulsewatch.yml")).unwrap();
        assert_eq!(loaded.rule_files.len(), 2);
        assert_eq!(loaded.groups.len(), 2);
        assert_eq!(loaded.groups[0].rules[0].forecast().unwrap().band, 0.9);
        assert_eq!(loaded.config.source.headers["X-Scope-OrgID"], "t1");
    }

    #[test]
    fn globs_skip_hidden_entries() {
        // a ConfigMap volume: the files, and hidden copies of them under `..data/`
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("..data")).unwrap();
        for f in ["a.yaml", "..data/a.yaml", ".hidden.yaml"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let files = expand_rule_files(&dir.path().join("pulsewatch.yml"), &["**/*.yaml".into()]).unwrap();
        assert_eq!(files, vec![dir.path().join("a.yaml")]);
    }

    #[test]
    fn a_missing_literal_rule_file_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("pulsewatch.yml");
        let err = expand_rule_files(&config, &["rules/node.yaml".into()]).unwrap_err().to_string();
        assert!(err.contains("rules/node.yaml does not exist"), "{err}");
        // a glob that matches nothing is an empty set, as in Prometheus
        assert_eq!(expand_rule_files(&config, &["rules/*.yaml".into()]).unwrap(), Vec::<PathBuf>::new());
        // an unreadable directory: tests/it/cli.rs, as a user other than root
    }

    #[test]
    fn problems_from_all_rule_files_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.yaml");
        std::fs::write(&a, "groups:\n  - name: g\n    rules:\n      - forecast: r\n        expr: 'up{'\n").unwrap();
        std::fs::write(&b, "groups:\n  - name: g\n    bogus: 1\n").unwrap();
        let problems = load_rule_files(&[a.clone(), b.clone()], &Defaults::default()).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems}");
        assert_eq!(problems.iter().next().unwrap().path(), a);
        assert!(problems.to_string().contains("bogus"), "{problems}");
    }

    #[test]
    fn rule_names_are_unique_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = ["a", "b"].iter().map(|n| dir.path().join(format!("{n}.yaml"))).collect();
        for f in &files {
            std::fs::write(f, "groups:\n  - name: g\n    rules:\n      - forecast: cpu\n        expr: up\n").unwrap();
        }
        let problems = load_rule_files(&files, &Defaults::default()).unwrap_err().to_string();
        assert!(problems.contains("rule name \"cpu\" is already used in group \"g\""), "{problems}");
    }

    #[test]
    fn numbers_run_time_cannot_use_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yml");
        // 2^61 fits panicked when the semaphore was made
        std::fs::write(
            &path,
            "source: { url: 'http://x' }\nglobal: { max_concurrent_fits: 2305843009213693952, evaluation_interval: 100ms }\n",
        )
        .unwrap();
        let err = load_config(&path).unwrap_err().to_string();
        assert!(err.contains("max_concurrent_fits 2305843009213693952 is more than 4096"), "{err}");
        assert!(err.contains("evaluation_interval 100ms is shorter than 1s"), "{err}");
    }

    #[test]
    fn credentials_in_an_invalid_url_are_not_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yml");
        std::fs::write(&path, "source: { url: 'http://admin:hunter2@[bad' }\n").unwrap();
        let err = load_config(&path).unwrap_err().to_string();
        assert!(err.contains("source url \"http://<redacted>@[bad\"") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn config_with_unknown_key_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yml");
        std::fs::write(&path, "source: { url: 'http://x' }\nrule_file: []\n").unwrap();
        let err = load_config(&path).unwrap_err().to_string();
        assert!(err.contains("rule_file"), "{err}");
        assert!(err.contains("c.yml:2"), "{err}");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// A valid rule file and a valid config: what the mutations start from.
        const RULES: &str = include_str!("../../tests/fixtures/rules/node.good.yaml");
        const CONFIG: &str = include_str!("../../tests/fixtures/config/good.yaml");

        /// Mutations a hostile or careless file could have: a byte changed, a span deleted or
        /// duplicated, nesting piled up.
        fn mutate(text: &str, at: usize, len: usize, byte: u8, kind: u8) -> String {
            let bytes = text.as_bytes();
            let at = at % (bytes.len() + 1);
            let end = (at + len).min(bytes.len());
            let mut out = bytes[..at].to_vec();
            match kind % 4 {
                0 => out.push(byte),
                1 => {}
                2 => out.extend_from_slice(&bytes[at..end].repeat(50)),
                _ => out.extend_from_slice(&b"[{(".repeat(1 + len * 100)),
            }
            out.extend_from_slice(&bytes[end..]);
            String::from_utf8_lossy(&out).into_owned()
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

            /// Whatever the text, parsing a rule file returns groups or located problems: no
            /// panic, no hang (the PromQL limits bound the parser's work).
            #[test]
            fn rule_files_never_panic(at in 0usize..4000, len in 0usize..40, byte in any::<u8>(), kind in any::<u8>()) {
                let text = mutate(RULES, at, len, byte, kind);
                if let Err(problems) = rules::parse(Path::new("r.yaml"), &text, &Defaults::default()) {
                    prop_assert!(problems.iter().all(|p| p.to_string().starts_with("r.yaml")));
                }
            }

            #[test]
            fn arbitrary_text_as_a_rule_file_never_panics(text in "\\PC{0,400}") {
                let _ = rules::parse(Path::new("r.yaml"), &text, &Defaults::default());
            }

            #[test]
            fn config_files_never_panic(at in 0usize..2000, len in 0usize..40, byte in any::<u8>(), kind in any::<u8>()) {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("c.yml");
                std::fs::write(&path, mutate(CONFIG, at, len, byte, kind)).unwrap();
                let _ = load_config(&path);
            }
        }
    }
}
