//! Streaming input: report files (pretty JSON, one or more documents), NDJSON
//! (gzip-compressed too, detected by its magic bytes), the Avro containers and
//! JSON lines IoT Hub routing and Event Hubs Capture write (detected by content),
//! directories (recursively) and stdin. A reader thread cuts the input into chunks of whole lines, parser
//! threads turn them into observations, and the calling thread aggregates them in
//! input order: memory is bounded by the channel depths and the chunk size, never by
//! the input size. A line that is not a report is counted and listed with its file
//! and line.
//!
//! Regular NDJSON files are memory-mapped: chunks are ranges of the mapping, so the
//! bytes are never copied out of the page cache (the mapped pages count towards the
//! process's resident set while they are touched, but they are the page cache's,
//! shared and dropped by the kernel under pressure, not the process's own memory).
//! Stdin, gzip and pretty-printed documents are read through a buffer.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use memmap2::Mmap;

use super::aggregate::Aggregator;
use super::avro;
use super::record::{self, Observation, Rejection};
use super::{FleetError, FleetOptions, FleetSummary};

/// Bytes per chunk handed to a parser thread.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Avro blocks sent to a parser thread together, at most.
const MAX_BATCH: usize = 256;
/// Bytes of a mapped file dropped from the resident set at a time.
const RELEASE_BYTES: usize = 4 << 20;
/// A longer line is rejected (and skipped) instead of buffered.
pub const MAX_LINE_BYTES: usize = 16 << 20;
pub use super::shared::{strip_bom, MAX_DOCUMENT_BYTES};

/// One input as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Standard input (`-`).
    Stdin,
    /// A file or a directory.
    Path(PathBuf),
}

impl Source {
    /// `-` is stdin, anything else a path.
    pub fn parse(s: &str) -> Source {
        if s == "-" {
            Source::Stdin
        } else {
            Source::Path(PathBuf::from(s))
        }
    }
}

/// Files read under a directory: by name (`.json`, `.ndjson`, `.jsonl`, `.avro`,
/// each optionally `.gz`), and files without an extension (IoT Hub routing names
/// its blobs by partition and time) when they are Avro containers.
pub fn is_report_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let name = name.strip_suffix(".gz").unwrap_or(name);
    if [".json", ".ndjson", ".jsonl", ".avro"]
        .iter()
        .any(|ext| name.ends_with(ext))
    {
        return true;
    }
    p.extension().is_none() && starts_with(p, avro::MAGIC)
}

fn starts_with(p: &Path, magic: &[u8]) -> bool {
    let mut head = [0u8; 4];
    File::open(p)
        .and_then(|mut f| f.read_exact(&mut head[..magic.len()]))
        .is_ok_and(|_| head[..magic.len()] == *magic)
}

/// Expands directories (sorted, recursively). Returns the inputs and the files
/// under directories that were not taken.
fn expand(sources: &[Source]) -> Result<(Vec<Source>, Vec<String>), FleetError> {
    let mut skipped = Vec::new();
    let out = expand_with(sources, is_report_file, &mut skipped)
        .map_err(|(path, source)| FleetError::Input { path, source })?;
    Ok((out, skipped))
}

