//! The small types the accumulators share: integer-keyed maps and sets with a cheap
//! hasher, the string interner, and what the incident view reads from the
//! aggregation. [`super::aggregate`] and [`super::incident`] both import this module
//! and not each other's internals.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use super::FleetOptions;

/// The first instant a report or disconnect time is believed: 2000-01-01T00:00:00Z.
/// Earlier times come from a device clock that was never set.
pub const PLAUSIBLE_FROM_MS: i64 = 946_684_800_000;
/// The end of the believed times: 2100-01-01T00:00:00Z (exclusive). A later time
/// is a device clock gone wrong, not a date to put on a timeline.
pub const PLAUSIBLE_TO_MS: i64 = 4_102_444_800_000;

/// True when a Unix-ms time lies in [`PLAUSIBLE_FROM_MS`, `PLAUSIBLE_TO_MS`):
/// only those are bucketed in time and make the summary's span; the others are
/// counted as clock problems.
pub fn plausible_ms(ms: i64) -> bool {
    (PLAUSIBLE_FROM_MS..PLAUSIBLE_TO_MS).contains(&ms)
}

/// Hashes the accumulators' integer keys (interned indices and time buckets, never
/// raw input): one multiply (FxHash) instead of SipHash.
#[derive(Debug, Default, Clone, Copy)]
pub struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64);
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A set of integer keys hashed with [`IntHasher`].
pub type IntSet<T> = HashSet<T, BuildHasherDefault<IntHasher>>;
/// A map from integer keys hashed with [`IntHasher`].
pub type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// Interns strings to small integers.
#[derive(Debug, Default)]
pub struct Interner {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Interner {
    /// The id of `s`, adding it when new.
    pub fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.to_string());
        self.ids.insert(s.to_string(), i);
        i
    }
    /// The string of an id.
    pub fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }
    /// How many strings.
    pub fn len(&self) -> usize {
        self.names.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// What the incident view needs from the aggregation.
pub struct IncidentContext<'a> {
    /// Device names.
    pub devices: &'a Interner,
    /// Label values (networks, sites).
    pub labels: &'a Interner,
    /// Devices seen.
    pub devices_total: u64,
    /// First and last report start, Unix ms.
    pub span_ms: Option<(i64, i64)>,
    /// The options.
    pub opts: &'a FleetOptions,
}

/// A larger (non-NDJSON) document is rejected.
pub const MAX_DOCUMENT_BYTES: usize = 64 << 20;

/// Drops a UTF-8 byte order mark (some Windows tools start every file with one).
pub fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)
}
