//! Avro object container files as IoT Hub routing to storage and Event Hubs
//! Capture write them: records with `EnqueuedTimeUtc`, `Properties`,
//! `SystemProperties` and `Body` (the message bytes: a hubprobe report in UTF-8
//! JSON, gzip-compressed or not).
//!
//! The container framing (header, blocks, sync markers) is read here so that every
//! size is checked before anything is allocated or inflated: a block longer than
//! [`MAX_BLOCK_BYTES`], compressed or not, is a problem at its place, not an
//! allocation. The schema and the records are decoded by `apache-avro`.

use std::collections::HashMap;
use std::io::Read;

use apache_avro::types::Value;
use apache_avro::Schema;

/// Avro object container magic.
pub const MAGIC: &[u8; 4] = b"Obj\x01";
/// The system property naming the sending device: on the Event Hubs-compatible
/// endpoint (and so in Event Hubs Capture) and in IoT Hub routing to storage.
pub const DEVICE_KEYS: [&str; 2] = ["iothub-connection-device-id", "connectionDeviceId"];
/// The largest block (its bytes as stored, and inflated) read.
pub const MAX_BLOCK_BYTES: usize = 32 << 20;
/// The largest string, bytes value or map/array length decoded in a record (an IoT
/// Hub message is at most 256 KiB): `apache-avro` reserves room by the declared
/// count, so the count is bounded here.
const MAX_ITEM: usize = 1 << 20;
/// The most records a block may hold. A block is decoded whole on a parser
/// thread, so this bounds the messages it holds at once (real files have a few
/// thousand a block at most; the smallest record is a few bytes, so without it a
/// 32 MiB block could hold millions).
pub const MAX_BLOCK_RECORDS: u64 = 100_000;
/// The largest header (schema and metadata) read.
const MAX_HEADER_BYTES: usize = 1 << 20;

/// Why a container cannot be read (on): a problem at the message where it broke.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    /// Reading failed.
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
    /// The file ends inside the header or a block.
    #[error("truncated Avro file ({0})")]
    Truncated(&'static str),
    /// The bytes are not what the container format says.
    #[error("not a valid Avro container: {0}")]
    Invalid(String),
}

/// One message of the container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    /// Application properties (`hubprobe=report` marks a report).
    pub properties: HashMap<String, String>,
    /// System properties (`iothub-connection-device-id` …).
    pub system: HashMap<String, String>,
    /// The body bytes (`None`: the record has no body).
    pub body: Option<Vec<u8>>,
}

impl Message {
    /// True when the message is marked as a hubprobe report.
    pub fn is_report(&self) -> bool {
        self.properties
            .get("hubprobe")
            .is_some_and(|v| v == "report")
    }
    /// The device that sent it, as the hub saw it.
    pub fn device(&self) -> Option<&str> {
        DEVICE_KEYS
            .iter()
            .find_map(|k| self.system.get(*k))
            .map(String::as_str)
    }
}

/// A block's compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Stored as is.
    Null,
    /// Raw deflate (RFC 1951).
    Deflate,
}

/// One block of a container as stored: framing checked (its size bounded, its
/// sync marker), not yet inflated or decoded. Decoding ([`RawBlock::messages`])
/// may run on another thread than the framing.
#[derive(Debug)]
pub struct RawBlock {
    /// The container's schema.
    pub schema: std::sync::Arc<Schema>,
    /// The block's codec.
    pub codec: Codec,
    /// Records the block says it holds.
    pub count: u64,
    /// The bytes as stored.
    pub data: Vec<u8>,
}

impl RawBlock {
    /// Inflates the block and decodes its records: each message, or the error
    /// where it broke (the last item then; the messages before it stand).
    pub fn messages(&self) -> Vec<Result<Message, AvroError>> {
        let data = match inflate(self.codec, &self.data) {
            Ok(d) => d,
            Err(e) => return vec![Err(e)],
        };
        // A record takes at least one byte: a count above the bytes is a lie.
        let count = self.count;
        if count > data.len() as u64 && !data.is_empty() || count > 0 && data.is_empty() {
            return vec![Err(AvroError::Invalid(format!(
                "block of {count} records in {} bytes",
                data.len()
            )))];
        }
        let mut cursor = std::io::Cursor::new(&data[..]);
        let mut out = Vec::with_capacity((count as usize).min(1024));
        for _ in 0..count {
            match apache_avro::from_avro_datum(&self.schema, &mut cursor, None) {
                Ok(v) => out.push(Ok(message(v))),
                Err(e) => {
                    out.push(Err(AvroError::Invalid(format!("record: {e}"))));
                    break;
                }
            }
        }
        out
    }
}