/// Expands the directories among `sources` (sorted, recursively) into the files
/// `accept` takes; the others under them go to `skipped`. Symlinked directories
/// are not followed (no loops); symlinked files are read. Fails with the path
/// that could not be read.
pub(crate) fn expand_with(
    sources: &[Source],
    accept: fn(&Path) -> bool,
    skipped: &mut Vec<String>,
) -> Result<Vec<Source>, (PathBuf, std::io::Error)> {
    fn walk(
        dir: &Path,
        accept: fn(&Path) -> bool,
        out: &mut Vec<Source>,
        skipped: &mut Vec<String>,
    ) -> Result<(), (PathBuf, std::io::Error)> {
        let err = |e| (dir.to_path_buf(), e);
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(err)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        entries.sort();
        for p in entries {
            let lmeta = std::fs::symlink_metadata(&p).map_err(err)?;
            if lmeta.is_dir() {
                walk(&p, accept, out, skipped)?;
            } else if accept(&p) && std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
                out.push(Source::Path(p));
            } else {
                skipped.push(p.display().to_string());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for s in sources {
        match s {
            Source::Stdin => out.push(Source::Stdin),
            Source::Path(p) => {
                let meta = std::fs::metadata(p).map_err(|e| (p.clone(), e))?;
                if meta.is_dir() {
                    walk(p, accept, &mut out, skipped)?;
                } else {
                    out.push(Source::Path(p.clone()));
                }
            }
        }
    }
    Ok(out)
}

/// The bytes of a chunk: read into a buffer, or a range of a mapped file.
enum Bytes {
    Owned(Vec<u8>),
    Mapped(Arc<Mmap>, Range<usize>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Mapped(m, r) => &m[r.clone()],
        }
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// A mapped Avro container: the header read through [`Read`], each block a range
/// of the map (not copied).
struct MappedAvro {
    map: Arc<Mmap>,
    pos: usize,
}

impl Read for MappedAvro {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = &self.map[self.pos.min(self.map.len())..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

impl avro::BlockSource for MappedAvro {
    type Block = Bytes;
    fn block(&mut self, n: usize) -> Result<Bytes, avro::AvroError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.map.len())
            .ok_or(avro::AvroError::Truncated("block"))?;
        let r = self.pos..end;
        self.pos = end;
        Ok(Bytes::Mapped(self.map.clone(), r))
    }
}

/// A piece of input for a parser thread.
struct Chunk {
    /// Position in the input (the aggregator takes chunks in this order).
    seq: u64,
    file: u32,
    /// Line number of the first line; `None`: the line after the previous chunk.
    first_line: Option<u64>,
    data: Bytes,
    /// One whole JSON document (may span lines) instead of NDJSON lines.
    document: bool,
    /// A problem found by the reader itself (over-long line, read error).
    problem: Option<Rejection>,
    /// Consecutive blocks of an Avro container: their messages, decoded by the
    /// parser thread.
    blocks: Vec<avro::RawBlock<Bytes>>,
}

/// A broken Avro container's problem text.
fn broken(e: &avro::AvroError) -> String {
    format!("{e}; the messages before it were read")
}

/// What a parser thread made of a chunk.
struct Parsed {
    seq: u64,
    file: u32,
    first_line: Option<u64>,
    /// Lines the chunk covers (the next chunk without a first line starts after them).
    lines: u64,
    records: u64,
    blank: u64,
    /// Items by line offset from the chunk's first line.
    items: Vec<(u64, Result<Observation, Rejection>)>,
}

/// Parses a chunk; `scratch` holds an inflated Avro block, kept from chunk to chunk.
fn parse_chunk(c: &Chunk, keep: &[String], scratch: &mut Vec<u8>) -> Parsed {
    let mut p = Parsed {
        seq: c.seq,
        file: c.file,
        first_line: c.first_line,
        lines: 0,
        records: 0,
        blank: 0,
        items: Vec::new(),
    };
    let data = c.data.as_slice();
    if let Some(r) = &c.problem {
        p.records += 1;
        p.lines = 1;
        p.items.push((0, Err(r.clone())));
        return p;
    }
    if c.document {
        p.records += 1;
        p.items.push((0, record::parse_keeping(data, Some(keep))));
        return p;
    }
    if !c.blocks.is_empty() {
        let mut offset = 0u64;
        for b in &c.blocks {
            b.each(scratch, &mut |m| {
                p.records += 1;
                p.lines = offset + 1;
                let item = match m {
                    Ok(m) if m.report => match m.body.filter(|b| !b.is_empty()) {
                        Some(body) => record::parse_message(body, m.device.as_deref(), Some(keep)),
                        None => Err(Rejection::Malformed(
                            "a hubprobe message without a body".into(),
                        )),
                    },
                    Ok(_) => Err(Rejection::Foreign(record::NOT_MARKED.into())),
                    Err(e) => Err(Rejection::Malformed(broken(&e))),
                };
                p.items.push((offset, item));
                offset += 1;
            });
        }
        // A large inflated block is not kept for the next.
        if scratch.capacity() > 4 * CHUNK_BYTES {
            *scratch = Vec::new();
        }
        return p;
    }
    if data.is_empty() {
        return p;
    }
    let mut start = 0usize;
    let ends = memchr::memchr_iter(b'\n', data).chain(
        // The last line of the input may lack its newline.
        (!data.ends_with(b"\n")).then_some(data.len()),
    );
    for (offset, end) in (0..).zip(ends) {
        let line = &data[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            p.blank += 1;
        } else {
            p.records += 1;
            p.items
                .push((offset, record::parse_keeping(line, Some(keep))));
        }
        p.lines = offset + 1;
        start = end + 1;
    }
    p
}

/// Unmaps a range of a mapping from the process (the pages stay in the page cache).
fn release(map: &Mmap, r: Range<usize>) {
    // SAFETY: the mapping is read-only and private and nothing writes the file
    // through it: MADV_DONTNEED only unmaps the pages, and a later access (should a
    // parser thread still be reading there) maps the same bytes again from the page
    // cache.
    let _ =
        unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, r.start, r.len()) };
}

/// Drops the pages of a mapping that the parser threads are done with from the
/// resident set as the reader moves on (they stay in the page cache): the threads
/// are at most a few chunks behind the reader.
struct ReleaseBehind {
    lag: usize,
    released: usize,
}

impl ReleaseBehind {
    fn new(workers: usize) -> Self {
        ReleaseBehind {
            lag: (workers * 3 + 2) * CHUNK_BYTES,
            released: 0,
        }
    }

    /// The reader has reached `pos` of `map`.
    fn reached(&mut self, map: &Mmap, pos: usize) {
        if pos >= self.released + self.lag + RELEASE_BYTES {
            release(map, self.released..pos - self.lag);
            self.released = pos - self.lag;
        }
    }
}

/// Maps a regular, non-empty, uncompressed file; `None` when it should be streamed.
fn map_file(path: &Path) -> Option<Arc<Mmap>> {
    let f = File::open(path).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() == 0 || meta.len() > usize::MAX as u64 {
        return None;
    }
    // SAFETY: the mapping is read-only and private to this process. Another process
    // truncating the file while it is read would fault the reader; report files are
    // written by appending (appended bytes past the mapped length are not read).
    let map = unsafe { Mmap::map(&f) }.ok()?;
    if map.starts_with(&[0x1f, 0x8b]) {
        return None;
    }
    #[cfg(unix)]
    let _ = map.advise(memmap2::Advice::Sequential);
    Some(Arc::new(map))
}

/// How [`read_line_capped`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line (with its newline, unless it is the last) is in the buffer.
    Whole,
    /// The line was longer than the cap: it was read past and dropped.
    TooLong,
    /// Nothing left.
    End,
}

