//! The gateway is stopped with SIGTERM under load, as a rolling deploy
//! does, and a new one started on the same port: `/readyz` turns 503 at
//! once while requests are still served for the grace, then the port
//! closes and the requests in flight finish; the providers' retries reach
//! the new gateway, and nothing is lost or published twice.

use std::time::{Duration, Instant};

use sluice_testkit::ledger::Outcome;
use sluice_testkit::under_load::{Setup, UnderLoad};

const GRACE: Duration = Duration::from_secs(2);

async fn readyz_status(client: &reqwest::Client, admin: std::net::SocketAddr) -> Option<u16> {
    let response = client.get(format!("http://{admin}/readyz")).send().await;
    response.ok().map(|r| r.status().as_u16())
}

/// Once counted a request cut off mid-answer in a loaded parallel run: a
/// request sent on a keep-alive connection as the port closed. Answers in
/// the grace now carry `Connection: close`, connections the kernel already
/// completed are served, and each connection may start a request for a
/// moment after the close, so none is left to be cut unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stopped_with_sigterm_under_load_finishes_what_it_accepted() {
    let setup = Setup {
        gateway_env: vec![("SLUICE_GATEWAY__SHUTDOWN_GRACE", "2s".into())],
        ..Setup::new("sigterm")
    };
    let mut stage = UnderLoad::start(setup).await;
    stage.run_for(Duration::from_secs(3)).await;
    let client = reqwest::Client::new();
    let admin = stage.gateway.admin_addr;

    stage.gateway.terminate();
    let signalled = Instant::now();
    let unready = sluice_testkit::eventually(GRACE / 4, || async {
        readyz_status(&client, admin).await == Some(503)
    })
    .await;
    assert!(
        unready,
        "/readyz answers 503 as soon as the signal is handled"
    );
    let exit = stage.gateway.wait(Duration::from_secs(15)).await;
    assert!(exit.success(), "a clean exit: {exit}");
    let stopped = Instant::now();
    drop(stage.start_gateway_again().await);

    let book = stage.ledger.book();
    let closed = signalled + GRACE;
    let during = |from: Instant, to: Instant, outcome: Outcome| {
        let answers = book.answers.iter().filter(|a| a.outcome == outcome);
        answers.filter(|a| a.at > from && a.at < to).count()
    };
    let served = during(signalled + GRACE / 4, closed, Outcome::Status(200));
    let refused = during(closed, Instant::now(), Outcome::Refused);
    let finished = book
        .answers
        .iter()
        .filter(|a| a.outcome == Outcome::Status(200) && a.at - a.took < closed && a.at > closed)
        .count();
    let report = stage.finish(stopped).await;
    println!(
        "SIGTERM with a {GRACE:?} grace: {served} answered 200 in the grace, {finished} in flight \
         at the close finished, {refused} refused after it; stopped after {:?}: {report}",
        stopped - signalled
    );
    report.assert_promises();
    assert!(served > 0, "requests are served during the grace");
    assert!(refused > 0, "the port closes after the grace");
    assert_eq!(
        report.answered(Outcome::Dropped),
        0,
        "no request was cut off mid-answer"
    );
}
