//! The providers of the test fixtures (`tests/fixtures/`): their
//! secrets as `secrets.json` gives them, their source blocks, and sending a
//! request with any headers.

use super::TestEnv;

pub const WA_SECRET: &str = "wa-app-secret-for-tests";
pub const WA_VERIFY: &str = "wa-verify-token";
pub const NOTMETA_SECRET: &str = "notmeta-secret-for-tests";
pub const TREBLE_TOKEN: &str = "treble-token-for-tests";

/// A fixture file's exact bytes.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// Writes a secret into the test's own directory; returns its `file:` reference.
pub fn secret_file(env: &TestEnv, name: &str, value: &str) -> String {
    let path = env.secret_path(name);
    std::fs::write(&path, value).expect("secret file");
    format!("file:{}", path.display())
}

/// `[sources.whatsapp]`, `[sources.notmeta]` (with its challenge) and `[sources.treble]`.
pub fn sources_toml(env: &TestEnv) -> String {
    format!(
        r#"
[sources.whatsapp]
scheme = "whatsapp-cloud"
secrets = ["{wa}"]
verify_token = "{verify}"

[sources.notmeta]
scheme = "hmac-sha256"
secrets = ["{notmeta}"]
header = "X-NotMeta-Signature"
prefix = "sha256="
id_pointer = "/id"
type_pointer = "/type"
challenge_type = "webhook.verified"

[sources.treble]
scheme = "token"
tokens = ["{treble}"]
id_pointer = "/data/message_id"
type_pointer = "/event"
"#,
        wa = secret_file(env, "wa.secret", WA_SECRET),
        verify = secret_file(env, "wa.verify", WA_VERIFY),
        notmeta = secret_file(env, "notmeta.secret", NOTMETA_SECRET),
        treble = secret_file(env, "treble.token", TREBLE_TOKEN),
    )
}

/// POSTs `body` with `headers`; returns the status and the answer's text.
pub async fn send(url: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut request = reqwest::Client::new().post(url).body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}