/// Reads one line into `buf`, never holding more than `cap` bytes of it (newline
/// excluded): a longer line is consumed up to its newline and dropped.
fn read_line_capped(r: &mut dyn BufRead, buf: &mut Vec<u8>, cap: usize) -> std::io::Result<Line> {
    let mut over = false;
    let mut any = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(match (any, over) {
                (false, _) => Line::End,
                (true, true) => Line::TooLong,
                (true, false) => Line::Whole,
            });
        }
        any = true;
        let (take, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if !over {
            if buf.len() + take > cap + usize::from(done) {
                over = true;
                buf.clear();
                buf.shrink_to(CHUNK_BYTES);
            } else {
                buf.extend_from_slice(&avail[..take]);
            }
        }
        r.consume(take);
        if done {
            return Ok(if over { Line::TooLong } else { Line::Whole });
        }
    }
}

/// The rejection of a line over [`MAX_LINE_BYTES`].
fn too_long() -> Rejection {
    Rejection::Malformed(format!(
        "line longer than {} MiB, skipped",
        MAX_LINE_BYTES >> 20
    ))
}

fn count_lines(data: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', data).count() as u64
}

/// Reads every input and sends chunks round-robin to the parser threads.
struct Reader {
    workers: Vec<SyncSender<Chunk>>,
    next: u64,
    /// Input bytes consumed so far (compressed bytes for gzip), for progress.
    consumed: Arc<AtomicU64>,
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    consumed: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// What `summarize` tells about its progress (a display on a terminal; nothing in
/// tests and pipelines).
pub trait Progress: Sync {
    /// Called from time to time while reading, and once at the end (`done`).
    fn update(&self, p: &ProgressState, done: bool);
}

/// The progress of one summary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressState {
    /// Input bytes consumed (as stored: compressed bytes of gzip files).
    pub bytes_read: u64,
    /// Size of the inputs, when known (not with stdin).
    pub bytes_total: Option<u64>,
    /// Reports counted so far.
    pub reports: u64,
    /// Since the start.
    pub elapsed: std::time::Duration,
}

