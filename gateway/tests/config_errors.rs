//! A bad config stops the gateway before it serves: exit code 64 and a
//! message that names the key and what to do.

use std::process::Command;

fn run_gateway(toml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, toml).expect("config file");
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-gateway"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("the gateway binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const SOURCE: &str = r#"
[gateway]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[sources.whatzme]
scheme = "hmac-sha256"
secrets = ["env:SLUICE_TEST_SURELY_UNSET_SECRET"]
"#;

#[test]
fn a_missing_secret_stops_the_gateway_and_names_the_variable() {
    let (code, stderr) = run_gateway(SOURCE);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("sources.whatzme.secrets[0]"),
        "names the key: {stderr}"
    );
    assert!(
        stderr.contains("SLUICE_TEST_SURELY_UNSET_SECRET"),
        "names the variable: {stderr}"
    );
}

#[test]
fn an_unknown_scheme_stops_the_gateway_and_lists_the_known_ones() {
    let (code, stderr) = run_gateway(&SOURCE.replace("hmac-sha256", "md5"));
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("md5") && stderr.contains("hmac-sha256"),
        "{stderr}"
    );
    assert!(stderr.contains("scheme"), "names the key: {stderr}");
}

#[test]
fn a_key_of_another_scheme_stops_the_gateway_naming_the_key_and_the_source() {
    let (code, stderr) = run_gateway(&format!("{SOURCE}tolerance = \"5m\"\n"));
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("config key `sources.whatzme.tolerance`"),
        "names the key and the source: {stderr}"
    );
    assert!(
        stderr.contains("scheme hmac-sha256 does not read `tolerance`")
            && stderr.contains("remove it"),
        "says why and what to do: {stderr}"
    );
    assert!(
        !stderr.contains("SLUICE_TEST_SURELY_UNSET_SECRET"),
        "refused before any secret is read: {stderr}"
    );
}

#[test]
fn a_config_file_that_does_not_exist_is_named() {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-gateway"))
        .args(["--config", "/nonexistent/sluice.toml"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/sluice.toml"));
}
