//! `sluice-worker id-digest <id>...` prints the digest log lines carry for
//! each event id, under `telemetry.id_digest_key`; without the key it stops
//! with code 64 and says why, since no digest in the logs could match.

use std::process::Command;

use sluice_shared::id_digest::IdDigester;

use sluice_testkit::TestEnv;
use sluice_testkit::providers::secret_file;

fn id_digest(env: &TestEnv, toml: &str, ids: &[&str]) -> (Option<i32>, String, String) {
    let path = env.dir.path().join("digest.toml");
    std::fs::write(&path, toml).expect("config file");
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-worker"))
        .arg("--config")
        .arg(&path)
        .arg("id-digest")
        .args(ids)
        .output()
        .expect("the worker binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn id_digest_prints_the_digest_of_each_id_under_the_configured_key() {
    let env = TestEnv::new("digest");
    let key = secret_file(&env, "digest.key", "e2e-id-digest-key");
    let toml = format!("[telemetry]\nid_digest_key = \"{key}\"\n");
    let ids = [
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
        "wamid.OUT900:read",
    ];
    let (code, stdout, stderr) = id_digest(&env, &toml, &ids);
    assert_eq!(code, Some(0), "{stderr}");
    let digester = IdDigester::keyed(b"e2e-id-digest-key");
    let expected: Vec<String> = ids
        .iter()
        .map(|id| digester.digest(id).to_string())
        .collect();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected);
    assert!(stderr.is_empty(), "nothing but the digests: {stderr}");
}

#[test]
fn id_digest_without_a_key_stops_with_64_and_names_the_key() {
    let env = TestEnv::new("digest");
    let (code, stdout, stderr) = id_digest(&env, "", &["wamid.X"]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("telemetry.id_digest_key"), "{stderr}");
}
