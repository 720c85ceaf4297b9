//! The CloudEvents 1.0 envelope every event travels in: the body of every
//! message on the queue, as JSON. The headers beside it are
//! [`crate::message`]'s.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Serialize};

/// `content_type` of every message Sluice publishes.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// What comes between the envelope's other fields and its `data`.
const DATA_KEY: &[u8] = b",\"data\":";

/// A CloudEvents 1.0 structured-mode event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub specversion: String,
    /// The provider's event id (or the body's SHA-256 when it has none).
    pub id: String,
    /// `sluice/<source name>`.
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the gateway received the request, RFC 3339.
    pub time: String,
    pub datacontenttype: String,
    /// The event's JSON data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// Bytes that are not JSON (an unparseable body), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
}

impl Envelope {
    /// An event whose data is JSON.
    pub fn json(
        source: &str,
        id: &str,
        event_type: &str,
        received: SystemTime,
        data: serde_json::Value,
    ) -> Self {
        Self {
            specversion: "1.0".into(),
            id: id.into(),
            source: format!("sluice/{source}"),
            event_type: event_type.into(),
            time: humantime::format_rfc3339_millis(received).to_string(),
            datacontenttype: "application/json".into(),
            data: Some(data),
            data_base64: None,
        }
    }

    /// An event whose data are opaque bytes, kept exactly as received.
    pub fn raw(
        source: &str,
        id: &str,
        event_type: &str,
        received: SystemTime,
        bytes: &[u8],
    ) -> Self {
        Self {
            datacontenttype: "application/octet-stream".into(),
            data: None,
            data_base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ..Self::json(source, id, event_type, received, serde_json::Value::Null)
        }
    }

    /// The JSON bytes that travel on the queue.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising this struct cannot fail: every field is a string or a Value.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The bytes of an event whose data is JSON already serialised, given in
    /// pieces that are spliced in as they are: exactly what
    /// [`Envelope::json`]`(..).to_bytes()` gives for the same data, without
    /// parsing or serialising the data again. So a context shared by many
    /// events is serialised once, not once per event.
    pub fn json_bytes<P: AsRef<[u8]>>(
        source: &str,
        id: &str,
        event_type: &str,
        received: SystemTime,
        data: &[P],
    ) -> Vec<u8> {
        let data_len: usize = data.iter().map(|piece| piece.as_ref().len()).sum();
        let mut bytes = Vec::with_capacity(json_len(source, id, event_type, data_len));
        Self::head(source, id, event_type, received).write_head(&mut bytes);
        for piece in data {
            bytes.extend_from_slice(piece.as_ref());
        }
        bytes.push(b'}');
        bytes
    }

    /// Every field but `data`, which serde writes last.
    fn head(source: &str, id: &str, event_type: &str, received: SystemTime) -> Self {
        Self {
            data: None,
            ..Self::json(source, id, event_type, received, serde_json::Value::Null)
        }
    }

    /// Writes the envelope up to its `data` value: the fields, without the
    /// closing brace, then `,"data":`.
    fn write_head(&self, out: &mut Vec<u8>) {
        // Writing strings into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, self);
        out.pop();
        out.extend_from_slice(DATA_KEY);
    }
}

/// The length in bytes of [`Envelope::json_bytes`] for data of `data_len`
/// bytes, computed without writing it, so a request's fan-out can be sized
/// before it is built. The time does not change it: every envelope's `time`
/// is 24 characters (`2023-11-14T22:13:20.123Z`).
pub fn json_len(source: &str, id: &str, event_type: &str, data_len: usize) -> usize {
    let mut counter = ByteCounter(0);
    let head = Envelope::head(source, id, event_type, UNIX_EPOCH);
    // Counting cannot fail.
    let _ = serde_json::to_writer(&mut counter, &head);
    // Less the closing brace, plus `,"data":`, the data, and the brace again.
    counter.0 - 1 + DATA_KEY.len() + data_len + 1
}

/// A writer that only counts what is written to it.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_json_envelope_is_cloudevents_shaped() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let envelope = Envelope::json(
            "whatzme",
            "id-1",
            "messages.upsert",
            at,
            serde_json::json!({"a": 1}),
        );
        let value: serde_json::Value = serde_json::from_slice(&envelope.to_bytes()).unwrap();
        assert_eq!(value["specversion"], "1.0");
        assert_eq!(value["source"], "sluice/whatzme");
        assert_eq!(value["type"], "messages.upsert");
        assert_eq!(value["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(value["data"]["a"], 1);
        assert!(value.get("data_base64").is_none());
    }

    #[test]
    fn spliced_data_gives_the_bytes_serde_gives_and_the_length_is_known_before() {
        let at = UNIX_EPOCH + Duration::from_millis(1_763_700_001_999);
        let data = serde_json::json!({"a": [1, "x"], "b": {"c": null}, "é": "\"q\""});
        let text = data.to_string();
        let (left, right) = text.split_at(9);
        for id in ["wamid.X:read", "with \"quotes\" and \\", "ünïcode"] {
            let expected = Envelope::json("whatsapp", id, "status.read", at, data.clone());
            let spliced = Envelope::json_bytes("whatsapp", id, "status.read", at, &[left, right]);
            assert_eq!(
                String::from_utf8(spliced.clone()).unwrap(),
                String::from_utf8(expected.to_bytes()).unwrap()
            );
            assert_eq!(
                json_len("whatsapp", id, "status.read", text.len()),
                spliced.len()
            );
        }
    }

    #[test]
    fn every_time_of_this_era_has_the_length_the_sizes_assume() {
        for millis in [0, 1_763_700_001_999, 4_102_444_800_000] {
            let at = UNIX_EPOCH + Duration::from_millis(millis);
            assert_eq!(humantime::format_rfc3339_millis(at).to_string().len(), 24);
        }
    }

    #[test]
    fn raw_bytes_survive_as_base64() {
        let envelope = Envelope::raw("s", "i", "unparseable", UNIX_EPOCH, b"\xff{not json");
        let back: Envelope = serde_json::from_slice(&envelope.to_bytes()).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(back.data_base64.unwrap())
            .unwrap();
        assert_eq!(bytes, b"\xff{not json");
        assert_eq!(back.datacontenttype, "application/octet-stream");
    }
}
