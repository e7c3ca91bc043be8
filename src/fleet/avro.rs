//! Avro object container files as IoT Hub routing to storage and Event Hubs
//! Capture write them: records with `EnqueuedTimeUtc`, `Properties`,
//! `SystemProperties` and `Body` (the message bytes: a hubprobe report in UTF-8
//! JSON, gzip-compressed or not).
//!
//! The container framing (header, blocks, sync markers) is read here so that every
//! size is checked before anything is allocated or inflated: a block longer than
//! [`MAX_BLOCK_BYTES`], compressed or not, is a problem at its place, not an
//! allocation. The schema is parsed by `apache-avro`.
//!
//! The records are decoded here, by [`RawBlock::each`], borrowing from the block:
//! the shape [`check_shape`] accepts (fields of primitives, maps of primitives,
//! unions of them, as IoT Hub and Event Hubs write) is decoded without allocating,
//! each body a slice of the block. `apache-avro`'s own decoding
//! ([`RawBlock::messages`]) builds an owned value tree of every record (each map a
//! `HashMap`, each string and body a copy), which made the Avro path half as fast
//! per report as NDJSON; it stays as the reference the tests compare with.

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

/// One message, borrowed from its block: what the fleet summary needs of it.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRef<'a> {
    /// The `hubprobe` application property is `report`.
    pub report: bool,
    /// The device that sent it, as the hub saw it ([`DEVICE_KEYS`], in that order
    /// of preference).
    pub device: Option<std::borrow::Cow<'a, str>>,
    /// The body bytes (`None`: the record has no body).
    pub body: Option<&'a [u8]>,
}

/// Where a container's bytes come from: a stream, each block's bytes read into a
/// buffer of their own ([`Stream`]), or a mapped file, a block a range of the map.
pub trait BlockSource: Read {
    /// A block's bytes.
    type Block: AsRef<[u8]>;
    /// The next `n` bytes (`n` already checked against [`MAX_BLOCK_BYTES`]).
    fn block(&mut self, n: usize) -> Result<Self::Block, AvroError>;
}

/// A container read from a stream.
pub struct Stream<R>(pub R);

impl<R: Read> Read for Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> BlockSource for Stream<R> {
    type Block = Vec<u8>;
    fn block(&mut self, n: usize) -> Result<Vec<u8>, AvroError> {
        let mut v = vec![0u8; n];
        read_exact_or(&mut self.0, &mut v, "block")?;
        Ok(v)
    }
}

/// One block of a container as stored: framing checked (its size bounded, its
/// sync marker), not yet inflated or decoded. Decoding ([`RawBlock::each`]) may
/// run on another thread than the framing.
#[derive(Debug)]
pub struct RawBlock<B> {
    /// The container's schema.
    pub schema: std::sync::Arc<Schema>,
    plan: std::sync::Arc<Plan>,
    /// The block's codec.
    pub codec: Codec,
    /// Records the block says it holds.
    pub count: u64,
    /// The bytes as stored.
    pub data: B,
}

impl<B: AsRef<[u8]>> RawBlock<B> {
    /// The same block with its bytes held another way.
    pub fn map_data<C>(self, f: impl FnOnce(B) -> C) -> RawBlock<C> {
        RawBlock {
            schema: self.schema,
            plan: self.plan,
            codec: self.codec,
            count: self.count,
            data: f(self.data),
        }
    }

    /// Inflates the block (into `scratch`, kept by the caller from block to block)
    /// and calls `f` with each message, borrowed from the block, or with the error
    /// where it broke (the last call then; the messages before it stand).
    pub fn each<'s>(
        &'s self,
        scratch: &'s mut Vec<u8>,
        f: &mut dyn FnMut(Result<MessageRef<'s>, AvroError>),
    ) {
        let data = match inflate_into(self.codec, self.data.as_ref(), scratch) {
            Ok(d) => d,
            Err(e) => return f(Err(e)),
        };
        if let Err(e) = plausible_count(self.count, data) {
            return f(Err(e));
        }
        let mut d = Decoder { data, pos: 0 };
        for _ in 0..self.count {
            match d.record(&self.plan) {
                Ok(m) => f(Ok(m)),
                Err(e) => return f(Err(e)),
            }
        }
    }