/// No progress display.
pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&self, _: &ProgressState, _: bool) {}
}

/// How often progress is told.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

impl Reader {
    fn send(&mut self, mut c: Chunk) -> bool {
        c.seq = self.next;
        let i = (self.next % self.workers.len() as u64) as usize;
        self.next += 1;
        self.workers[i].send(c).is_ok()
    }

    fn problem(&mut self, file: u32, line: u64, r: Rejection) -> bool {
        self.send(Chunk {
            seq: 0,
            file,
            first_line: Some(line),
            data: Bytes::Owned(Vec::new()),
            document: false,
            problem: Some(r),
            blocks: Vec::new(),
        })
    }

    fn run(&mut self, inputs: &[Source]) {
        for (i, s) in inputs.iter().enumerate() {
            let file = i as u32;
            if let Source::Path(p) = s {
                let mapped = map_file(p).and_then(|m| {
                    if m.starts_with(avro::MAGIC) {
                        Some(self.avro_mapped(file, m))
                    } else {
                        self.mapped(file, m)
                    }
                });
                if let Some(done) = mapped {
                    if !done {
                        return;
                    }
                    continue;
                }
            }
            let consumed = self.consumed.clone();
            let opened: std::io::Result<Box<dyn Read + Send>> = match s {
                Source::Stdin => Ok(Box::new(Counting {
                    inner: std::io::stdin(),
                    consumed,
                })),
                Source::Path(p) => File::open(p)
                    .map(|f| Box::new(Counting { inner: f, consumed }) as Box<dyn Read + Send>),
            };
            let ok = match opened {
                Ok(r) => self.read_one(file, r),
                Err(e) => self.problem(file, 0, Rejection::Malformed(format!("cannot open: {e}"))),
            };
            if !ok {
                return;
            }
        }
    }

    /// Cuts a mapped NDJSON file into chunks of whole lines. `None` when the file
    /// is not NDJSON (it is streamed instead); false when the parser threads are gone.
    fn mapped(&mut self, file: u32, map: Arc<Mmap>) -> Option<bool> {
        let data: &[u8] = &map;
        let len = data.len();
        // NDJSON when the first non-blank line is a whole object on its own.
        let mut pos = 0usize;
        let mut line = 1u64;
        loop {
            if pos >= len {
                return Some(true);
            }
            let end = memchr::memchr(b'\n', &data[pos..]).map_or(len, |i| pos + i);
            let l = &data[pos..end];
            if l.iter().all(u8::is_ascii_whitespace) {
                line += 1;
                pos = end + 1;
                continue;
            }
            let t = strip_bom(l).trim_ascii();
            if !(t.starts_with(b"{") && t.ends_with(b"}")) {
                return None;
            }
            break;
        }
        let mut first = Some(line);
        let mut behind = ReleaseBehind::new(self.workers.len());
        while pos < len {
            behind.reached(&map, pos);
            let want = pos + CHUNK_BYTES;
            let end = if want >= len {
                len
            } else if let Some(i) = memchr::memrchr(b'\n', &data[pos..want]) {
                pos + i + 1
            } else {
                // One line longer than a chunk.
                let nl = memchr::memchr(b'\n', &data[want..]).map(|i| want + i);
                if nl.unwrap_or(len) - pos > MAX_LINE_BYTES {
                    let sent = self.send(Chunk {
                        seq: 0,
                        file,
                        first_line: first.take(),
                        data: Bytes::Owned(Vec::new()),
                        document: false,
                        problem: Some(too_long()),
                        blocks: Vec::new(),
                    });
                    if !sent {
                        return Some(false);
                    }
                    pos = nl.map_or(len, |n| n + 1);
                    continue;
                }
                nl.map_or(len, |n| n + 1)
            };
            // Map the chunk's pages in one call (fewer page faults in the parsers).
            #[cfg(target_os = "linux")]
            let _ = map.advise_range(memmap2::Advice::PopulateRead, pos, end - pos);
            let sent = self.send(Chunk {
                seq: 0,
                file,
                first_line: first.take(),
                data: Bytes::Mapped(map.clone(), pos..end),
                document: false,
                problem: None,
                blocks: Vec::new(),
            });
            if !sent {
                return Some(false);
            }
            self.consumed
                .fetch_add((end - pos) as u64, Ordering::Relaxed);
            pos = end;
        }
        Some(true)
    }

