//! The report spool: every report the agent makes is written here atomically
//! (temporary file, fsync, rename, fsync of the directory) before anything else
//! is done with it, so a crash or a power cut loses nothing that was reported
//! as written and never leaves a torn file.
//!
//! Layout: `DIR/NNNNNNNNNNNN-ID.json` are reports not yet delivered, named by a
//! sequence number (write order, independent of the clock, which may be wrong
//! on a device); `DIR/delivered/` holds the ones whose upload was acknowledged.
//! Retention (count, age, total bytes) removes delivered reports first, then the
//! oldest undelivered ones. Sizes are what the files take on disk (allocated
//! blocks, `st_blocks`), not their lengths: on a small file system a 1 KiB report
//! takes a 4 KiB block. And when a write fails because the file system is full
//! (ENOSPC, or EDQUOT over a quota) the spool makes room the same way — delivered
//! reports first, then, with a warning, the oldest undelivered — and writes again,
//! so a full disk never costs a new report while old ones could make room.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::fsio;

/// Retention limits.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Most reports kept (delivered and not).
    pub max_reports: usize,
    /// Oldest report kept (by file time).
    pub max_age: Duration,
    /// Most bytes kept, counted as allocated on disk.
    pub max_bytes: u64,
}

/// A spooled report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Write-order sequence number.
    pub seq: u64,
    /// The report id.
    pub id: String,
    /// Its file.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
    /// Bytes allocated on disk (`st_blocks` × 512): what retention counts.
    pub allocated: u64,
    /// Whether its upload was acknowledged.
    pub delivered: bool,
    modified: SystemTime,
}

/// What a retention pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Delivered reports removed.
    pub delivered: usize,
    /// Undelivered reports removed (lost to the fleet: logged).
    pub undelivered: usize,
}

/// The spool directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    next_seq: u64,
    retention: Retention,
    evicted: Pruned,
}

/// Whether a write failed because the file system (or the quota) is full.
pub fn is_out_of_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Most rounds of eviction one write makes before it gives up.
const MAX_EVICTION_ROUNDS: usize = 64;

const DELIVERED: &str = "delivered";

