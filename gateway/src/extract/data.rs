//! An event's data: JSON already serialised, in pieces.
//!
//! A request that fans out into many events (a WhatsApp batch, a `json`
//! source's `items_pointer`) gives each event the context it came in: Meta's
//! envelope with a change's `metadata` and `contacts`, or the rest of the
//! body. That context is serialised once, into a [`Template`] whose pieces
//! every event of the change shares (a `Bytes` clone is a reference count),
//! and each event adds only its own item. The envelope is then written by
//! splicing the pieces ([`sluice_shared::envelope::Envelope::json_bytes`]):
//! nothing is serialised twice, and a request's events take memory in
//! proportion to its body, however many there are.
//!
//! The bytes are serde_json's compact output for the same value (keys in its
//! maps' order), so an event's data is the same whichever way it was built.

use bytes::Bytes;
use serde_json::Value;

/// An event's data as JSON bytes, in pieces to be written one after the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    pieces: Vec<Bytes>,
    len: usize,
}

impl EventData {
    /// The data of an event that shares nothing: `value` serialised once.
    pub fn from_value(value: &Value) -> Self {
        Self::from_pieces(vec![serialise(value)])
    }

    fn from_pieces(pieces: Vec<Bytes>) -> Self {
        let len = pieces.iter().map(Bytes::len).sum();
        Self { pieces, len }
    }

    /// The length of the JSON in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The JSON, in the order to write it.
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// The JSON in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.len);
        for piece in &self.pieces {
            bytes.extend_from_slice(piece);
        }
        bytes
    }

    /// The data parsed back, for the few callers that read into it (a
    /// challenge's value) and for tests.
    pub fn to_value(&self) -> serde_json::Result<Value> {
        serde_json::from_slice(&self.to_vec())
    }
}

/// A value serialised once with holes, each to be filled per event.
#[derive(Debug, Clone)]
pub struct Template {
    /// The bytes around the holes: one more than there are holes.
    segments: Vec<Bytes>,
    /// For each hole in document order, its index in the caller's list.
    order: Vec<usize>,
}

impl Template {
    /// Serialises `value` as serde_json's compact writer would, except that
    /// each of `holes`, which must be nodes of `value` itself (found with
    /// `value.pointer(..)`), is left out: its key is written, its value is
    /// what [`Template::fill`] is given for it. A hole that is not a node of
    /// `value` is never cut, and its fill never written.
    pub fn new(value: &Value, holes: &[&Value]) -> Self {
        let mut writer = HoleWriter {
            out: Vec::new(),
            cuts: Vec::new(),
            holes,
        };
        writer.write(value);
        let HoleWriter { out, cuts, .. } = writer;
        let out = Bytes::from(out);
        let mut segments = Vec::with_capacity(cuts.len() + 1);
        let mut start = 0;
        let mut order = Vec::with_capacity(cuts.len());
        for (at, hole) in cuts {
            segments.push(out.slice(start..at));
            order.push(hole);
            start = at;
        }
        segments.push(out.slice(start..));
        Self { segments, order }
    }

    /// One event's data: the template with `fills[i]` (JSON) in `holes[i]`.
    pub fn fill(&self, fills: &[&Bytes]) -> EventData {
        let mut pieces = Vec::with_capacity(self.segments.len() * 2);
        for (segment, hole) in self.segments.iter().zip(&self.order) {
            pieces.push(segment.clone());
            if let Some(fill) = fills.get(*hole) {
                pieces.push((*fill).clone());
            }
        }
        if let Some(last) = self.segments.last() {
            pieces.push(last.clone());
        }
        pieces.retain(|piece| !piece.is_empty());
        EventData::from_pieces(pieces)
    }
}

/// Writes a value the way serde_json's compact writer does, noting where
/// each hole falls.
struct HoleWriter<'a> {
    out: Vec<u8>,
    /// Byte offset and hole index of every hole met so far.
    cuts: Vec<(usize, usize)>,
    holes: &'a [&'a Value],
}

impl HoleWriter<'_> {
    fn write(&mut self, value: &Value) {
        if let Some(hole) = self.holes.iter().position(|h| std::ptr::eq(*h, value)) {
            self.cuts.push((self.out.len(), hole));
            return;
        }
        match value {
            Value::Object(map) => {
                self.out.push(b'{');
                for (index, (key, member)) in map.iter().enumerate() {
                    if index > 0 {
                        self.out.push(b',');
                    }
                    self.scalar(key);
                    self.out.push(b':');
                    self.write(member);
                }
                self.out.push(b'}');
            }
            Value::Array(items) => {
                self.out.push(b'[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        self.out.push(b',');
                    }
                    self.write(item);
                }
                self.out.push(b']');
            }
            scalar => self.scalar(scalar),
        }
    }

    fn scalar(&mut self, value: &impl serde::Serialize) {
        // Writing a string, number, bool or null into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.out, value);
    }
}

/// `value` as compact JSON.
pub fn serialise<T: serde::Serialize + ?Sized>(value: &T) -> Bytes {
    // A Value (or a slice of them) always serialises: its map keys are strings.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_template_filled_gives_what_serde_gives_for_the_whole_value() {
        let mut value = json!({
            "z": 1,
            "value": {"b": "x", "contacts": null, "m": [{"k": "v"}], "messages": null},
            "a": [true, null, 2.5, "é\"\n"]
        });
        let contacts = json!([{"wa_id": "1"}]);
        let messages = json!([{"id": "wamid.1", "text": {"body": "hi"}}]);
        let template = {
            let holes = [
                value.pointer("/value/messages").unwrap(),
                value.pointer("/value/contacts").unwrap(),
            ];
            Template::new(&value, &holes)
        };
        let fills = [serialise(&messages), serialise(&contacts)];
        let data = template.fill(&[&fills[0], &fills[1]]);
        value["value"]["messages"] = messages;
        value["value"]["contacts"] = contacts;
        assert_eq!(data.to_vec(), value.to_string().into_bytes());
        assert_eq!(data.len(), value.to_string().len());
        assert_eq!(data.to_value().unwrap(), value);
    }

    #[test]
    fn a_hole_in_an_array_or_at_the_root_is_filled_too() {
        let value = json!({"items": [1, [], 3]});
        let template = Template::new(&value, &[value.pointer("/items/1").unwrap()]);
        let data = template.fill(&[&Bytes::from_static(b"[\"x\"]")]);
        assert_eq!(data.to_vec(), br#"{"items":[1,["x"],3]}"#);
        let root = json!([]);
        let data = Template::new(&root, &[&root]).fill(&[&Bytes::from_static(b"[7]")]);
        assert_eq!(data.to_vec(), b"[7]");
    }

    #[test]
    fn a_template_shares_its_context_with_every_event_instead_of_copying_it() {
        let value = json!({"context": "c".repeat(10_000), "items": []});
        let template = Template::new(&value, &[value.pointer("/items").unwrap()]);
        let one = template.fill(&[&Bytes::from_static(b"[1]")]);
        let two = template.fill(&[&Bytes::from_static(b"[2]")]);
        let shared = one.pieces()[0].as_ptr();
        assert!(one.pieces()[0].len() > 10_000);
        assert_eq!(two.pieces()[0].as_ptr(), shared, "one copy of the context");
    }
}
