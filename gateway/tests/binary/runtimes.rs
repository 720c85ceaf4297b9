//! The binary serves on either runtime that `gateway.threads` chooses: one
//! thread (the default) and several. Each run accepts one signed event, which
//! must be in the work queue, and stops with exit code 0 on SIGTERM.

use super::support::*;

#[test]
fn the_binary_serves_on_one_thread_by_default() {
    serve_one_event(&[]);
}

#[test]
fn the_binary_serves_on_a_work_stealing_runtime() {
    serve_one_event(&[("SLUICE_GATEWAY__THREADS", "2".to_owned())]);
}

fn serve_one_event(env: &[(&str, String)]) {
    let mut gateway = Gateway::start_with("", env);
    let body = upsert(&format!("bin-{}", uuid::Uuid::new_v4().simple()));
    let answer = exchange(gateway.addr, &signed("/webhooks/whatzme", &body));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""accepted":1"#), "{answer}");
    let status = gateway.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM stops the gateway cleanly");
    let (published, _) = gateway.queues_then_clean();
    assert_eq!(published, 1, "the accepted event is in the work queue");
}