    /// Inflates the block and decodes its records with `apache-avro` into owned
    /// messages: each message, or the error where it broke (the last item then).
    /// The reference [`RawBlock::each`] is tested against; slower.
    pub fn messages(&self) -> Vec<Result<Message, AvroError>> {
        let mut scratch = Vec::new();
        let data = match inflate_into(self.codec, self.data.as_ref(), &mut scratch) {
            Ok(d) => d,
            Err(e) => return vec![Err(e)],
        };
        if let Err(e) = plausible_count(self.count, data) {
            return vec![Err(e)];
        }
        let mut cursor = std::io::Cursor::new(data);
        let mut out = Vec::with_capacity((self.count as usize).min(1024));
        for _ in 0..self.count {
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

/// A record takes at least one byte: a count above the bytes is a lie.
fn plausible_count(count: u64, data: &[u8]) -> Result<(), AvroError> {
    if count > data.len() as u64 && !data.is_empty() || count > 0 && data.is_empty() {
        return Err(AvroError::Invalid(format!(
            "block of {count} records in {} bytes",
            data.len()
        )));
    }
    Ok(())
}

fn inflate_into<'a>(
    codec: Codec,
    data: &'a [u8],
    out: &'a mut Vec<u8>,
) -> Result<&'a [u8], AvroError> {
    match codec {
        Codec::Null => Ok(data),
        Codec::Deflate => {
            out.clear();
            flate2::read::DeflateDecoder::new(data)
                .take(MAX_BLOCK_BYTES as u64 + 1)
                .read_to_end(out)
                .map_err(|e| AvroError::Invalid(format!("deflate: {e}")))?;
            if out.len() > MAX_BLOCK_BYTES {
                out.clear();
                out.shrink_to(1 << 20);
                return Err(AvroError::Invalid(format!(
                    "block inflates past {} MiB",
                    MAX_BLOCK_BYTES >> 20
                )));
            }
            Ok(&out[..])
        }
    }
}

/// A primitive of the record shape read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prim {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
}

/// A value's layout: a primitive, or a union of primitives.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scalar {
    One(Prim),
    Union(Vec<Prim>),
}

/// What a field is to the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Properties,
    System,
    Body,
    Other,
}

/// A field's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    Scalar(Scalar),
    Map(Scalar),
}

/// How a record of the container's schema is laid out, field by field.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    fields: Vec<(Role, Layout)>,
}

impl Plan {
    /// The plan of a schema of the flat shape (checked first).
    fn of(schema: &Schema) -> Result<Plan, AvroError> {
        check_shape(schema)?;
        fn prim(s: &Schema) -> Prim {
            match s {
                Schema::Null => Prim::Null,
                Schema::Boolean => Prim::Boolean,
                Schema::Int => Prim::Int,
                Schema::Long => Prim::Long,
                Schema::Float => Prim::Float,
                Schema::Double => Prim::Double,
                Schema::Bytes => Prim::Bytes,
                // check_shape let only primitives through.
                _ => Prim::String,
            }
        }
        fn scalar(s: &Schema) -> Scalar {
            match s {
                Schema::Union(u) => Scalar::Union(u.variants().iter().map(prim).collect()),
                s => Scalar::One(prim(s)),
            }
        }
        let Schema::Record(r) = schema else {
            unreachable!("check_shape accepts records only")
        };
        let fields = r
            .fields
            .iter()
            .map(|f| {
                let layout = match &f.schema {
                    Schema::Map(m) => Layout::Map(scalar(&m.types)),
                    s => Layout::Scalar(scalar(s)),
                };
                let role = match (f.name.as_str(), &layout) {
                    ("Properties", Layout::Map(_)) => Role::Properties,
                    ("SystemProperties", Layout::Map(_)) => Role::System,
                    ("Body", Layout::Scalar(_)) => Role::Body,
                    _ => Role::Other,
                };
                (role, layout)
            })
            .collect();
        Ok(Plan { fields })
    }
}

