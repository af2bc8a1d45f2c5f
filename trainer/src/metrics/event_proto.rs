//! The few protobuf messages of a TensorBoard event file, encoded by hand (no protobuf crate):
//!
//! ```text
//! Event      { double wall_time = 1; int64 step = 2;
//!              oneof what { string file_version = 3; Summary summary = 5; SessionLog session_log = 7; } }
//! Summary    { repeated Value value = 1; }
//! Value      { string tag = 1; float simple_value = 2; SummaryMetadata metadata = 9; TensorProto tensor = 8; }
//! SummaryMetadata { PluginData plugin_data = 1; }   PluginData { string plugin_name = 1; }
//! TensorProto { DataType dtype = 1; TensorShapeProto tensor_shape = 2; repeated bytes string_val = 8; }
//! SessionLog { SessionStatus status = 1; }   // START = 1
//! ```
//! Text (the "text" plugin of TensorBoard, shown under its TEXT tab) is a scalar DT_STRING (7)
//! tensor with plugin_name "text", as `tf.summary.text` writes it.
//! (tensorflow/core/util/event.proto, tensorflow/core/framework/summary.proto). A small decoder
//! for the same subset lets tests read back what was written.

/// What one event carries.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum What {
    /// The first event of every file: "brain.Event:2".
    FileVersion(String),
    /// Scalars: (tag, value).
    Scalars(Vec<(String, f32)>),
    /// Text summaries: (tag, UTF-8 text).
    Text(Vec<(String, String)>),
    /// SessionLog START: TensorBoard drops the events of earlier files with step >= this step
    /// (written on resume, so the lost part of a killed run disappears from the charts).
    SessionStart,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub wall_time: f64,
    pub step: i64,
    pub what: What,
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;
/// TensorFlow's DataType of strings.
const DT_STRING: u64 = 7;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, ((field as u64) << 3) | wire as u64);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub(crate) fn encode(e: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    put_key(&mut out, 1, FIXED64);
    out.extend_from_slice(&e.wall_time.to_le_bytes());
    put_key(&mut out, 2, VARINT);
    put_varint(&mut out, e.step as u64); // int64: two's complement, as protobuf does
    match &e.what {
        What::FileVersion(v) => put_bytes(&mut out, 3, v.as_bytes()),
        What::Scalars(values) => {
            let mut summary = Vec::new();
            for (tag, value) in values {
                let mut v = Vec::new();
                put_bytes(&mut v, 1, tag.as_bytes());
                put_key(&mut v, 2, FIXED32);
                v.extend_from_slice(&value.to_le_bytes());
                put_bytes(&mut summary, 1, &v);
            }
            put_bytes(&mut out, 5, &summary);
        }
        What::Text(values) => {
            let mut summary = Vec::new();
            for (tag, text) in values {
                let mut v = Vec::new();
                put_bytes(&mut v, 1, tag.as_bytes());
                let mut plugin = Vec::new();
                put_bytes(&mut plugin, 1, b"text");
                let mut metadata = Vec::new();
                put_bytes(&mut metadata, 1, &plugin);
                put_bytes(&mut v, 9, &metadata);
                let mut tensor = Vec::new();
                put_key(&mut tensor, 1, VARINT);
                put_varint(&mut tensor, DT_STRING);
                put_bytes(&mut tensor, 2, &[]); // scalar shape: no dims
                put_bytes(&mut tensor, 8, text.as_bytes());
                put_bytes(&mut v, 8, &tensor);
                put_bytes(&mut summary, 1, &v);
            }
            put_bytes(&mut out, 5, &summary);
        }
        What::SessionStart => {
            let mut log = Vec::new();
            put_key(&mut log, 1, VARINT);
            put_varint(&mut log, 1);
            put_bytes(&mut out, 7, &log);
        }
    }
    out
}

/// One decoded field: number and value.
enum Field<'a> {
    Varint(u32, u64),
    Fixed64(u32, [u8; 8]),
    Bytes(u32, &'a [u8]),
    Fixed32(u32, [u8; 4]),
}

