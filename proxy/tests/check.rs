//! `weft-proxy check` as a user runs it: every shipped example passes, and a
//! broken file fails with file:line:column and the field path.

use std::path::{Path, PathBuf};
use std::process::Command;

fn weft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config-examples")
}

#[test]
fn every_config_example_passes_check() {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(examples()).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                    files.push(f);
                }
            }
        }
    }
    assert!(
        files.len() >= 6,
        "expected the example files, found {files:?}"
    );
    for f in files {
        let out = weft().arg("check").arg(&f).output().unwrap();
        assert!(
            out.status.success(),
            "{} failed check:\n{}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_reports_position_and_path() {
    let dir = std::env::temp_dir().join(format!("weft-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read_to_string(examples().join("quickstart/mesh.yaml")).unwrap();
    let bad = good.replace(
        "{name: hello-v1, weight: 80}",
        "{name: hello-v1, weight: -80}",
    );
    assert_ne!(good, bad);
    let f = dir.join("bad.yaml");
    std::fs::write(&f, &bad).unwrap();
    let out = weft().arg("check").arg(&f).output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = bad.lines().position(|l| l.contains("weight: -80")).unwrap() + 1;
    let want = format!("{}:{line}:", f.display());
    assert!(err.contains(&want), "expected {want} in:\n{err}");
    assert!(
        err.contains("spec.rules[1].backendRefs[0].weight"),
        "no field path in:\n{err}"
    );
}

#[test]
fn check_a_folder_and_several_paths() {
    let out = weft()
        .arg("check")
        .arg(examples().join("quickstart"))
        .arg(examples().join("tcp/postgres.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 resources in 2 files"));
}

#[test]
fn invalid_config_at_startup_exits_nonzero_with_the_message() {
    let dir = std::env::temp_dir().join(format!("weft-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.yaml");
    std::fs::write(&f, "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {name: x}\nspec:\n  protocl: http\n").unwrap();
    let out = weft()
        .args([
            "run",
            "--outbound",
            "127.0.0.1:0",
            "--inbound",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&f)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:5:3: spec.protocl: unknown field"),
        "got:\n{err}"
    );
}