/// A decoded primitive, borrowed (strings and bytes alike as bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Datum<'a> {
    Null,
    Bool(bool),
    Long(i64),
    Double(f64),
    Bytes(&'a [u8]),
}

impl<'a> Datum<'a> {
    /// As text, the way [`text`] words `apache-avro`'s values.
    fn text(self) -> Option<std::borrow::Cow<'a, str>> {
        use std::borrow::Cow;
        match self {
            Datum::Bytes(b) => Some(String::from_utf8_lossy(b)),
            Datum::Long(n) => Some(Cow::Owned(n.to_string())),
            Datum::Double(x) => Some(Cow::Owned(x.to_string())),
            Datum::Bool(b) => Some(Cow::Owned(b.to_string())),
            Datum::Null => None,
        }
    }
}

/// Reads records of a [`Plan`] from a block's bytes, borrowing from them. Every
/// length is checked against the bytes left before it is used, so nothing is
/// allocated whatever the bytes say.
struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
}

fn bad(what: &str) -> AvroError {
    AvroError::Invalid(format!("record: {what}"))
}

impl<'a> Decoder<'a> {
    fn long(&mut self) -> Result<i64, AvroError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.data.get(self.pos) else {
                return Err(bad("ends inside a number"));
            };
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        Err(bad("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], AvroError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| bad("a value runs past the end of its block"))?;
        let b = &self.data[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    /// A length: not negative, at most [`MAX_ITEM`] and the bytes left.
    fn len(&mut self) -> Result<usize, AvroError> {
        let n = self.long()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_ITEM)
            .ok_or_else(|| bad(&format!("a length of {n}")))
    }

    fn prim(&mut self, p: Prim) -> Result<Datum<'a>, AvroError> {
        Ok(match p {
            Prim::Null => Datum::Null,
            Prim::Boolean => match self.take(1)?[0] {
                0 => Datum::Bool(false),
                1 => Datum::Bool(true),
                b => return Err(bad(&format!("boolean byte {b}"))),
            },
            Prim::Int => {
                let n = self.long()?;
                i32::try_from(n).map_err(|_| bad(&format!("int {n} out of range")))?;
                Datum::Long(n)
            }
            Prim::Long => Datum::Long(self.long()?),
            Prim::Float => {
                let b = self.take(4)?;
                Datum::Double(f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            }
            Prim::Double => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Datum::Double(f64::from_le_bytes(a))
            }
            Prim::Bytes => {
                let n = self.len()?;
                Datum::Bytes(self.take(n)?)
            }
            Prim::String => {
                let n = self.len()?;
                let s = self.take(n)?;
                std::str::from_utf8(s).map_err(|_| bad("a string that is not UTF-8"))?;
                Datum::Bytes(s)
            }
        })
    }

    fn scalar(&mut self, s: &Scalar) -> Result<Datum<'a>, AvroError> {
        match s {
            Scalar::One(p) => self.prim(*p),
            Scalar::Union(v) => {
                let i = self.long()?;
                let p = usize::try_from(i)
                    .ok()
                    .and_then(|i| v.get(i))
                    .ok_or_else(|| bad(&format!("union branch {i} of {}", v.len())))?;
                self.prim(*p)
            }
        }
    }

    /// A map's entries, each given to `f` (key, value).
    fn map(
        &mut self,
        values: &Scalar,
        f: &mut impl FnMut(&'a [u8], Datum<'a>),
    ) -> Result<(), AvroError> {
        loop {
            let mut n = self.long()?;
            if n == 0 {
                return Ok(());
            }
            if n < 0 {
                n = n.checked_neg().ok_or_else(|| bad("map block count"))?;
                self.long()?; // the block's byte size
            }
            // An entry takes at least one byte.
            if n as u64 > (self.data.len() - self.pos) as u64 {
                return Err(bad(&format!("a map of {n} entries in fewer bytes")));
            }
            for _ in 0..n {
                let Datum::Bytes(k) = self.prim(Prim::String)? else {
                    unreachable!("a string decodes as bytes")
                };
                let v = self.scalar(values)?;
                f(k, v);
            }
        }
    }

