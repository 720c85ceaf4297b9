//! One request per class of bad (or merely odd) input, each against the real
//! binary, each with the status and JSON error code it must get. At the end
//! the work queue must hold exactly the events of the cases that were meant
//! to be accepted: nothing a bad request sent was published.
//! docs/security.md lists the same classes with their answers.

use super::support::*;

/// One class of input and the answer it must get.
struct Case {
    class: &'static str,
    request: Vec<u8>,
    status: u16,
    /// The JSON `error` code; `None` where the HTTP parser itself answers
    /// (no JSON body: the request never reached Sluice's code) or on 200.
    error: Option<&'static str>,
    /// Events this case publishes to the work queue.
    publishes: u32,
    /// Bodies this case keeps in the dead queue (authenticated, unparseable).
    kept: u32,
}

fn case(class: &'static str, request: Vec<u8>, status: u16, error: Option<&'static str>) -> Case {
    Case {
        class,
        request,
        status,
        error,
        publishes: 0,
        kept: 0,
    }
}

/// An authenticated body that is not JSON: 200, kept in the dead queue.
fn kept(class: &'static str, request: Vec<u8>) -> Case {
    Case {
        class,
        request,
        status: 200,
        error: None,
        publishes: 0,
        kept: 1,
    }
}

fn accepted(class: &'static str, request: Vec<u8>, publishes: u32) -> Case {
    Case {
        class,
        request,
        status: 200,
        error: None,
        publishes,
        kept: 0,
    }
}