    /// Returns false when the parser threads are gone.
    fn read_one(&mut self, file: u32, raw: Box<dyn Read + Send>) -> bool {
        let mut buf = BufReader::with_capacity(CHUNK_BYTES, raw);
        let gz = matches!(buf.fill_buf(), Ok(b) if b.starts_with(&[0x1f, 0x8b]));
        let mut r: Box<dyn BufRead + Send> = if gz {
            Box::new(BufReader::with_capacity(
                CHUNK_BYTES,
                flate2::bufread::MultiGzDecoder::new(buf),
            ))
        } else {
            Box::new(buf)
        };
        if matches!(r.fill_buf(), Ok(b) if b.starts_with(avro::MAGIC)) {
            return self.avro(file, r);
        }
        // NDJSON when the first non-blank line is a whole object on its own. The
        // line is read under the same cap as every other (an over-long one is a
        // problem at its place, and the next line is looked at).
        let mut head = Vec::new();
        let mut line = 1u64;
        let head_line;
        loop {
            head.clear();
            match read_line_capped(&mut r, &mut head, MAX_LINE_BYTES) {
                Ok(Line::End) => return true,
                Ok(Line::Whole) => {}
                Ok(Line::TooLong) => {
                    if !self.problem(file, line, too_long()) {
                        return false;
                    }
                    line += 1;
                    continue;
                }
                Err(e) => {
                    return self.problem(
                        file,
                        line,
                        Rejection::Malformed(format!("read error: {e}")),
                    )
                }
            }
            if head.iter().all(u8::is_ascii_whitespace) {
                line += 1;
                continue;
            }
            head_line = line;
            break;
        }
        let t = strip_bom(&head).trim_ascii();
        if t.starts_with(b"{") && t.ends_with(b"}") {
            self.ndjson(file, head_line, head, r)
        } else {
            self.documents(file, head_line, head, r)
        }
    }

    fn ndjson(
        &mut self,
        file: u32,
        first: u64,
        head: Vec<u8>,
        mut r: Box<dyn BufRead + Send>,
    ) -> bool {
        let mut line = first;
        let mut data = head;
        let mut skipping = false;
        loop {
            let n = match r.fill_buf() {
                Ok(buf) => {
                    data.extend_from_slice(buf);
                    buf.len()
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Hand over the whole lines read so far, then report where it broke.
                    let cut = memchr::memrchr(b'\n', &data).map_or(0, |p| p + 1);
                    data.truncate(cut);
                    let lines = count_lines(&data);
                    if !data.is_empty() && !self.send_lines(file, line, data) {
                        return false;
                    }
                    return self.problem(
                        file,
                        line + lines,
                        Rejection::Malformed(format!("read error: {e}")),
                    );
                }
            };
            r.consume(n);
            if n == 0 {
                // End of input: the last line may lack its newline.
                if !data.is_empty() && !skipping {
                    return self.send_lines(file, line, data);
                }
                return true;
            }
            if skipping {
                match memchr::memchr(b'\n', &data) {
                    Some(p) => {
                        data.drain(..=p);
                        line += 1;
                        skipping = false;
                    }
                    None => {
                        data.clear();
                        continue;
                    }
                }
            }
            match memchr::memrchr(b'\n', &data) {
                Some(p) if p + 1 >= CHUNK_BYTES / 2 || data.len() >= CHUNK_BYTES => {
                    let mut rest = Vec::with_capacity(CHUNK_BYTES * 2);
                    rest.extend_from_slice(&data[p + 1..]);
                    data.truncate(p + 1);
                    let lines = count_lines(&data);
                    if !self.send_lines(file, line, std::mem::replace(&mut data, rest)) {
                        return false;
                    }
                    line += lines;
                }
                Some(_) => {}
                None if data.len() > MAX_LINE_BYTES => {
                    if !self.problem(file, line, too_long()) {
                        return false;
                    }
                    data.clear();
                    skipping = true;
                }
                None => {}
            }
        }
    }