    fn record(&mut self, plan: &Plan) -> Result<MessageRef<'a>, AvroError> {
        let mut m = MessageRef {
            report: false,
            device: None,
            body: None,
        };
        // The device id by preference (the last of a repeated key wins, as in a map).
        let mut device: [Option<Datum<'a>>; 2] = [None, None];
        for (role, layout) in &plan.fields {
            match (role, layout) {
                (Role::Properties, Layout::Map(v)) => self.map(v, &mut |k, v| {
                    if k == b"hubprobe" {
                        m.report = v == Datum::Bytes(b"report");
                    }
                })?,
                (Role::System, Layout::Map(v)) => self.map(v, &mut |k, v| {
                    if let Some(i) = DEVICE_KEYS.iter().position(|d| d.as_bytes() == k) {
                        device[i] = Some(v);
                    }
                })?,
                (Role::Body, Layout::Scalar(s)) => {
                    m.body = match self.scalar(s)? {
                        Datum::Bytes(b) => Some(b),
                        _ => None,
                    }
                }
                (_, Layout::Map(v)) => self.map(v, &mut |_, _| {})?,
                (_, Layout::Scalar(s)) => {
                    self.scalar(s)?;
                }
            }
        }
        m.device = device.into_iter().flatten().find_map(Datum::text);
        Ok(m)
    }
}

