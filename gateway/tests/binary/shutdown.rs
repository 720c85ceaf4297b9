//! SIGTERM stops the gateway in three steps: `/readyz` answers 503 for
//! `gateway.shutdown_grace` while webhooks are still served (the load
//! balancer takes the replica out first); then the port closes; a request
//! in flight at that moment still finishes, within the ack budget.

use std::io::Write;
use std::net::TcpStream;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::support::*;

const GRACE: Duration = Duration::from_secs(1);

#[test]
fn sigterm_turns_unready_then_closes_the_port_and_lets_requests_in_flight_finish() {
    let mut gateway = Gateway::start("shutdown_grace = \"1s\"\nbody_read_timeout = \"1s\"");
    let id = |n: u32| format!("bin-stop-{n}-{}", uuid::Uuid::new_v4().simple());
    gateway.signal("TERM");
    let signalled = Instant::now();

    // 1. Not ready (as soon as the signal is handled), but still serving.
    let ready = loop {
        let ready = exchange(
            gateway.admin,
            b"GET /readyz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        );
        if status(&ready) == 503 || signalled.elapsed() > GRACE / 4 {
            break ready;
        }
        sleep(Duration::from_millis(10));
    };
    assert_eq!(
        status(&ready),
        503,
        "unready within a quarter of the grace: {ready}"
    );
    assert!(ready.contains("shutting down"), "{ready}");
    // A keep-alive request: the answer closes the connection, so no idle
    // connection is left to race the port's close.
    let body = upsert(&id(1));
    let request = post_sized("/webhooks/whatzme", &[hmac_header(&body)], &body);
    let request =
        String::from_utf8_lossy(&request).replace("connection: close", "connection: keep-alive");
    let answer = exchange(gateway.addr, request.as_bytes());
    assert_eq!(status(&answer), 200, "served during the grace: {answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "a keep-alive connection is closed after its answer during the grace: {answer}"
    );

    // A request that starts before the port closes and ends after it. Its
    // ack budget (1.5 s) runs from its head: started late in the grace, it
    // keeps most of the budget for its own work on a loaded machine (from
    // 0.6 of the grace it once ran out under the full parallel test run).
    sleep((GRACE * 85 / 100).saturating_sub(signalled.elapsed()));
    let body = upsert(&id(2));
    let request = post_sized("/webhooks/whatzme", &[hmac_header(&body)], &body);
    let (first, rest) = request.split_at(request.len() - 10);
    let mut in_flight = TcpStream::connect(gateway.addr).expect("connects before the port closes");
    in_flight
        .write_all(first)
        .expect("the head and most of the body");

    // 2. After the grace the port is closed.
    sleep((GRACE + Duration::from_millis(150)).saturating_sub(signalled.elapsed()));
    let refused = TcpStream::connect_timeout(&gateway.addr, Duration::from_millis(500));
    assert!(refused.is_err(), "no new connection after the grace");

    // 3. The request in flight finishes.
    in_flight.write_all(rest).expect("the rest of the body");
    in_flight
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let answer = read_answer(&mut in_flight);
    assert_eq!(
        status(&answer),
        200,
        "the request in flight finished: {answer}"
    );

    let exit = gateway.wait_exit();
    assert_eq!(exit.code(), Some(0));
    let took = signalled.elapsed();
    assert!(
        took < GRACE + Duration::from_millis(1500) + Duration::from_secs(1),
        "stopped within the grace and the ack budget: {took:?}"
    );
    let (published, _) = gateway.queues_then_clean();
    assert_eq!(published, 2, "both events are in the work queue");
}
