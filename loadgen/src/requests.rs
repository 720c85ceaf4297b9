//! Pre-signed requests, built before the clock starts so that signing never
//! limits the rate. Each kind mirrors a real sender: a WhatzMeAPI-style
//! `hmac-sha256` POST of one message, or a Meta WhatsApp Cloud batch of 1 to
//! 1,000 updates. A chosen share repeats an earlier body (a provider retry).

use bytes::Bytes;
use sluice_gateway::signature::hex_hmac_sha256;

/// One request, ready to send.
#[derive(Clone)]
pub struct Prepared {
    pub body: Bytes,
    pub header: (&'static str, String),
}

/// What to send.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// One WhatzMeAPI `messages.upsert` per request (`X-Signature: sha256=<hex>`).
    Hmac,
    /// A WhatsApp Cloud batch of `--batch` messages per request (`X-Hub-Signature-256`).
    Whatsapp,
}

pub struct Plan {
    pub kind: Kind,
    pub count: usize,
    pub batch: usize,
    /// Share of requests that repeat an earlier one, 0.0 to 1.0.
    pub duplicates: f64,
    pub secret: String,
    /// Makes ids unique to this run.
    pub run_id: String,
}

impl Plan {
    /// `count` requests; every `1/duplicates`-th one repeats the one before it.
    pub fn build(&self) -> Vec<Prepared> {
        let every = if self.duplicates > 0.0 {
            (1.0 / self.duplicates).round().max(1.0) as usize
        } else {
            0
        };
        let mut out: Vec<Prepared> = Vec::with_capacity(self.count);
        for i in 0..self.count {
            if every > 0 && i > 0 && i % every == 0 {
                let again = out[i - 1].clone();
                out.push(again);
                continue;
            }
            out.push(self.one(i));
        }
        out
    }

    fn one(&self, i: usize) -> Prepared {
        let (body, header_name) = match self.kind {
            Kind::Hmac => (upsert(&format!("{}-{i}", self.run_id)), "X-Signature"),
            Kind::Whatsapp => (
                whatsapp_batch(&format!("{}-{i}", self.run_id), self.batch),
                "X-Hub-Signature-256",
            ),
        };
        let signature = format!("sha256={}", hex_hmac_sha256(&self.secret, body.as_bytes()));
        Prepared {
            body: Bytes::from(body),
            header: (header_name, signature),
        }
    }
}

/// A WhatzMeAPI `messages.upsert` for one message: the closed loop's body, and
/// the floor's event data, so both publish messages of the same size.
pub fn upsert(id: &str) -> String {
    format!(
        r#"{{"event":"messages.upsert","messages":[{{"key":{{"id":"{id}","fromMe":false,"remoteJid":"5215500000000@s.whatsapp.net"}},"message":{{"conversation":"load test message"}}}}]}}"#
    )
}

/// A Meta batch: one entry, one change, `size` text messages.
pub fn whatsapp_batch(prefix: &str, size: usize) -> String {
    let messages: Vec<String> = (0..size)
        .map(|n| {
            format!(
                r#"{{"from":"5215500000001","id":"wamid.{prefix}-{n}","timestamp":"1763700001","type":"text","text":{{"body":"load test {n}"}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"200000000000001","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550001111","phone_number_id":"110000000000001"}},"contacts":[{{"profile":{{"name":"Load"}},"wa_id":"5215500000001"}}],"messages":[{}]}}}}]}}]}}"#,
        messages.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(kind: Kind, count: usize, duplicates: f64) -> Plan {
        Plan {
            kind,
            count,
            batch: 3,
            duplicates,
            secret: "s".into(),
            run_id: "run".into(),
        }
    }

    #[test]
    fn a_fifth_of_duplicates_repeats_every_fifth_request() {
        let requests = plan(Kind::Hmac, 21, 0.2).build();
        assert_eq!(requests.len(), 21);
        assert_eq!(requests[5].body, requests[4].body);
        assert_ne!(requests[4].body, requests[3].body);
        let unique: std::collections::HashSet<_> =
            requests.iter().map(|r| r.body.clone()).collect();
        assert_eq!(
            unique.len(),
            17,
            "requests 5, 10, 15 and 20 repeat the one before"
        );
    }

    #[test]
    fn each_request_is_signed_over_its_exact_body() {
        for request in plan(Kind::Whatsapp, 2, 0.0).build() {
            let expected = format!("sha256={}", hex_hmac_sha256("s", &request.body));
            assert_eq!(request.header, ("X-Hub-Signature-256", expected));
            let batch: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
            let messages = &batch["entry"][0]["changes"][0]["value"]["messages"];
            assert_eq!(messages.as_array().map(Vec::len), Some(3));
        }
    }
}