/// A signed WhatzMeAPI body whose id is the JSON value `id_json`.
fn with_id(id_json: &str) -> Vec<u8> {
    format!(r#"{{"event":"messages.upsert","messages":[{{"key":{{"id":{id_json}}}}}]}}"#)
        .into_bytes()
}

fn signature_cases(run: &str) -> Vec<Case> {
    let body = upsert(&format!("{run}-sig"));
    let hex = sluice_gateway::signature::hmac::hex_hmac_sha256(HMAC_SECRET, &body);
    let sig = |value: &str| post_sized("/webhooks/whatzme", &[header("x-signature", value)], &body);
    let unauthorized = Some("invalid_signature");
    vec![
        case(
            "no signature header",
            post_sized("/webhooks/whatzme", &[], &body),
            401,
            unauthorized,
        ),
        case(
            "a wrong signature",
            sig(&format!("sha256={}", "ab".repeat(32))),
            401,
            unauthorized,
        ),
        case(
            "a signature that is not hex",
            sig(&format!("sha256={}", "zz".repeat(32))),
            401,
            unauthorized,
        ),
        case(
            "a digest of the wrong length",
            sig(&format!("sha256={}", &hex[..40])),
            401,
            unauthorized,
        ),
        case("a digest without its prefix", sig(&hex), 401, unauthorized),
        accepted(
            "an upper-case hex digest",
            sig(&format!("sha256={}", hex.to_uppercase())),
            1,
        ),
        case(
            "two signature headers",
            post_sized(
                "/webhooks/whatzme",
                &[hmac_header(&body), hmac_header(&body)],
                &body,
            ),
            401,
            unauthorized,
        ),
        case(
            "a signature header over 1 KiB",
            sig(&format!("sha256={}", "a".repeat(2000))),
            401,
            unauthorized,
        ),
        case(
            "a flipped body byte",
            post_sized("/webhooks/whatzme", &[hmac_header(&body)], &{
                let mut flipped = body.clone();
                flipped[3] ^= 1;
                flipped
            }),
            401,
            unauthorized,
        ),
        case(
            "a Meta body signed with the wrong app secret",
            post_sized("/webhooks/meta", &[hmac_header(&body)], &body),
            401,
            unauthorized,
        ),
    ]
}

fn standard_cases(run: &str) -> Vec<Case> {
    let body = br#"{"type":"invoice.paid"}"#.to_vec();
    let id = format!("{run}-std");
    let good = standard_headers(&id, &body);
    let replace = |name: &str, value: String| -> Vec<String> {
        good.iter()
            .map(|line| {
                if line.starts_with(name) {
                    header(name, &value)
                } else {
                    line.clone()
                }
            })
            .collect()
    };
    let unauthorized = Some("invalid_signature");
    let many = vec![junk_signature_entry(); 9].join(" ");
    vec![
        case(
            "Standard Webhooks: more than 8 signatures",
            post_sized("/webhooks/std", &replace("webhook-signature", many), &body),
            401,
            unauthorized,
        ),
        case(
            "Standard Webhooks: a stale timestamp",
            post_sized(
                "/webhooks/std",
                &replace("webhook-timestamp", "1614265330".into()),
                &body,
            ),
            401,
            unauthorized,
        ),
        case(
            "Standard Webhooks: a timestamp that is not a number",
            post_sized(
                "/webhooks/std",
                &replace("webhook-timestamp", "soon".into()),
                &body,
            ),
            401,
            unauthorized,
        ),
        case(
            "Standard Webhooks: no v1 entry",
            post_sized(
                "/webhooks/std",
                &replace("webhook-signature", "v2,abc".into()),
                &body,
            ),
            401,
            unauthorized,
        ),
        case(
            "Standard Webhooks: a missing webhook-id",
            post_sized("/webhooks/std", &good[1..], &body),
            401,
            unauthorized,
        ),
        accepted(
            "Standard Webhooks: a correct signature among junk entries",
            post_sized(
                "/webhooks/std",
                &replace(
                    "webhook-signature",
                    format!(
                        "{} {}",
                        junk_signature_entry(),
                        good[2]
                            .trim_end()
                            .split_once(": ")
                            .map(|(_, v)| v)
                            .unwrap_or_default()
                    ),
                ),
                &body,
            ),
            1,
        ),
        case(
            "token: a wrong bearer token",
            post_sized(
                "/webhooks/treble",
                &[header("authorization", "Bearer nope")],
                b"{}",
            ),
            401,
            unauthorized,
        ),
        case(
            "token: no Authorization header",
            post_sized("/webhooks/treble", &[], b"{}"),
            401,
            unauthorized,
        ),
    ]
}

fn routing_cases(run: &str) -> Vec<Case> {
    let body = upsert(&format!("{run}-route"));
    let percent = upsert(&format!("{run}-percent"));
    vec![
        case("an unknown source", signed("/webhooks/nosuch", &body), 404, Some("unknown_source")),
        case("an upper-case source name", signed("/webhooks/WHATZME", &body), 404, Some("unknown_source")),
        case("a percent-encoded invalid UTF-8 source name", signed("/webhooks/%FF%FE", &body), 404, Some("unknown_source")),
        accepted("a percent-encoded source name (the same URL, RFC 3986)", signed("/webhooks/%77hatzme", &percent), 1),
        case("a path with a slash-encoded name", signed("/webhooks/what%2Fzme", &body), 404, Some("unknown_source")),
        case("another path", signed("/admin", &body), 404, Some("not_found")),
        case("a PUT to a webhook", {
            let mut request = signed("/webhooks/whatzme", &body);
            request.splice(0..4, b"PUT".iter().copied());
            request
        }, 405, Some("method_not_allowed")),
        case(
            "raw non-ASCII bytes in the path",
            b"POST /webhooks/wh\xffatzme HTTP/1.1\r\nhost: e\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".to_vec(),
            400,
            None,
        ),
        case("an address outside the source's allow_ips", signed("/webhooks/walled", &body), 403, Some("forbidden_address")),
        case(
            "X-Forwarded-For from a peer that is not a trusted proxy",
            post_sized("/webhooks/walled", &[hmac_header(&body), header("x-forwarded-for", "192.0.2.7")], &body),
            403,
            Some("forbidden_address"),
        ),
        case(
            "a GET handshake from an address outside allow_ips",
            b"GET /webhooks/walled?hub.mode=subscribe HTTP/1.1\r\nhost: e\r\nconnection: close\r\n\r\n".to_vec(),
            403,
            Some("forbidden_address"),
        ),
        case(
            "a Meta handshake with a query that does not decode",
            b"GET /webhooks/meta?hub.mode=%ZZ&hub.challenge=%FF HTTP/1.1\r\nhost: e\r\nconnection: close\r\n\r\n".to_vec(),
            403,
            Some("forbidden"),
        ),
        case("a Meta handshake with a wrong verify token", b"GET /webhooks/meta?hub.mode=subscribe&hub.verify_token=no&hub.challenge=1 HTTP/1.1\r\nhost: e\r\nconnection: close\r\n\r\n".to_vec(), 403, Some("forbidden")),
    ]
}

fn body_cases(run: &str) -> Vec<Case> {
    let limit = 65536;
    let fill = |id: &str, size: usize| {
        let mut body = upsert(id);
        body.resize(size, b' ');
        body
    };
    let at_limit = fill(&format!("{run}-limit"), limit);
    let over = fill(&format!("{run}-over"), limit + 1);
    let mut chunked = Vec::new();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("{:x}\r\n", 32 * 1024).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 32 * 1024));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let small = upsert(&format!("{run}-te"));
    let chunk_of = |body: &[u8]| {
        let mut out = format!("{:x}\r\n", body.len()).into_bytes();
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n0\r\n\r\n");
        out
    };
    vec![
        accepted(
            "a body of exactly the limit",
            signed("/webhooks/whatzme", &at_limit),
            1,
        ),
        case(
            "a body one byte over the limit",
            signed("/webhooks/whatzme", &over),
            413,
            Some("payload_too_large"),
        ),
        case(
            "a chunked body that grows past the limit",
            post(
                "/webhooks/whatzme",
                &[hmac_header(b"x"), header("transfer-encoding", "chunked")],
                &chunked,
            ),
            413,
            Some("payload_too_large"),
        ),
        kept(
            "an empty signed body (kept as unparseable)",
            signed("/webhooks/whatzme", b""),
        ),
        case(
            "an empty unsigned body",
            post_sized("/webhooks/whatzme", &[], b""),
            401,
            Some("invalid_signature"),
        ),
        case(
            "two different Content-Length headers",
            post(
                "/webhooks/whatzme",
                &[
                    hmac_header(&small),
                    header("content-length", "10"),
                    header("content-length", &small.len().to_string()),
                ],
                &small,
            ),
            400,
            None,
        ),
        case(
            "Content-Length with a sign",
            post(
                "/webhooks/whatzme",
                &[
                    hmac_header(&small),
                    header("content-length", &format!("+{}", small.len())),
                ],
                &small,
            ),
            400,
            None,
        ),
        accepted(
            "Transfer-Encoding beside a Content-Length (chunked wins, then the connection closes)",
            post(
                "/webhooks/whatzme",
                &[
                    hmac_header(&small),
                    header("content-length", "3"),
                    header("transfer-encoding", "chunked"),
                ],
                &chunk_of(&small),
            ),
            1,
        ),
        case(
            "Transfer-Encoding that does not end in chunked",
            post(
                "/webhooks/whatzme",
                &[
                    hmac_header(&small),
                    header("transfer-encoding", "chunked, gzip"),
                ],
                &chunk_of(&small),
            ),
            400,
            None,
        ),
        case(
            "a bad chunk size",
            post(
                "/webhooks/whatzme",
                &[hmac_header(&small), header("transfer-encoding", "chunked")],
                b"zz\r\nabc\r\n0\r\n\r\n",
            ),
            400,
            Some("bad_request"),
        ),
        case(
            "an HTTP/2 preface on the HTTP/1.1 port",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            0,
            None,
        ),
        case(
            "more header fields than max_headers",
            post_sized(
                "/webhooks/whatzme",
                &(0..70)
                    .map(|i| header(&format!("x-h{i}"), "v"))
                    .chain([hmac_header(&small)])
                    .collect::<Vec<_>>(),
                &small,
            ),
            431,
            Some("headers_too_large"),
        ),
        case(
            "headers over max_header_bytes",
            post_sized(
                "/webhooks/whatzme",
                &[hmac_header(&small), header("x-pad", &"p".repeat(40 * 1024))],
                &small,
            ),
            431,
            Some("headers_too_large"),
        ),
        case(
            "a head over the parser's 256 KiB",
            post_sized(
                "/webhooks/whatzme",
                &[
                    hmac_header(&small),
                    header("x-pad", &"p".repeat(300 * 1024)),
                ],
                &small,
            ),
            431,
            None,
        ),
    ]
}