    fn send_lines(&mut self, file: u32, first_line: u64, data: Vec<u8>) -> bool {
        self.send(Chunk {
            seq: 0,
            file,
            first_line: Some(first_line),
            data: Bytes::Owned(data),
            document: false,
            problem: None,
            blocks: Vec::new(),
        })
    }

    /// An Avro object container (IoT Hub routing to storage, Event Hubs Capture):
    /// one message per record; a problem's line is the message's position. The
    /// framing is read here, each block goes whole to a parser thread, which
    /// inflates and decodes it. A broken block ends the file there, after every
    /// message before it.
    fn avro(&mut self, file: u32, r: Box<dyn BufRead + Send>) -> bool {
        match avro::Container::open(r) {
            Ok(c) => self.avro_blocks(file, c, |_, b| b.map_data(Bytes::Owned)),
            Err(e) => self.problem(file, 1, Rejection::Malformed(e.to_string())),
        }
    }

    /// A mapped Avro container: its blocks are ranges of the map, decoded by the
    /// parser threads where they lie; the pages read are released as the reader
    /// moves on, as with mapped NDJSON.
    fn avro_mapped(&mut self, file: u32, map: Arc<Mmap>) -> bool {
        let source = MappedAvro {
            map: map.clone(),
            pos: 0,
        };
        let c = match avro::Container::open_source(source) {
            Ok(c) => c,
            Err(e) => return self.problem(file, 1, Rejection::Malformed(e.to_string())),
        };
        self.consumed
            .fetch_add(c.source().pos as u64, Ordering::Relaxed);
        let mut behind = ReleaseBehind::new(self.workers.len());
        self.avro_blocks(file, c, |consumed, b| {
            if let Bytes::Mapped(m, r) = &b.data {
                behind.reached(m, r.start);
                #[cfg(target_os = "linux")]
                let _ = m.advise_range(memmap2::Advice::PopulateRead, r.start, r.len());
                consumed.fetch_add(r.len() as u64, Ordering::Relaxed);
            }
            b
        })
    }

    /// Sends a container's blocks to the parser threads, consecutive blocks
    /// together up to a chunk's bytes (a writer's blocks may be a few records
    /// each); `each` makes a block a chunk's. A problem's line is the message's
    /// position.
    fn avro_blocks<S: avro::BlockSource>(
        &mut self,
        file: u32,
        mut c: avro::Container<S>,
        mut each: impl FnMut(&AtomicU64, avro::RawBlock<S::Block>) -> avro::RawBlock<Bytes>,
    ) -> bool {
        // The position of the next block's first message, and of the batch's.
        let mut n = 1u64;
        let mut first = n;
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let consumed = self.consumed.clone();
        loop {
            // `Some`: the container ends here, whole or broken.
            let end = match c.next_raw_block() {
                Ok(Some(b)) => {
                    n = n.saturating_add(b.count);
                    let block = each(&consumed, b);
                    bytes += block.data.as_slice().len();
                    batch.push(block);
                    None
                }
                Ok(None) => Some(Ok(())),
                Err(e) => Some(Err(e)),
            };
            if !batch.is_empty()
                && (end.is_some() || bytes >= CHUNK_BYTES || batch.len() >= MAX_BATCH)
            {
                let sent = self.send(Chunk {
                    seq: 0,
                    file,
                    first_line: Some(first),
                    data: Bytes::Owned(Vec::new()),
                    document: false,
                    problem: None,
                    blocks: std::mem::take(&mut batch),
                });
                if !sent {
                    return false;
                }
                (first, bytes) = (n, 0);
            }
            match end {
                None => {}
                Some(Ok(())) => return true,
                Some(Err(e)) => return self.problem(file, n, Rejection::Malformed(broken(&e))),
            }
        }
    }

