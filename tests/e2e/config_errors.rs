//! A bad config stops the worker before it runs, with a message naming the key.

use std::process::Command;

use sluice_testkit::TestEnv;

fn run_worker(env: &TestEnv, toml: &str) -> (Option<i32>, String) {
    let path = env.dir.path().join("bad.toml");
    std::fs::write(&path, toml).expect("config file");
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-worker"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("the worker binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_route_secret_that_is_not_set_stops_the_worker_with_code_64() {
    let env = TestEnv::new("cfg");
    let route = "[[routes]]\nname = \"crm\"\nmatch = [\"*\"]\nhandler = \"http\"\nurl = \"http://127.0.0.1:9/\"\nsecret = \"env:SLUICE_E2E_SURELY_UNSET_SECRET\"\n";
    let (code, stderr) = run_worker(&env, &env.config_toml(route));
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("SLUICE_E2E_SURELY_UNSET_SECRET"),
        "names the variable: {stderr}"
    );
    assert!(stderr.contains("routes[0]"), "names the key: {stderr}");
}

#[test]
fn an_unknown_handler_stops_the_worker_with_code_64() {
    let env = TestEnv::new("cfg");
    let route = "[[routes]]\nname = \"crm\"\nmatch = [\"*\"]\nhandler = \"carrier-pigeon\"\n";
    let (code, stderr) = run_worker(&env, &env.config_toml(route));
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("carrier-pigeon") && stderr.contains("handler"),
        "{stderr}"
    );
}

#[test]
fn retry_delays_that_do_not_grow_stop_the_worker_with_code_64() {
    let env = TestEnv::new("cfg");
    let toml = env.config_toml_retrying(r#"["5s", "1s"]"#, "");
    let (code, stderr) = run_worker(&env, &toml);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("amqp.retry_delays"),
        "names the key: {stderr}"
    );
    assert!(
        stderr.contains("delay 1 (1s) is not longer than the one before it (5s)"),
        "says which delay: {stderr}"
    );
}

#[test]
fn bad_route_limits_and_breaker_settings_stop_the_worker_with_code_64() {
    let env = TestEnv::new("cfg");
    for (extra, key) in [
        ("concurrency = 0", "routes[0] (crm).concurrency"),
        (
            "rate = { per_second = 0, burst = 5 }",
            "routes[0] (crm).rate.per_second",
        ),
        (
            "[routes.breaker]\nfailures = 0",
            "routes[0] (crm).breaker.failures",
        ),
        (
            "[routes.breaker]\nprobe_after = \"10m\"\nprobe_max = \"1m\"",
            "routes[0] (crm).breaker.probe_max",
        ),
        ("[routes.breaker]\nprobes = 3", "probes"),
    ] {
        let route =
            format!("[[routes]]\nname = \"crm\"\nmatch = [\"*\"]\nhandler = \"log\"\n{extra}\n");
        let (code, stderr) = run_worker(&env, &env.config_toml(&route));
        assert_eq!(code, Some(64), "{extra}: {stderr}");
        assert!(stderr.contains(key), "{extra}: names the key: {stderr}");
    }
}
