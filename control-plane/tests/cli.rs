//! The `weft-control-plane` command line: tokens, the CRDs, and refusing to start on
//! bad input with a message that says why. (Also makes `cargo test` build
//! the binary the end-to-end tests in `tests/` run.)

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weft-control-plane"))
}

fn scratch(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("weft-cp-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn token_names_one_identity() {
    let dir = scratch("token");
    let out = bin()
        .args([
            "token",
            "--namespace",
            "shop",
            "--service-account",
            "reviews",
            "--ca-dir",
        ])
        .arg(dir.join("ca"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    assert!(token.starts_with("weft1:shop:reviews:"), "{token}");
    // The CA was generated on the way and is reused next time.
    assert!(dir.join("ca/ca.pem").exists());
    let bad = bin()
        .args([
            "token",
            "--namespace",
            "a:b",
            "--service-account",
            "x",
            "--ca-dir",
        ])
        .arg(dir.join("ca"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn invalid_config_stops_serve_with_its_position() {
    let dir = scratch("bad");
    let cfg = dir.join("mesh.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {name: x}\nspec:\n  endpoints: [{address: 127.0.0.1:1, wieght: 2}]\n",
    )
    .unwrap();
    let out = bin()
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .arg("--ca-dir")
        .arg(dir.join("ca"))
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mesh.yaml:5:"), "{err}");
    assert!(err.contains("wieght"), "{err}");
    let none = bin()
        .arg("serve")
        .arg("--ca-dir")
        .arg(dir.join("ca"))
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn crds_prints_the_committed_definitions() {
    let out = bin().arg("crds").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/weft/crds/weft.dev.yaml"),
    )
    .unwrap();
    assert!(
        printed == committed,
        "`weft-control-plane crds` differs from charts/weft/crds/weft.dev.yaml; regenerate with\n  cargo run -p weft-control-plane -- crds > charts/weft/crds/weft.dev.yaml"
    );
    assert_eq!(printed.matches("kind: CustomResourceDefinition").count(), 4);
}

#[test]
fn bad_injector_flags_stop_serve_with_the_flag_named() {
    let dir = scratch("inject");
    let run = |extra: &[&str]| {
        let out = bin()
            .args(["serve", "--log-format", "json", "--ca-dir"])
            .arg(dir.join("ca"))
            .args(extra)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        let mut log = String::from_utf8_lossy(&out.stdout).into_owned();
        log += &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), log)
    };
    let (code, log) = run(&[
        "--config",
        "/nonexistent-but-unread",
        "--webhook",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("--webhook needs --kubernetes"), "{log}");
    let (code, log) = run(&["--kubernetes", "--proxy-memory", "lots"]);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("--proxy-memory") && log.contains("\\\"lots\\\" is not a Kubernetes quantity"),
        "{log}"
    );
    let (code, log) = run(&["--kubernetes", "--proxy-control-plane", "http://x:15012"]);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("not an https:// URL"), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}