    /// Pretty-printed report files: one or more JSON documents.
    fn documents(
        &mut self,
        file: u32,
        first: u64,
        head: Vec<u8>,
        r: Box<dyn BufRead + Send>,
    ) -> bool {
        let mut data = head;
        if data.starts_with(b"\xEF\xBB\xBF") {
            data[..3].fill(b' '); // a byte order mark: not part of the JSON
        }
        let limit = (MAX_DOCUMENT_BYTES - data.len().min(MAX_DOCUMENT_BYTES)) as u64 + 1;
        if let Err(e) = r.take(limit).read_to_end(&mut data) {
            return self.problem(
                file,
                first,
                Rejection::Malformed(format!("read error: {e}")),
            );
        }
        if data.len() > MAX_DOCUMENT_BYTES {
            return self.problem(
                file,
                first,
                Rejection::Malformed(format!(
                    "not NDJSON and larger than {} MiB, skipped",
                    MAX_DOCUMENT_BYTES >> 20
                )),
            );
        }
        let mut stream =
            serde_json::Deserializer::from_slice(&data).into_iter::<serde::de::IgnoredAny>();
        let mut start = 0usize;
        let mut line = first;
        loop {
            match stream.next() {
                None => return true,
                Some(Ok(_)) => {
                    let end = stream.byte_offset();
                    let doc = &data[start..end];
                    let lead = doc.iter().take_while(|b| b.is_ascii_whitespace()).count();
                    let doc_line = line + count_lines(&doc[..lead]);
                    if !self.send(Chunk {
                        seq: 0,
                        file,
                        first_line: Some(doc_line),
                        data: Bytes::Owned(doc.to_vec()),
                        document: true,
                        problem: None,
                        blocks: Vec::new(),
                    }) {
                        return false;
                    }
                    line += count_lines(doc);
                    start = end;
                }
                Some(Err(e)) => {
                    return self.problem(
                        file,
                        first + e.line().saturating_sub(1) as u64,
                        Rejection::Malformed(format!("not JSON: {e}")),
                    );
                }
            }
        }
    }
}

/// Reads every source and summarizes.
pub fn summarize(sources: &[Source], opts: FleetOptions) -> Result<FleetSummary, FleetError> {
    summarize_with_progress(sources, opts, &NoProgress)
}