impl Spool {
    /// Opens (creating) the spool, removes temporary files a crash left behind and
    /// finds the next sequence number.
    pub fn open(dir: &Path, retention: Retention) -> io::Result<Spool> {
        fs::create_dir_all(dir.join(DELIVERED))?;
        let mut max = 0;
        for sub in [dir.to_path_buf(), dir.join(DELIVERED)] {
            for e in fs::read_dir(&sub)? {
                let e = e?;
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.contains(".tmp-") {
                    // A write that never reached its rename: not a report.
                    let _ = fs::remove_file(e.path());
                    continue;
                }
                if let Some((seq, _)) = parse_name(&name) {
                    max = max.max(seq);
                }
            }
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            next_seq: max + 1,
            retention,
            evicted: Pruned::default(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Changes the retention limits (config reload).
    pub fn set_retention(&mut self, retention: Retention) {
        self.retention = retention;
    }

    /// Writes one report (its JSON) atomically; returns its entry. When the file
    /// system is full, makes room (delivered reports first, then the oldest
    /// undelivered, with a warning) and writes again. A failed write leaves no file.
    pub fn write(&mut self, id: &str, json: &[u8]) -> io::Result<Entry> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "report id must be letters, digits and '-'",
            ));
        }
        let seq = self.next_seq;
        let path = self.dir.join(format!("{seq:012}-{id}.json"));
        let mut rounds = 0;
        loop {
            match fsio::write_atomic(&path, json) {
                Ok(()) => break,
                Err(e) if is_out_of_space(&e) && rounds < MAX_EVICTION_ROUNDS => {
                    rounds += 1;
                    // Room for the report, its temporary twin and a directory block.
                    let need = (json.len() as u64).div_ceil(4096) * 4096 + 8192;
                    let freed = self.evict_for_space(need)?;
                    if freed == Pruned::default() {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.next_seq += 1;
        let allocated = fs::metadata(&path)
            .map(|m| m.blocks() * 512)
            .unwrap_or(json.len() as u64);
        Ok(Entry {
            seq,
            id: id.to_string(),
            path,
            bytes: json.len() as u64,
            allocated,
            delivered: false,
            modified: SystemTime::now(),
        })
    }

    /// Reports removed to make room for a write since the spool was opened.
    pub fn evicted_for_space(&self) -> Pruned {
        self.evicted
    }

    /// Removes reports to free about `need` allocated bytes: delivered ones oldest
    /// first, then undelivered ones oldest first (each logged).
    fn evict_for_space(&mut self, need: u64) -> io::Result<Pruned> {
        let all = self.all()?;
        let mut freed = 0u64;
        let mut pruned = Pruned::default();
        for delivered_pass in [true, false] {
            for e in all.iter().filter(|e| e.delivered == delivered_pass) {
                if freed >= need {
                    break;
                }
                match fs::remove_file(&e.path) {
                    Ok(()) => {
                        freed += e.allocated.max(1);
                        if e.delivered {
                            pruned.delivered += 1;
                        } else {
                            pruned.undelivered += 1;
                            tracing::warn!(
                                id = %e.id,
                                spool = %self.dir.display(),
                                "the file system is full and no delivered report is left: removed the oldest undelivered report to keep the new one"
                            );
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => return Err(err),
                }
            }
        }
        if pruned != Pruned::default() {
            tracing::info!(
                delivered = pruned.delivered,
                undelivered = pruned.undelivered,
                spool = %self.dir.display(),
                "the file system is full: removed reports to make room"
            );
            let _ = fsio::sync_dir(&self.dir);
            let _ = fsio::sync_dir(&self.dir.join(DELIVERED));
        }
        self.evicted.delivered += pruned.delivered;
        self.evicted.undelivered += pruned.undelivered;
        Ok(pruned)
    }

    /// Reports not yet delivered, oldest first.
    pub fn pending(&self) -> io::Result<Vec<Entry>> {
        let mut v = list(&self.dir, false)?;
        v.sort_by_key(|e| e.seq);
        Ok(v)
    }

    /// Every report, oldest first.
    pub fn all(&self) -> io::Result<Vec<Entry>> {
        let mut v = list(&self.dir, false)?;
        v.extend(list(&self.dir.join(DELIVERED), true)?);
        v.sort_by_key(|e| e.seq);
        Ok(v)
    }

    /// Marks a report delivered (after its PUBACK): a rename into `delivered/`,
    /// made durable before returning.
    pub fn mark_delivered(&self, entry: &Entry) -> io::Result<()> {
        let name = entry
            .path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        fs::rename(&entry.path, self.dir.join(DELIVERED).join(name))?;
        fsio::sync_dir(&self.dir)?;
        fsio::sync_dir(&self.dir.join(DELIVERED))
    }

    /// Applies the retention limits; delivered reports go first, then the oldest
    /// undelivered ones.
    pub fn prune(&self, now: SystemTime) -> io::Result<Pruned> {
        let all = self.all()?;
        let victims = select_victims(&all, self.retention, now);
        let mut pruned = Pruned::default();
        for e in victims {
            match fs::remove_file(&e.path) {
                Ok(()) => {
                    if e.delivered {
                        pruned.delivered += 1;
                    } else {
                        pruned.undelivered += 1;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        if pruned != Pruned::default() {
            let _ = fsio::sync_dir(&self.dir);
            let _ = fsio::sync_dir(&self.dir.join(DELIVERED));
        }
        Ok(pruned)
    }
}

/// Which entries retention removes (pure: `entries` oldest first).
fn select_victims(entries: &[Entry], r: Retention, now: SystemTime) -> Vec<&Entry> {
    let mut keep: Vec<bool> = vec![true; entries.len()];
    // Age first: anything too old goes, delivered or not.
    for (i, e) in entries.iter().enumerate() {
        let age = now.duration_since(e.modified).unwrap_or_default();
        if age > r.max_age {
            keep[i] = false;
        }
    }
    let count = |keep: &[bool]| keep.iter().filter(|k| **k).count();
    let bytes = |keep: &[bool]| {
        entries
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(e, _)| e.allocated)
            .sum::<u64>()
    };
    let mut kept_count = count(&keep);
    let mut kept_bytes = bytes(&keep);
    // Then count and bytes: delivered oldest first, then undelivered oldest first.
    for delivered_pass in [true, false] {
        for (i, e) in entries.iter().enumerate() {
            if kept_count <= r.max_reports && kept_bytes <= r.max_bytes {
                break;
            }
            if keep[i] && e.delivered == delivered_pass {
                keep[i] = false;
                kept_count -= 1;
                kept_bytes -= e.allocated;
            }
        }
    }
    entries
        .iter()
        .zip(keep)
        .filter(|(_, k)| !k)
        .map(|(e, _)| e)
        .collect()
}

fn parse_name(name: &str) -> Option<(u64, String)> {
    let stem = name.strip_suffix(".json")?;
    let (seq, id) = stem.split_once('-')?;
    if seq.len() != 12 || id.is_empty() {
        return None;
    }
    Some((seq.parse().ok()?, id.to_string()))
}

fn list(dir: &Path, delivered: bool) -> io::Result<Vec<Entry>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some((seq, id)) = parse_name(&name.to_string_lossy()) else {
            continue;
        };
        let meta = match e.metadata() {
            Ok(m) if m.is_file() => m,
            _ => continue,
        };
        v.push(Entry {
            seq,
            id,
            path: e.path(),
            bytes: meta.len(),
            allocated: meta.blocks() * 512,
            delivered,
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    Ok(v)
}

/// The NDJSON log for shippers: one report per line, appended; rotated to
/// `PATH.1` … `PATH.KEEP` when the next line would pass `max_bytes`. A line cut
/// short by a crash is removed when the file is next opened.
#[derive(Debug)]
pub struct Ndjson {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
}

impl Ndjson {
    /// Sets up the log (nothing is opened until the first append).
    pub fn new(path: &Path, max_bytes: u64, keep: u32) -> Ndjson {
        Ndjson {
            path: path.to_path_buf(),
            max_bytes,
            keep,
        }
    }

    /// Appends one report (compact JSON without newlines) as a line.
    pub fn append(&self, compact_json: &str) -> io::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        debug_assert!(!compact_json.contains('\n'));
        let line_len = compact_json.len() as u64 + 1;
        let size = match fs::metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        if size > 0 && size + line_len > self.max_bytes {
            self.rotate()?;
        }
        let mut f = fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)?;
        // Drop a torn last line (a crash mid-append) before adding a new one.
        let len = f.metadata()?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            use std::io::Read;
            f.seek(SeekFrom::Start(len - 1))?;
            f.read_exact(&mut last)?;
            if last[0] != b'\n' {
                let keep = last_newline_end(&self.path)?;
                f.set_len(keep)?;
            }
        }
        let mut line = Vec::with_capacity(line_len as usize);
        line.extend_from_slice(compact_json.as_bytes());
        line.push(b'\n');
        let before = f.metadata()?.len();
        let written = f.write_all(&line).and_then(|()| f.sync_data());
        if let Err(e) = written {
            // A full disk must not leave half a line behind.
            let _ = f.set_len(before);
            return Err(e);
        }
        Ok(())
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&self) -> io::Result<()> {
        if self.keep == 0 {
            return fs::remove_file(&self.path);
        }
        let _ = fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            match fs::rename(self.rotated(n), self.rotated(n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        fs::rename(&self.path, self.rotated(1))
    }
}

fn last_newline_end(path: &Path) -> io::Result<u64> {
    let data = fs::read(path)?;
    Ok(data
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i as u64 + 1)
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retention() -> Retention {
        Retention {
            max_reports: 1000,
            max_age: Duration::from_secs(86_400),
            max_bytes: 1 << 30,
        }
    }

    #[test]
    fn writes_in_order_and_survives_reopen() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path(), retention()).unwrap();
        let a = s.write("aaaa-1", b"{\"a\":1}").unwrap();
        let b = s.write("bbbb-2", b"{\"b\":2}").unwrap();
        assert!(a.seq < b.seq);
        // A crash leftover is cleaned, and numbering continues after a reopen.
        std::fs::write(d.path().join(".000000000009-x.json.tmp-1"), b"{").unwrap();
        let mut s = Spool::open(d.path(), retention()).unwrap();
        let c = s.write("cccc-3", b"{}").unwrap();
        assert!(c.seq > b.seq);
        let ids: Vec<_> = s.pending().unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["aaaa-1", "bbbb-2", "cccc-3"]);
        assert!(!d.path().join(".000000000009-x.json.tmp-1").exists());
    }

    #[test]
    fn delivered_leave_pending_and_are_pruned_first() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(
            d.path(),
            Retention {
                max_reports: 3,
                ..retention()
            },
        )
        .unwrap();
        let e: Vec<_> = (0..4)
            .map(|i| s.write(&format!("id-{i}"), b"{}").unwrap())
            .collect();
        s.mark_delivered(&e[2]).unwrap();
        assert_eq!(s.pending().unwrap().len(), 3);
        let p = s.prune(SystemTime::now()).unwrap();
        assert_eq!(
            p,
            Pruned {
                delivered: 1,
                undelivered: 0
            }
        );
        let left: Vec<_> = s.all().unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(left, ["id-0", "id-1", "id-3"]);
        // Over the limit with nothing delivered: the oldest undelivered goes.
        s.write("id-4", b"{}").unwrap();
        let p = s.prune(SystemTime::now()).unwrap();
        assert_eq!(p.undelivered, 1);
        let left: Vec<_> = s.all().unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(left, ["id-1", "id-3", "id-4"]);
    }

    #[test]
    fn byte_limit_and_age() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path(), retention()).unwrap();
        let mut block = 0;
        for i in 0..5 {
            block = s.write(&format!("id-{i}"), &[b' '; 100]).unwrap().allocated;
        }
        // Retention counts what the files take on disk, not their 100 bytes.
        assert!(block >= 100, "{block}");
        s.set_retention(Retention {
            max_bytes: block * 5 / 2,
            ..retention()
        });
        s.prune(SystemTime::now()).unwrap();
        let total: u64 = s.all().unwrap().iter().map(|e| e.allocated).sum();
        assert!(total <= block * 5 / 2, "{total}");
        assert_eq!(s.all().unwrap().len(), 2);
        // Everything is "old" a year from now.
        let later = SystemTime::now() + Duration::from_secs(365 * 86_400);
        s.prune(later).unwrap();
        assert!(s.all().unwrap().is_empty());
    }

    #[test]
    fn refuses_odd_ids() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path(), retention()).unwrap();
        assert!(s.write("../evil", b"{}").is_err());
        assert!(s.write("", b"{}").is_err());
    }

    #[test]
    fn ndjson_rotates_and_repairs_a_torn_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.ndjson");
        let log = Ndjson::new(&p, 100, 2);
        let line = format!("{{\"x\":\"{}\"}}", "a".repeat(30)); // 39 bytes + newline
        for _ in 0..2 {
            log.append(&line).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 2);
        log.append(&line).unwrap(); // would pass 100 bytes: rotates first
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 1);
        assert!(d.path().join("r.ndjson.1").exists());
        for _ in 0..4 {
            log.append(&line).unwrap();
        }
        assert!(d.path().join("r.ndjson.2").exists());
        assert!(!d.path().join("r.ndjson.3").exists());
        // A torn line from a crash is dropped on the next append.
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, b"{\"torn\":").unwrap();
        log.append("{\"ok\":1}").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.contains("torn"), "{text}");
        for l in text.lines() {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
    }
}
