//! The mesh CA given as PEM text (`--control-plane-ca-pem`, env
//! `WEFT_CONTROL_PLANE_CA_PEM`, as the injector sets it) verifies the
//! control plane exactly as the file of `--control-plane-ca` does: with the
//! right root the sidecar gets its certificate and is ready; with another
//! CA's root it never trusts the control plane; a PEM without a certificate
//! and both flags at once are startup errors.

use std::time::Duration;
use weft_tests::*;

/// The mesh-mode flags of `cp.proxy_args`, minus the CA file.
fn without_ca_file(cp: &ControlPlane, sa: &str) -> ProxyBuilder {
    let mut b = Proxy::builder("").no_config();
    let args = cp.proxy_args("default", sa, &cp.token("default", sa));
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--control-plane-ca" {
            it.next();
        } else {
            b = b.arg(a);
        }
    }
    b
}

#[tokio::test]
async fn the_ca_as_pem_text_verifies_the_control_plane() {
    let cp = ControlPlane::start("", &[]);
    let pem = std::fs::read_to_string(cp.ca_file()).expect("CA file");
    let p = without_ca_file(&cp, "web")
        .env("WEFT_CONTROL_PLANE_CA_PEM", pem)
        .start();
    eventually("the proxy is ready", Duration::from_secs(20), || async {
        (p.admin_get("/ready").await.0 == 200).then_some(())
    })
    .await;

    // Another CA's root: the control plane is not trusted, no certificate.
    let other = weft_mesh::identity::ca::CertificateAuthority::generate("weft.local").unwrap();
    let p = without_ca_file(&cp, "web")
        .arg("--control-plane-ca-pem")
        .arg(other.cert_pem())
        .start();
    let refused = eventually_or(Duration::from_secs(20), || async {
        p.logs()
            .contains("TLS with the control plane: invalid peer certificate")
            .then_some(())
    })
    .await;
    assert!(refused.is_some(), "no refusal logged:\n{}", p.logs());
    assert_eq!(p.admin_get("/ready").await.0, 503, "{}", p.logs());
}

fn start_failure(cp: &ControlPlane, extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(proxy_bin());
    cmd.arg("run")
        .args(cp.proxy_args("default", "web", "token"))
        .args(["--outbound", "127.0.0.1:0", "--inbound", "127.0.0.1:0"])
        .args(["--admin", "127.0.0.1:0"])
        .args(extra)
        .envs(env.iter().copied());
    let out = cmd.output().expect("run weft-proxy");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_pem_without_a_certificate_or_both_flags_stop_the_proxy() {
    let cp = ControlPlane::start("", &[]);
    let pem = std::fs::read_to_string(cp.ca_file()).expect("CA file");
    // Both: clap refuses the pair, from flags or env alike.
    let (code, err) = start_failure(&cp, &["--control-plane-ca-pem", &pem], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    let (code, err) = start_failure(&cp, &[], &[("WEFT_CONTROL_PLANE_CA_PEM", &pem)]);
    assert_eq!(code, Some(2), "{err}");
    // Text with no certificate in it.
    let mut cmd = std::process::Command::new(proxy_bin());
    let out = cmd
        .args([
            "run",
            "--control-plane",
            &cp.url(),
            "--bootstrap-token",
            "t",
        ])
        .args(["--control-plane-ca-pem", "not a certificate"])
        .output()
        .expect("run weft-proxy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--control-plane-ca-pem: no certificate found"),
        "{err}"
    );
}
