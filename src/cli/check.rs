//! `pulsewatch check config|rules`, with promtool's output and exit codes.

use std::path::{Path, PathBuf};

use super::{EXIT_FAILURE, EXIT_OK};
use crate::config::{self, Defaults, Problem, Problems, RuleGroup, RuleKind};

fn report(path: &Path, result: Result<usize, Problems>, what: &str) -> bool {
    println!("Checking {}", path.display());
    match result {
        Ok(n) => {
            println!("  SUCCESS: {n} {what} found");
            true
        }
        Err(problems) => {
            eprintln!("  FAILED:");
            for problem in problems.iter() {
                eprintln!("{problem}");
            }
            false
        }
    }
}

/// Counts the rules, after loading every detector rule's model and checking it against its
/// rule as the first evaluation will: a valid rule file can name a broken model.
fn count_rules(groups: Vec<RuleGroup>) -> Result<usize, Problems> {
    let mut problems = Problems::default();
    for group in &groups {
        for (index, rule) in group.rules.iter().enumerate() {
            let RuleKind::Anomaly(anomaly) = &rule.kind else { continue };
            if let Err(err) = crate::detector::load(anomaly, &rule.step) {
                problems.push(Problem::file(&group.key.file, err.to_string()).group(&group.key.name).rule(index + 1, &rule.name));
            }
        }
    }
    problems.into_result(groups.iter().map(|g| g.rules.len()).sum())
}

/// Checks rule files with the built-in defaults; returns the exit code.
pub(super) fn rules(files: &[PathBuf]) -> u8 {
    let defaults = Defaults::default();
    let mut ok = true;
    for file in files {
        let result = config::rules::load_file(file, &defaults).and_then(count_rules);
        ok &= report(file, result, "rules");
    }
    if ok {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }
}

/// Checks a config file (its source settings included) and every rule file it names;
/// returns the exit code.
pub(super) fn config(file: &Path) -> u8 {
    let loaded = config::load_config(file).and_then(|c| {
        crate::source::PromClient::new(&c.source).map_err(|err| Problems::one(config::Problem::file(file, err.to_string())))?;
        let files = config::expand_rule_files(file, &c.rule_files)?;
        Ok((c, files))
    });
    let ok = report(file, loaded.as_ref().map(|(_, files)| files.len()).map_err(Clone::clone), "rule files");
    let Ok((config, files)) = loaded else { return EXIT_FAILURE };
    let mut all_ok = ok;
    for rule_file in &files {
        let result = config::rules::load_file(rule_file, &config.global).and_then(count_rules);
        all_ok &= report(rule_file, result, "rules");
    }
    // Checks that span files (rule names unique across them), as the daemon does.
    if all_ok {
        if let Err(problems) = config::load_rule_files(&files, &config.global) {
            eprintln!("  FAILED:");
            problems.iter().for_each(|p| eprintln!("{p}"));
            all_ok = false;
        }
    }
    if all_ok {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }
}