fn inflate(codec: Codec, data: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, AvroError> {
    match codec {
        Codec::Null => Ok(std::borrow::Cow::Borrowed(data)),
        Codec::Deflate => {
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(data)
                .take(MAX_BLOCK_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| AvroError::Invalid(format!("deflate: {e}")))?;
            if out.len() > MAX_BLOCK_BYTES {
                return Err(AvroError::Invalid(format!(
                    "block inflates past {} MiB",
                    MAX_BLOCK_BYTES >> 20
                )));
            }
            Ok(std::borrow::Cow::Owned(out))
        }
    }
}

/// Reads an Avro object container, block by block.
pub struct Container<R> {
    r: R,
    schema: std::sync::Arc<Schema>,
    codec: Codec,
    sync: [u8; 16],
    /// The current block's messages not yet given (in reverse order).
    pending: Vec<Result<Message, AvroError>>,
    /// The file ended inside the sync marker after a whole block: its records are
    /// given, then this.
    ends_early: bool,
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], what: &'static str) -> Result<(), AvroError> {
    match r.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(AvroError::Truncated(what)),
        Err(e) => Err(AvroError::Io(e)),
    }
}

/// A zig-zag varint `long`; `Ok(None)` at a clean end of input.
fn read_long(r: &mut impl Read, what: &'static str) -> Result<Option<i64>, AvroError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let mut b = [0u8; 1];
        match r.read(&mut b) {
            Ok(0) if i == 0 => return Ok(None),
            Ok(0) => return Err(AvroError::Truncated(what)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(AvroError::Io(e)),
        }
        v |= ((b[0] & 0x7f) as u64) << (7 * i);
        if b[0] & 0x80 == 0 {
            return Ok(Some(((v >> 1) as i64) ^ -((v & 1) as i64)));
        }
    }
    Err(AvroError::Invalid(format!(
        "{what}: varint longer than 10 bytes"
    )))
}

fn need_long(r: &mut impl Read, what: &'static str) -> Result<i64, AvroError> {
    read_long(r, what)?.ok_or(AvroError::Truncated(what))
}

/// A length, checked against `max` before anything is allocated.
fn read_len(r: &mut impl Read, max: usize, what: &'static str) -> Result<usize, AvroError> {
    let n = need_long(r, what)?;
    match usize::try_from(n) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(AvroError::Invalid(format!(
            "{what} of {n} bytes (at most {max} are read)"
        ))),
    }
}

fn read_bytes(r: &mut impl Read, max: usize, what: &'static str) -> Result<Vec<u8>, AvroError> {
    let n = read_len(r, max, what)?;
    let mut v = vec![0u8; n];
    read_exact_or(r, &mut v, what)?;
    Ok(v)
}

impl<R: Read> Container<R> {
    /// Reads the header (magic, metadata with the schema and codec, sync marker).
    pub fn open(mut r: R) -> Result<Container<R>, AvroError> {
        let mut magic = [0u8; 4];
        read_exact_or(&mut r, &mut magic, "header")?;
        if &magic != MAGIC {
            return Err(AvroError::Invalid("no Avro magic".into()));
        }
        let mut meta: HashMap<String, Vec<u8>> = HashMap::new();
        let mut header_bytes = 0usize;
        loop {
            let mut count = need_long(&mut r, "header")?;
            if count == 0 {
                break;
            }
            if count < 0 {
                count = count.checked_neg().unwrap_or(0);
                need_long(&mut r, "header")?; // the block's byte size
            }
            for _ in 0..count {
                let k = read_bytes(&mut r, MAX_HEADER_BYTES, "header key")?;
                let v = read_bytes(&mut r, MAX_HEADER_BYTES, "header value")?;
                header_bytes += k.len() + v.len();
                if header_bytes > MAX_HEADER_BYTES || meta.len() > 10_000 {
                    return Err(AvroError::Invalid("header larger than 1 MiB".into()));
                }
                meta.insert(String::from_utf8_lossy(&k).into_owned(), v);
            }
        }
        let mut sync = [0u8; 16];
        read_exact_or(&mut r, &mut sync, "header")?;
        let schema = meta
            .get("avro.schema")
            .ok_or_else(|| AvroError::Invalid("no avro.schema in the header".into()))?;
        let schema = Schema::parse_str(&String::from_utf8_lossy(schema))
            .map_err(|e| AvroError::Invalid(format!("schema: {e}")))?;
        check_shape(&schema)?;
        // Before anything is decoded (the library keeps the first value it is given).
        apache_avro::max_allocation_bytes(MAX_ITEM);
        let codec = match meta.get("avro.codec").map(|c| c.as_slice()) {
            None | Some(b"null") | Some(b"") => Codec::Null,
            Some(b"deflate") => Codec::Deflate,
            Some(other) => {
                return Err(AvroError::Invalid(format!(
                    "codec {:?} is not read (null and deflate are)",
                    String::from_utf8_lossy(other)
                )))
            }
        };
        Ok(Container {
            r,
            schema: std::sync::Arc::new(schema),
            codec,
            sync,
            pending: Vec::new(),
            ends_early: false,
        })
    }

