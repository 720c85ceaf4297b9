//! `[gateway.tls]` on the real binary: HTTPS is served with the configured
//! certificate; a new certificate is taken when the files change and on
//! SIGHUP, without dropping a connection that is open; a broken file keeps
//! the old certificate. Without TLS, listening beyond loopback is warned of.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::support::*;

/// A leaf certificate for `localhost` and 127.0.0.1, written to `cert` and
/// `key`, signed by a new CA of its own; returns the CA's PEM to trust.
fn make_cert(cert: &Path, key: &Path) -> Vec<u8> {
    let work = tempfile::tempdir().expect("temp dir");
    let (ca_key, ca_crt, csr, ext) = (
        work.path().join("ca.key"),
        work.path().join("ca.crt"),
        work.path().join("leaf.csr"),
        work.path().join("leaf.ext"),
    );
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("extensions file");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(|c| {
        c.args(["req", "-x509", "-days", "1", "-subj", "/CN=sluice-test-ca"])
            .args(ec)
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca_crt)
    });
    openssl(|c| {
        c.args(["req", "-subj", "/CN=localhost"])
            .args(ec)
            .arg("-keyout")
            .arg(key)
            .arg("-out")
            .arg(&csr)
    });
    openssl(|c| {
        c.args(["x509", "-req", "-days", "1", "-CAcreateserial"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&ca_crt)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(cert)
    });
    std::fs::read(&ca_crt).expect("the CA certificate")
}

fn openssl(args: impl FnOnce(&mut Command) -> &mut Command) {
    let mut command = Command::new("openssl");
    let status = args(&mut command)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs (Debian package openssl)");
    assert!(status.success(), "openssl failed: {command:?}");
}

/// Writes a new pair beside the live one, then moves it into place (as cert tools do).
fn replace_cert(dir: &Path, cert: &Path, key: &Path) -> Vec<u8> {
    let (new_cert, new_key) = (dir.join("next.crt"), dir.join("next.key"));
    let pem = make_cert(&new_cert, &new_key);
    std::fs::rename(&new_key, key).expect("key in place");
    std::fs::rename(&new_cert, cert).expect("cert in place");
    pem
}

fn client(trusting: &[u8]) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(trusting).expect("a PEM certificate");
    reqwest::Client::builder()
        .add_root_certificate(root)
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a client")
}

async fn post_event(client: &reqwest::Client, url: &str, id: &str) -> Result<u16, reqwest::Error> {
    let body = upsert(id);
    let signature = hmac_header(&body);
    let value = signature
        .trim_end()
        .split_once(": ")
        .map(|(_, v)| v.to_owned());
    let response = client
        .post(url)
        .header("x-signature", value.unwrap_or_default())
        .body(body)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tls_is_served_and_reloaded_on_change_and_sighup_without_dropping_connections() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let first = make_cert(&cert, &key);
    let tls = format!(
        "[gateway.tls]\ncert = \"{}\"\nkey = \"{}\"\nreload_interval = \"200ms\"",
        cert.display(),
        key.display()
    );
    let gateway = Gateway::start(&tls);
    let url = format!("https://localhost:{}/webhooks/whatzme", gateway.addr.port());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let old_client = client(&first);
    let status = runtime.block_on(post_event(&old_client, &url, &format!("{run}-1")));
    assert_eq!(
        status.as_ref().ok(),
        Some(&200),
        "{status:?} {}",
        gateway.log()
    );

    let second = replace_cert(dir.path(), &cert, &key);
    wait_for("the reload on file change", || {
        gateway.metric(r#"sluice_gateway_tls_reloads_total{outcome="ok"}"#) >= 1.0
    });
    // The open connection keeps working; new handshakes get the new certificate.
    let status = runtime.block_on(post_event(&old_client, &url, &format!("{run}-2")));
    assert_eq!(
        status.ok(),
        Some(200),
        "a connection open across the reload"
    );
    let status = runtime.block_on(post_event(&client(&second), &url, &format!("{run}-3")));
    assert_eq!(
        status.ok(),
        Some(200),
        "a new handshake with the new certificate"
    );
    let stale = runtime.block_on(post_event(&client(&first), &url, &format!("{run}-4")));
    assert!(
        stale.is_err(),
        "a new handshake no longer gets the old certificate"
    );

    std::fs::write(&cert, b"not a certificate").expect("break the file");
    wait_for("the failed reload", || {
        gateway.metric(r#"sluice_gateway_tls_reloads_total{outcome="error"}"#) >= 1.0
    });
    let status = runtime.block_on(post_event(&client(&second), &url, &format!("{run}-5")));
    assert_eq!(
        status.ok(),
        Some(200),
        "a broken file keeps the last good certificate"
    );
    assert!(
        gateway.log().contains("TLS reload failed"),
        "{}",
        gateway.log()
    );

    let third = make_cert(&dir.path().join("third.crt"), &dir.path().join("third.key"));
    std::fs::copy(dir.path().join("third.key"), &key).expect("key");
    std::fs::copy(dir.path().join("third.crt"), &cert).expect("cert");
    let before = gateway.metric(r#"sluice_gateway_tls_reloads_total{outcome="ok"}"#);
    gateway.signal("HUP");
    wait_for("the reload on SIGHUP", || {
        gateway.metric(r#"sluice_gateway_tls_reloads_total{outcome="ok"}"#) > before
    });
    let status = runtime.block_on(post_event(&client(&third), &url, &format!("{run}-6")));
    assert_eq!(status.ok(), Some(200));

    let plain = exchange(gateway.addr, b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_eq!(
        status_of(&plain),
        0,
        "plain HTTP on the TLS port gets no answer: {plain}"
    );
    let (published, _) = gateway.queues_then_clean();
    assert_eq!(published, 5);
}

fn status_of(answer: &str) -> u16 {
    status(answer)
}

#[test]
fn plain_http_beyond_loopback_is_warned_of_at_start() {
    let port = free_port().port();
    let gateway = Gateway::start_with("", &[("SLUICE_GATEWAY__LISTEN", format!("0.0.0.0:{port}"))]);
    let log = gateway.log();
    assert!(
        log.contains("plain HTTP on a non-loopback address") && log.contains("WARN"),
        "{log}"
    );
    gateway.queues_then_clean();
    let quiet = Gateway::start("");
    assert!(!quiet.log().contains("non-loopback"), "{}", quiet.log());
    quiet.queues_then_clean();
}