/// Reads an Avro object container, block by block.
pub struct Container<S> {
    r: S,
    schema: std::sync::Arc<Schema>,
    plan: std::sync::Arc<Plan>,
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

impl<R: Read> Container<Stream<R>> {
    /// Reads the header of a container read from a stream.
    pub fn open(r: R) -> Result<Self, AvroError> {
        Container::open_source(Stream(r))
    }
}

impl<S: BlockSource> Container<S> {
    /// Reads the header (magic, metadata with the schema and codec, sync marker).
    pub fn open_source(mut r: S) -> Result<Container<S>, AvroError> {
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
        let plan = Plan::of(&schema)?;
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
            plan: std::sync::Arc::new(plan),
            codec,
            sync,
            pending: Vec::new(),
            ends_early: false,
        })
    }

    /// The source, read up to the end of the last block given.
    pub fn source(&self) -> &S {
        &self.r
    }

    /// Reads the next block as stored (`Ok(None)` at the end of the file). After
    /// a file that ends inside a block's sync marker, the block is given and the
    /// next call says the file is truncated.
    pub fn next_raw_block(&mut self) -> Result<Option<RawBlock<S::Block>>, AvroError> {
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
        let n = read_len(&mut self.r, MAX_BLOCK_BYTES, "block")?;
        let data = self.r.block(n)?;
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
            plan: self.plan.clone(),
            codec: self.codec,
            count,
            data,
        }))
    }

    /// The next message, decoded by `apache-avro` into an owned [`Message`];
    /// `Ok(None)` at the end of the file.
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
        Value::Float(x) => Some((*x as f64).to_string()),
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

    /// What a decoder made of a container: each message (report?, device, body),
    /// then the error where it broke, if it did.
    type Outcome = (Vec<(bool, Option<String>, Option<Vec<u8>>)>, bool);

    fn fast(file: &[u8]) -> Outcome {
        let mut out = Vec::new();
        let Ok(mut c) = Container::open(file) else {
            return (out, true);
        };
        let mut scratch = Vec::new();
        loop {
            match c.next_raw_block() {
                Ok(Some(b)) => {
                    let mut broke = false;
                    b.each(&mut scratch, &mut |m| match m {
                        Ok(m) => out.push((
                            m.report,
                            m.device.map(|d| d.into_owned()),
                            m.body.map(<[u8]>::to_vec),
                        )),
                        Err(_) => broke = true,
                    });
                    if broke {
                        return (out, true);
                    }
                }
                Ok(None) => return (out, false),
                Err(_) => return (out, true),
            }
        }
    }

    fn reference(file: &[u8]) -> Outcome {
        let mut out = Vec::new();
        let Ok(mut c) = Container::open(file) else {
            return (out, true);
        };
        loop {
            match c.next_message() {
                Ok(Some(m)) => out.push((
                    m.is_report(),
                    m.device().map(str::to_string),
                    m.body.clone(),
                )),
                Ok(None) => return (out, false),
                Err(_) => return (out, true),
            }
        }
    }

    fn string(s: &str) -> Vec<u8> {
        bytes(s.as_bytes())
    }

    /// A map in one block, or (negative count with the byte size) in two.
    fn map_of(entries: &[(&str, Vec<u8>)], split: bool) -> Vec<u8> {
        let enc = |e: &[(&str, Vec<u8>)]| -> Vec<u8> {
            e.iter()
                .flat_map(|(k, v)| [string(k), v.clone()].concat())
                .collect()
        };
        let mut out = Vec::new();
        if split && entries.len() > 1 {
            let (a, b) = entries.split_at(1);
            let a = enc(a);
            out.extend(long(-1));
            out.extend(long(a.len() as i64));
            out.extend(a);
            out.extend(long(b.len() as i64));
            out.extend(enc(b));
        } else if !entries.is_empty() {
            out.extend(long(entries.len() as i64));
            out.extend(enc(entries));
        }
        out.extend(long(0));
        out
    }

    const CAPTURE: &str = r#"{"type":"record","name":"EventData","fields":[
        {"name":"SequenceNumber","type":"long"},
        {"name":"Offset","type":"string"},
        {"name":"EnqueuedTimeUtc","type":"string"},
        {"name":"SystemProperties","type":{"type":"map","values":["long","double","string","bytes"]}},
        {"name":"Properties","type":{"type":"map","values":["long","double","string","bytes","null"]}},
        {"name":"Body","type":["null","bytes"]},
        {"name":"Flags","type":["null","boolean","int","float"]}]}"#;

    /// Records of both schemas with every kind of value: reports and foreign
    /// messages, the device under either key (or both, or as a number), null
    /// values, maps in several blocks, bodies or none.
    fn records(capture: bool, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let split = i % 3 == 0;
                let body = if i % 7 == 6 {
                    long(0) // null
                } else {
                    [long(1), bytes(format!("{{\"n\":{i}}}").as_bytes())].concat()
                };
                let report = if i % 5 == 4 { "telemetry" } else { "report" };
                if capture {
                    // Union branches: 0 long, 1 double, 2 string, 3 bytes, 4 null.
                    let mut system =
                        vec![("x-opt-sequence-number", [long(0), long(i as i64)].concat())];
                    match i % 4 {
                        0 => system.push((
                            "iothub-connection-device-id",
                            [long(2), string(&format!("dev-{i}"))].concat(),
                        )),
                        1 => system.push((
                            "iothub-connection-device-id",
                            [long(3), bytes(b"dev-bytes")].concat(),
                        )),
                        2 => system
                            .push(("iothub-connection-device-id", [long(0), long(42)].concat())),
                        _ => system.push((
                            "iothub-connection-device-id",
                            [long(1), 2.5f64.to_le_bytes().to_vec()].concat(),
                        )),
                    }
                    let mut props = vec![
                        ("hubprobe", [long(2), string(report)].concat()),
                        ("nothing", long(4)),
                    ];
                    if i % 6 == 0 {
                        props.push(("hubprobe", long(4))); // a repeated key, null last
                    }
                    let flags = match i % 4 {
                        0 => long(0),
                        1 => [long(1), vec![1u8]].concat(),
                        2 => [long(2), long(-7)].concat(),
                        _ => [long(3), 1.5f32.to_le_bytes().to_vec()].concat(),
                    };
                    [
                        long(i as i64),
                        string(&format!("{}", i * 1000)),
                        string("2026-11-26T00:00:00Z"),
                        map_of(&system, split),
                        map_of(&props, !split),
                        body,
                        flags,
                    ]
                    .concat()
                } else {
                    let mut system = vec![("enqueuedTime", string("2026-11-26T00:00:00Z"))];
                    if i % 2 == 0 {
                        system.push(("connectionDeviceId", string(&format!("dev-{i}"))));
                    }
                    if i % 8 == 0 {
                        system.push(("iothub-connection-device-id", string("preferred")));
                    }
                    let props = if i % 9 == 8 {
                        vec![]
                    } else {
                        vec![
                            ("schema", string("hubprobe.report/1")),
                            ("hubprobe", string(report)),
                        ]
                    };
                    [
                        string("2026-11-26T00:00:00Z"),
                        map_of(&props, split),
                        map_of(&system, !split),
                        body,
                    ]
                    .concat()
                }
            })
            .collect()
    }

    /// A container of these records, `per` a block, with the codec.
    fn container(schema: &str, records: &[Vec<u8>], per: usize, deflate: bool) -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        f.extend(long(if deflate { 2 } else { 1 }));
        f.extend(bytes(b"avro.schema"));
        f.extend(bytes(schema.as_bytes()));
        if deflate {
            f.extend(bytes(b"avro.codec"));
            f.extend(bytes(b"deflate"));
        }
        f.extend(long(0));
        f.extend([7u8; 16]);
        for chunk in records.chunks(per) {
            let mut data: Vec<u8> = chunk.concat();
            if deflate {
                use std::io::Write;
                let mut e =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&data).unwrap();
                data = e.finish().unwrap();
            }
            f.extend(long(chunk.len() as i64));
            f.extend(bytes(&data));
            f.extend([7u8; 16]);
        }
        f
    }

    #[test]
    fn the_borrowing_decoder_agrees_with_apache_avro() {
        for (schema, capture) in [(ROUTING, false), (CAPTURE, true)] {
            for deflate in [false, true] {
                let f = container(schema, &records(capture, 60), 16, deflate);
                let (msgs, broke) = fast(&f);
                assert!(!broke, "capture {capture} deflate {deflate}");
                assert_eq!(msgs.len(), 60);
                assert_eq!((msgs.clone(), broke), reference(&f));
                // What the records say is what is read.
                assert!(msgs[1].0 && !msgs[4].0, "{:?}", &msgs[..5]);
                assert_eq!(msgs[6].2, None);
                assert_eq!(msgs[1].2.as_deref(), Some(&b"{\"n\":1}"[..]));
                if capture {
                    assert_eq!(msgs[2].1.as_deref(), Some("42"));
                    assert_eq!(msgs[3].1.as_deref(), Some("2.5"));
                    assert!(!msgs[6].0, "a null after \"report\" in the same map");
                } else {
                    assert_eq!(msgs[0].1.as_deref(), Some("preferred"));
                    assert_eq!(msgs[2].1.as_deref(), Some("dev-2"));
                    assert_eq!(msgs[1].1, None);
                    assert!(!msgs[8].0, "no properties: not a report");
                }
            }
        }
    }

    #[test]
    fn on_corrupt_blocks_both_decoders_stop_at_the_same_record() {
        // Deterministic: the same mutations on every run.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut broken = 0;
        for (schema, capture) in [(ROUTING, false), (CAPTURE, true)] {
            let good = container(schema, &records(capture, 24), 8, false);
            let head = container(schema, &[], 8, false).len();
            for round in 0..2000 {
                let mut f = good.clone();
                for _ in 0..1 + round % 3 {
                    let at = head + (next() as usize) % (f.len() - head);
                    match next() % 4 {
                        0 => f[at] ^= 1 << (next() % 8),
                        1 => f[at] = next() as u8,
                        2 => f[at] = [0x00, 0x01, 0x7f, 0x80, 0xff][(next() % 5) as usize],
                        _ => f.truncate(at),
                    }
                    if f.len() <= head {
                        break;
                    }
                }
                let (a, b) = (fast(&f), reference(&f));
                assert_eq!(a, b, "{schema} round {round}");
                broken += usize::from(a.1);
            }
        }
        assert!(broken > 800, "the mutations broke only {broken} files");
    }
}