    /// Reads the next block as stored (`Ok(None)` at the end of the file). After
    /// a file that ends inside a block's sync marker, the block is given and the
    /// next call says the file is truncated.
    pub fn next_raw_block(&mut self) -> Result<Option<RawBlock>, AvroError> {
        if self.ends_early {
            return Err(AvroError::Truncated("in the last sync marker"));
        }
        let Some(count) = read_long(&mut self.r, "block")? else {
            return Ok(None);
        };
        let count = u64::try_from(count)
            .ok()
            .filter(|n| *n <= MAX_BLOCK_RECORDS)
            .ok_or_else(|| {
                AvroError::Invalid(format!(
                    "block of {count} records (at most {MAX_BLOCK_RECORDS} are read)"
                ))
            })?;
        let data = read_bytes(&mut self.r, MAX_BLOCK_BYTES, "block")?;
        let mut sync = [0u8; 16];
        match read_exact_or(&mut self.r, &mut sync, "sync marker") {
            // The block's bytes are whole: keep its records.
            Err(AvroError::Truncated(_)) => self.ends_early = true,
            Err(e) => return Err(e),
            Ok(()) if sync != self.sync => {
                return Err(AvroError::Invalid("block without its sync marker".into()))
            }
            Ok(()) => {}
        }
        Ok(Some(RawBlock {
            schema: self.schema.clone(),
            codec: self.codec,
            count,
            data,
        }))
    }

    /// The next message, `Ok(None)` at the end of the file (blocks decoded here,
    /// one after the other).
    pub fn next_message(&mut self) -> Result<Option<Message>, AvroError> {
        while self.pending.is_empty() {
            match self.next_raw_block()? {
                Some(b) => {
                    self.pending = b.messages();
                    self.pending.reverse();
                }
                None => return Ok(None),
            }
        }
        self.pending.pop().transpose()
    }
}

/// The records must be of a flat shape (the IoT Hub and Event Hubs schemas are):
/// fields of primitives, maps of primitives and unions of them. Nested
/// collections are refused, so that what the decoder reserves stays bounded.
fn check_shape(schema: &Schema) -> Result<(), AvroError> {
    fn primitive(s: &Schema) -> bool {
        matches!(
            s,
            Schema::Null
                | Schema::Boolean
                | Schema::Int
                | Schema::Long
                | Schema::Float
                | Schema::Double
                | Schema::Bytes
                | Schema::String
        )
    }
    fn scalar(s: &Schema) -> bool {
        match s {
            Schema::Union(u) => u.variants().iter().all(primitive),
            s => primitive(s),
        }
    }
    let Schema::Record(r) = schema else {
        return Err(AvroError::Invalid(
            "the schema is not a record (IoT Hub and Event Hubs write records)".into(),
        ));
    };
    for f in &r.fields {
        let ok = match &f.schema {
            Schema::Map(m) => scalar(&m.types),
            s => scalar(s),
        };
        if !ok {
            return Err(AvroError::Invalid(format!(
                "field {:?} is not of the shape IoT Hub and Event Hubs write (primitives and maps of them)",
                f.name
            )));
        }
    }
    Ok(())
}

/// A property value as text (Event Hubs Capture writes unions of long, double,
/// string and bytes).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Long(n) => Some(n.to_string()),
        Value::Int(n) => Some(n.to_string()),
        Value::Double(x) => Some(x.to_string()),
        Value::Boolean(b) => Some(b.to_string()),
        Value::Union(_, inner) => text(inner),
        _ => None,
    }
}

fn map(v: &Value) -> HashMap<String, String> {
    match v {
        Value::Map(m) => m
            .iter()
            .filter_map(|(k, v)| text(v).map(|t| (k.clone(), t)))
            .collect(),
        Value::Union(_, inner) => map(inner),
        _ => HashMap::new(),
    }
}

