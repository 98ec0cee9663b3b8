//! `pulsewatch check`: output and exit codes, as `promtool check` has them.

use std::path::Path;
use std::process::{Command, Output};

fn pulsewatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pulsewatch")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_rules_good() {
    let out = pulsewatch(&["check", "rules", "tests/fixtures/rules/node.good.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Checking tests/fixtures/rules/node.good.yaml\n  SUCCESS: 2 rules found\n");
}

#[test]
fn check_rules_bad_reports_every_problem() {
    let out = pulsewatch(&["check", "rules", "tests/fixtures/rules/node.good.yaml", "tests/fixtures/rules/broken.bad.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("SUCCESS: 2 rules found"), "{stdout}");
    let stderr = text(&out.stderr);
    // The unknown key stops deserialization of that file, like promtool's YAML errors do.
    assert!(stderr.starts_with("  FAILED:\ntests/fixtures/rules/broken.bad.yaml:10:"), "{stderr}");
    assert!(stderr.contains("min_devation"), "{stderr}");
}

#[test]
fn check_rules_reports_all_semantic_problems() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.yaml");
    let bad = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules/broken.bad.yaml")).unwrap();
    std::fs::write(&file, bad.replace("        min_devation: 0.1\n", "")).unwrap();
    let out = pulsewatch(&["check", "rules", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let f = file.display();
    let lines: Vec<String> = text(&out.stderr).lines().map(String::from).collect();
    assert_eq!(lines[0], "  FAILED:");
    assert!(
        lines[1].starts_with(&format!("{f}:5:")) && lines[1].contains("group \"node\", rule 1, \"cpu\": could not parse expression"),
        "{lines:#?}"
    );
    assert!(
        lines[2].starts_with(&format!("{f}:7:"))
            && lines[2].ends_with("group \"node\", rule 2, \"load\": band 1.5 must be between 0 and 1 (exclusive)"),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.starts_with(&format!("{f}:10:")) && l.contains("group name is not unique")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("invalid cron \"every minute\"")), "{lines:#?}");
}

#[test]
fn check_config_follows_rule_files() {
    let out = pulsewatch(&["check", "config", "tests/fixtures/config/good.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Checking tests/fixtures/config/good.yaml\n  SUCCESS: 1 rule files found"), "{stdout}");
    assert!(stdout.contains("node.good.yaml\n  SUCCESS: 2 rules found"), "{stdout}");
}

#[test]
fn check_config_reports_source_problems() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yml");
    std::fs::write(&config, "source: { url: 'http://x', bearer_token: { file: /nonexistent/token } }\n").unwrap();
    let out = pulsewatch(&["check", "config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("c.yml: source config: bearer_token: reading secret file /nonexistent/token"), "{stderr}");
}

#[test]
fn check_config_rejects_a_rule_name_used_twice() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yml");
    std::fs::write(&config, "source: { url: 'http://x' }\nrule_files: ['*.yaml']\n").unwrap();
    for name in ["a", "b"] {
        std::fs::write(
            dir.path().join(format!("{name}.yaml")),
            format!("groups:\n  - name: {name}\n    rules:\n      - forecast: cpu\n        expr: up\n"),
        )
        .unwrap();
    }
    let out = pulsewatch(&["check", "config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("rule name \"cpu\" is already used in group \"a\""), "{}", text(&out.stderr));
}

#[test]
fn examples_are_valid() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yml") {
            let out = pulsewatch(&["check", "config", path.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(0), "{}: {}", path.display(), text(&out.stderr));
            checked += 1;
        }
    }
    assert!(checked > 0, "no example configs found");
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/pulsewatch/node.yaml");
    let out = pulsewatch(&["check", "rules", node.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn daemon_refuses_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yml");
    std::fs::write(&config, "source: { url: 'http://127.0.0.1:1' }\nrule_files: [r.yaml]\n").unwrap();
    std::fs::write(dir.path().join("r.yaml"), "groups:\n  - name: g\n    rules:\n      - forecast: x\n        expr: 'up{'\n").unwrap();
    let out = pulsewatch(&["--config.file", config.to_str().unwrap(), "--web.listen-address", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("r.yaml:4:9: group \"g\", rule 1, \"x\": could not parse expression"), "{}", text(&out.stderr));
}

/// A rule directory the process cannot read fails `check config` (and so a reload) instead of
/// loading no rules. Root reads every directory, so this runs the check as `nobody`.
#[test]
fn an_unreadable_rule_directory_is_an_error_not_an_empty_set() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // nobody cannot enter root's home, where the build is: run it from here (a link, or a copy
    // across file systems)
    let binary = dir.path().join("pulsewatch");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_pulsewatch"), &binary).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_pulsewatch"), &binary).unwrap();
    }
    std::fs::write(dir.path().join("pulsewatch.yml"), "source: { url: 'http://127.0.0.1:9090' }\nrule_files: ['rules/*.yaml']\n").unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/a.yaml"), "groups: []\n").unwrap();
    let check = || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&binary)
            .args(["check", "config", dir.path().join("pulsewatch.yml").to_str().unwrap()])
            .output()
            .expect("setpriv (util-linux) runs the check as another user")
    };
    let readable = check();
    assert_eq!(readable.status.code(), Some(0), "{}{}", text(&readable.stdout), text(&readable.stderr));
    std::fs::set_permissions(dir.path().join("rules"), std::fs::Permissions::from_mode(0o300)).unwrap();
    let unreadable = check();
    std::fs::set_permissions(dir.path().join("rules"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(unreadable.status.code(), Some(1), "{}{}", text(&unreadable.stdout), text(&unreadable.stderr));
    let stderr = text(&unreadable.stderr);
    assert!(stderr.contains("rule_files pattern \"rules/*.yaml\"") && stderr.contains("ermission denied"), "{stderr}");
}
