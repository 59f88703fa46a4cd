//! The webhook over its real transport: TLS with the certificate from the
//! mesh CA (verified for both Service names, as the API server does with
//! the caBundle), then HTTP: the recorded review answered, a body that is
//! no review refused with a 400 and its reason, other paths and methods
//! named. And the certificate is renewed at half its life.

use super::golden_tests::{fixtures, settings};
use super::{serving_cert, webhook};
use crate::ca::CertificateAuthority;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;

/// One HTTPS request to `addr` as `name`, trusting `ca`: status and body.
async fn call(
    addr: std::net::SocketAddr,
    ca: &CertificateAuthority,
    name: &str,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", name)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn the_webhook_answers_over_tls_with_a_mesh_certificate_for_its_service_names() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let acceptor = serving_cert::acceptor(&ca, "weft-system", Duration::from_secs(3600)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let slot = Arc::new(ArcSwap::from_pointee(acceptor));
    let counters = Arc::new(crate::state::Counters::default());
    tokio::spawn(webhook::serve(
        listener,
        slot,
        Arc::new(settings()),
        counters.clone(),
    ));

    let recorded =
        std::fs::read(fixtures().join("k8s/admission/04-admissionreview-request.raw.json"))
            .unwrap();
    for name in [
        "weft-control-plane.weft-system.svc",
        "weft-control-plane.weft-system.svc.cluster.local",
    ] {
        let (status, body) = call(
            addr,
            &ca,
            name,
            "POST",
            "/inject?timeout=10s",
            recorded.clone(),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let review: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            review["response"]["uid"],
            "5764a1e4-c29f-4110-b8ef-8aa83762ab25"
        );
        assert_eq!(review["response"]["patchType"], "JSONPatch");
    }
    // Another name: the API server would refuse the certificate.
    let e = call(
        addr,
        &ca,
        "weft-control-plane.other.svc",
        "POST",
        "/inject",
        vec![],
    )
    .await
    .expect_err("the certificate names only weft-system's Service");
    assert!(e.contains("certificate"), "{e}");

    let name = "weft-control-plane.weft-system.svc";
    let (status, body) = call(addr, &ca, name, "POST", "/inject", b"{\"kind\":".to_vec())
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(body.starts_with("not an AdmissionReview"), "{body}");
    let (status, _) = call(addr, &ca, name, "GET", "/inject", vec![])
        .await
        .unwrap();
    assert_eq!(status, 405);
    let (status, _) = call(addr, &ca, name, "POST", "/mutate", recorded)
        .await
        .unwrap();
    assert_eq!(status, 404);
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(count(&counters.injections), 2);
    assert_eq!(count(&counters.injection_bad_reviews), 1);
    assert_eq!(count(&counters.injection_skips), 0);
}

#[tokio::test(start_paused = true)]
async fn the_serving_certificate_is_renewed_at_half_its_life() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let ttl = Duration::from_secs(3600);
    let first = Arc::new(serving_cert::acceptor(&ca, "weft-system", ttl).unwrap());
    let slot = Arc::new(ArcSwap::new(first.clone()));
    let cp = crate::state::ControlPlane::new(
        ca,
        "weft.local".into(),
        ttl,
        crate::resources::Inputs::default(),
        None,
        None,
    )
    .unwrap();
    tokio::spawn(serving_cert::renew(
        slot.clone(),
        cp,
        "weft-system".into(),
        ttl,
    ));
    tokio::time::sleep(ttl / 2 - Duration::from_secs(1)).await;
    assert!(Arc::ptr_eq(&slot.load_full(), &first), "renewed early");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !Arc::ptr_eq(&slot.load_full(), &first),
        "not renewed at half-life"
    );
}