fn message(v: Value) -> Message {
    let mut m = Message::default();
    let Value::Record(fields) = v else {
        return m;
    };
    for (name, v) in fields {
        match name.as_str() {
            "Properties" => m.properties = map(&v),
            "SystemProperties" => m.system = map(&v),
            "Body" => {
                m.body = match v {
                    Value::Bytes(b) => Some(b),
                    Value::Union(_, inner) => match *inner {
                        Value::Bytes(b) => Some(b),
                        Value::String(s) => Some(s.into_bytes()),
                        _ => None,
                    },
                    Value::String(s) => Some(s.into_bytes()),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_are_zigzag_varints() {
        let dec = |b: &[u8]| read_long(&mut &b[..], "x").unwrap();
        assert_eq!(dec(&[0x00]), Some(0));
        assert_eq!(dec(&[0x01]), Some(-1));
        assert_eq!(dec(&[0x02]), Some(1));
        assert_eq!(dec(&[0xac, 0x02]), Some(150));
        assert_eq!(dec(&[]), None);
        assert!(read_long(&mut &[0x80u8][..], "x").is_err());
        assert!(read_long(&mut &[0xffu8; 11][..], "x").is_err());
    }

    fn long(n: i64) -> Vec<u8> {
        let mut v = ((n << 1) ^ (n >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes(b: &[u8]) -> Vec<u8> {
        [long(b.len() as i64), b.to_vec()].concat()
    }

    /// A container header with this schema and no codec.
    fn header(schema: &str) -> Vec<u8> {
        let mut h = MAGIC.to_vec();
        h.extend(long(1));
        h.extend(bytes(b"avro.schema"));
        h.extend(bytes(schema.as_bytes()));
        h.extend(long(0));
        h.extend([7u8; 16]);
        h
    }

    const ROUTING: &str = r#"{"type":"record","name":"Message","fields":[
        {"name":"EnqueuedTimeUtc","type":"string"},
        {"name":"Properties","type":{"type":"map","values":"string"}},
        {"name":"SystemProperties","type":{"type":"map","values":"string"}},
        {"name":"Body","type":["null","bytes"]}]}"#;

    #[test]
    fn hostile_containers_are_refused_not_allocated() {
        // Nested collections in the schema.
        let nested = r#"{"type":"record","name":"M","fields":[
            {"name":"a","type":{"type":"array","items":{"type":"array","items":"long"}}}]}"#;
        let e = Container::open(&header(nested)[..]).err().unwrap();
        assert!(e.to_string().contains("shape"), "{e}");
        // A block claiming 2^40 bytes.
        let mut f = header(ROUTING);
        f.extend(long(1));
        f.extend(long(1 << 40));
        let mut c = Container::open(&f[..]).unwrap();
        let e = c.next_message().unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
        // More records a block than are read at once, before its bytes are read.
        let mut f = header(ROUTING);
        f.extend(long(MAX_BLOCK_RECORDS as i64 + 1));
        f.extend(long(1 << 40));
        let e = Container::open(&f[..]).unwrap().next_message().unwrap_err();
        assert!(e.to_string().contains("records (at most"), "{e}");
        // More records than bytes.
        let mut f = header(ROUTING);
        f.extend(long(50_000));
        f.extend(bytes(&[0u8; 8]));
        f.extend([7u8; 16]);
        let e = Container::open(&f[..]).unwrap().next_message().unwrap_err();
        assert!(e.to_string().contains("records in"), "{e}");
        // A record whose map claims a billion entries in a small block.
        let mut rec = bytes(b"2026-11-26T00:00:00Z");
        rec.extend(long(1_000_000_000));
        rec.extend([0u8; 16]);
        let mut f = header(ROUTING);
        f.extend(long(1));
        f.extend(bytes(&rec));
        f.extend([7u8; 16]);
        let e = Container::open(&f[..]).unwrap().next_message().unwrap_err();
        assert!(matches!(e, AvroError::Invalid(_)), "{e}");
        // A wrong sync marker.
        let mut f = header(ROUTING);
        f.extend(long(1));
        f.extend(bytes(&[0u8; 8]));
        f.extend([9u8; 16]);
        let e = Container::open(&f[..]).unwrap().next_message().unwrap_err();
        assert!(e.to_string().contains("sync"), "{e}");
    }

    #[test]
    fn a_huge_declared_size_is_refused_before_allocating() {
        // magic, a header map of one entry whose key claims 2^62 bytes.
        let mut b = MAGIC.to_vec();
        b.push(0x02); // one entry
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        let e = Container::open(&b[..]).err().unwrap();
        assert!(matches!(e, AvroError::Invalid(_)), "{e}");
    }
}