fn get_varint(b: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or("truncated varint")?;
        *at += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn get_fixed<const N: usize>(b: &[u8], at: &mut usize) -> Result<[u8; N], String> {
    let s = b.get(*at..*at + N).ok_or("truncated fixed-width field")?;
    *at += N;
    let mut x = [0u8; N];
    x.copy_from_slice(s);
    Ok(x)
}

fn fields(b: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let key = get_varint(b, &mut at)?;
        let field = (key >> 3) as u32;
        out.push(match (key & 7) as u8 {
            VARINT => Field::Varint(field, get_varint(b, &mut at)?),
            FIXED64 => Field::Fixed64(field, get_fixed::<8>(b, &mut at)?),
            LEN => {
                let len = get_varint(b, &mut at)? as usize;
                let s = b.get(at..at.saturating_add(len)).ok_or("truncated length-delimited field")?;
                at += len;
                Field::Bytes(field, s)
            }
            FIXED32 => Field::Fixed32(field, get_fixed::<4>(b, &mut at)?),
            w => return Err(format!("unsupported wire type {w} for field {field}")),
        });
    }
    Ok(out)
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|e| e.to_string())
}

/// Decodes the subset above; other fields are ignored, an event without one of the three kinds
/// is an error.
pub(crate) fn decode(b: &[u8]) -> Result<Event, String> {
    let (mut wall_time, mut step, mut what) = (0.0, 0i64, None);
    for f in fields(b)? {
        match f {
            Field::Fixed64(1, x) => wall_time = f64::from_le_bytes(x),
            Field::Varint(2, v) => step = v as i64,
            Field::Bytes(3, s) => what = Some(What::FileVersion(utf8(s)?)),
            Field::Bytes(5, s) => {
                let (mut values, mut texts) = (Vec::new(), Vec::new());
                for value in fields(s)? {
                    if let Field::Bytes(1, v) = value {
                        let (mut tag, mut x, mut text) = (String::new(), None, None);
                        for vf in fields(v)? {
                            match vf {
                                Field::Bytes(1, t) => tag = utf8(t)?,
                                Field::Fixed32(2, b) => x = Some(f32::from_le_bytes(b)),
                                Field::Bytes(8, tensor) => {
                                    for tf in fields(tensor)? {
                                        if let Field::Bytes(8, t) = tf {
                                            text = Some(utf8(t)?);
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                        match (x, text) {
                            (Some(x), _) => values.push((tag, x)),
                            (None, Some(t)) => texts.push((tag, t)),
                            (None, None) => return Err("summary value without simple_value or string tensor".into()),
                        }
                    }
                }
                what = Some(if values.is_empty() && !texts.is_empty() {
                    What::Text(texts)
                } else {
                    What::Scalars(values)
                });
            }
            Field::Bytes(7, s) => {
                let start = fields(s)?.iter().any(|f| matches!(f, Field::Varint(1, 1)));
                what = Some(if start { What::SessionStart } else { return Err("session_log other than START".into()) });
            }
            _ => {}
        }
    }
    Ok(Event { wall_time, step, what: what.ok_or("event without file_version, summary or session_log")? })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_match_hand_encoded_bytes() {
        let e = Event { wall_time: 1.5, step: 300, what: What::Scalars(vec![("a/b".into(), 2.0), ("c".into(), -0.5)]) };
        assert_eq!(decode(&encode(&e)).unwrap(), e);
        let v = Event { wall_time: 0.0, step: 0, what: What::FileVersion("brain.Event:2".into()) };
        let bytes = encode(&v);
        // wall_time: key 0x09 + 8 bytes; step: key 0x10, varint 0; file_version: key 0x1a, len 13.
        assert_eq!(&bytes[..11], &[0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0]);
        assert_eq!(&bytes[11..13], &[0x1a, 13]);
        assert_eq!(&bytes[13..], b"brain.Event:2");
        // step 300 = varint [0xac, 0x02].
        assert_eq!(&encode(&e)[9..12], &[0x10, 0xac, 0x02]);
        let t =
            Event { wall_time: 3.0, step: 50, what: What::Text(vec![("samples/text".into(), "Once upon ✓".into())]) };
        assert_eq!(decode(&encode(&t)).unwrap(), t);
        let s = Event { wall_time: 2.0, step: 41, what: What::SessionStart };
        assert_eq!(decode(&encode(&s)).unwrap(), s);
        assert!(decode(&[0x10]).is_err());
    }
}