fn content_cases(run: &str) -> Vec<Case> {
    let dup_keys = format!(
        r#"{{"event":"messages.upsert","messages":[{{"key":{{"id":"{run}-dup-a"}}}}],"messages":[{{"key":{{"id":"{run}-dup-b"}}}}]}}"#
    )
    .into_bytes();
    let huge_id = format!("\"{run}-{}\"", "h".repeat(10_000));
    vec![
        accepted(
            "a numeric id",
            signed(
                "/webhooks/whatzme",
                &with_id(&format!("{}", run.len() * 1_000_003)),
            ),
            1,
        ),
        accepted(
            "a huge id (hashed)",
            signed("/webhooks/whatzme", &with_id(&huge_id)),
            1,
        ),
        accepted(
            "an id with a control character (hashed)",
            signed(
                "/webhooks/whatzme",
                &with_id(&format!("\"{run}-a\\u0001b\"")),
            ),
            1,
        ),
        accepted(
            "an id with U+202E (hashed)",
            signed(
                "/webhooks/whatzme",
                &with_id(&format!("\"{run}-\\u202Eevil\"")),
            ),
            1,
        ),
        accepted(
            "duplicate JSON keys (the last wins)",
            signed("/webhooks/whatzme", &dup_keys),
            1,
        ),
        kept(
            "not JSON at all (kept as unparseable)",
            signed("/webhooks/whatzme", b"{\"event\": nope"),
        ),
        kept(
            "JSON nested past 128 levels (kept as unparseable)",
            signed(
                "/webhooks/whatzme",
                format!("{}{}", "[".repeat(300), "]".repeat(300)).as_bytes(),
            ),
        ),
        kept(
            "invalid UTF-8 in a JSON string (kept as unparseable)",
            signed("/webhooks/whatzme", b"{\"event\":\"\xff\"}"),
        ),
    ]
}