/// [`summarize`], telling `progress` how far it got.
pub fn summarize_with_progress(
    sources: &[Source],
    opts: FleetOptions,
    progress: &dyn Progress,
) -> Result<FleetSummary, FleetError> {
    let started = std::time::Instant::now();
    let (inputs, skipped) = expand(sources)?;
    let bytes_total = inputs
        .iter()
        .map(|s| match s {
            Source::Stdin => None,
            Source::Path(p) => std::fs::metadata(p).ok().map(|m| m.len()),
        })
        .sum::<Option<u64>>();
    let consumed = Arc::new(AtomicU64::new(0));
    let names: Vec<String> = inputs
        .iter()
        .map(|s| match s {
            Source::Stdin => "-".to_string(),
            Source::Path(p) => p.display().to_string(),
        })
        .collect();
    let threads = opts.threads.clamp(1, 16);
    // The parser threads keep only the labels the summary reads.
    let mut keep = vec![opts.network_label.clone(), opts.site_label.clone()];
    keep.extend(opts.by.clone());
    let keep = &keep;
    let mut agg = Aggregator::new(opts);
    agg.input.files = inputs.len() as u64;
    agg.input.files_skipped = skipped;
    let (res_tx, res_rx) = sync_channel::<Parsed>(threads * 2);
    std::thread::scope(|scope| -> Result<(), FleetError> {
        let mut senders = Vec::new();
        for _ in 0..threads {
            let (tx, rx): (SyncSender<Chunk>, Receiver<Chunk>) = sync_channel(2);
            senders.push(tx);
            let out = res_tx.clone();
            scope.spawn(move || {
                let mut scratch = Vec::new();
                for chunk in rx {
                    if out.send(parse_chunk(&chunk, keep, &mut scratch)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(res_tx);
        let inputs = &inputs;
        let counter = consumed.clone();
        scope.spawn(move || {
            let mut reader = Reader {
                workers: senders,
                next: 0,
                consumed: counter,
            };
            reader.run(inputs);
        });
        let state = |agg: &Aggregator| ProgressState {
            bytes_read: consumed.load(Ordering::Relaxed),
            bytes_total,
            reports: agg.reports(),
            elapsed: started.elapsed(),
        };
        let mut told = std::time::Instant::now();
        // Chunks are taken in input order (the parser threads finish out of order;
        // the few ahead wait here), so that line numbers can follow on.
        let mut ahead: BTreeMap<u64, Parsed> = BTreeMap::new();
        let mut next_seq = 0u64;
        let mut line = 0u64;
        for parsed in res_rx {
            ahead.insert(parsed.seq, parsed);
            while let Some(parsed) = ahead.remove(&next_seq) {
                next_seq += 1;
                agg.input.records += parsed.records;
                agg.input.blank += parsed.blank;
                let first = parsed.first_line.unwrap_or(line);
                line = first + parsed.lines;
                let name = &names[parsed.file as usize];
                for (offset, item) in parsed.items {
                    match item {
                        Ok(o) => agg.add(&o),
                        Err(r) => agg.reject(parsed.file, name, first + offset, r),
                    }
                }
            }
            if told.elapsed() >= PROGRESS_EVERY {
                progress.update(&state(&agg), false);
                told = std::time::Instant::now();
            }
        }
        progress.update(&state(&agg), true);
        Ok(())
    })?;
    let summary = agg.finish();
    if summary.input.reports == 0 && summary.input.unknown_schema > 0 {
        let msg = summary
            .input
            .problems
            .iter()
            .find(|p| p.kind == "unknown_schema")
            .map(|p| format!("{}:{}: {}", p.file, p.line, p.message))
            .unwrap_or_default();
        return Err(FleetError::UnknownSchema(msg));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Problem lines of a file spanning several chunks, with blank lines before the
    /// first report and a line too long to keep: the same whether the file is
    /// mapped (plain) or streamed (gzip).
    #[test]
    fn line_numbers_follow_on_across_chunks_mapped_or_streamed() {
        let pad = " ".repeat(99);
        let mut text = String::from("\n \n\n{\"hello\":1}\n"); // line 4
        let mut expected = vec![(4, "foreign")];
        let mut line = 4u64;
        for _ in 0..30_000 {
            line += 1;
            if line == 12_000 || line == 25_000 {
                text.push_str("{not json\n");
                expected.push((line, "malformed"));
            } else {
                text.push_str(&pad);
                text.push('\n');
            }
        }
        line += 1;
        text.push_str(&"x".repeat(MAX_LINE_BYTES + 3 * CHUNK_BYTES));
        text.push('\n');
        expected.push((line, "malformed"));
        line += 1;
        text.push_str("{\"hello\":2}"); // no final newline
        expected.push((line, "foreign"));

        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.ndjson");
        std::fs::write(&plain, &text).unwrap();
        let gz = dir.path().join("a.ndjson.gz");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        assert!(map_file(&plain).is_some());
        assert!(map_file(&gz).is_none());

        for (path, threads) in [(&plain, 1), (&plain, 3), (&gz, 2)] {
            let opts = FleetOptions {
                threads,
                ..FleetOptions::default()
            };
            let s = summarize(&[Source::Path(path.clone())], opts).unwrap();
            let got: Vec<(u64, &str)> = s
                .input
                .problems
                .iter()
                .map(|p| (p.line, p.kind.as_str()))
                .collect();
            assert_eq!(got, expected, "{}", path.display());
            assert!(
                s.input.problems[3].message.contains("longer than"),
                "{}: {:?}",
                path.display(),
                s.input.problems[3]
            );
            assert_eq!(s.input.records, 5, "{}", path.display());
            assert_eq!(s.input.blank_lines, 30_000 - 2, "{}", path.display());
        }
    }
}