#[test]
fn every_class_of_bad_input_gets_its_answer_and_publishes_nothing() {
    let gateway = Gateway::start("");
    let run = uuid::Uuid::new_v4().simple().to_string();
    let cases: Vec<Case> = [
        signature_cases(&run),
        standard_cases(&run),
        routing_cases(&run),
        body_cases(&run),
        content_cases(&run),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(cases.len() >= 40, "{} classes", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let answer = exchange(gateway.addr, &case.request);
        let got = (status(&answer), error_code(&answer));
        let want = (case.status, case.error.map(str::to_owned));
        if got != want {
            let head = answer.lines().next().unwrap_or_default().to_owned();
            wrong.push(format!(
                "{}: got {got:?} ({head}), want {want:?}",
                case.class
            ));
        }
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
    // Still serving, and nothing a refused request sent went out.
    let probe = upsert(&format!("{run}-probe"));
    let answer = exchange(gateway.addr, &signed("/webhooks/whatzme", &probe));
    assert_eq!(status(&answer), 200, "{answer}");
    let published: u32 = cases.iter().map(|c| c.publishes).sum::<u32>() + 1;
    let kept: u32 = cases.iter().map(|c| c.kept).sum();
    assert_eq!(kept, 4, "the table's unparseable cases");
    assert_eq!(gateway.queues_then_clean(), (published, kept));
}
