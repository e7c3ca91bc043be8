//! The incident view: disconnects and failed checks bucketed in time across
//! devices. A bucket stands out for a *signature* (a disconnect cause, or a failure
//! class of a check) when the devices showing it are at least `min_devices` above
//! that signature's usual level (the median over all buckets) and at least three
//! times it — so a persistent problem (a firewall that always blocks 8883 at one
//! site, a NAT that always drops idle flows) is not an incident, while a sudden
//! wave is. Consecutive standing-out buckets form a window; windows of different
//! signatures that overlap or touch are one incident. An incident whose devices sit
//! on `min_networks` or more networks and at no single network or site (≥ 90 %) is
//! flagged as hub-side (IoT Hub 404104 cause 3); one confined to a network or site
//! as network-side (cause 2).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::model::DisconnectCause;
use crate::model::Status;

use super::record::{DisconnectObs, Observation};
use super::shared::{IncidentContext, IntMap, IntSet};
use super::summary::{rfc3339_ms, IncidentView, IncidentWindow, LabelCount, TimelineBucket};

/// A share of affected devices at one network or site that makes a window confined to it.
pub const CONFINED_SHARE: f64 = 0.9;

/// What devices have in common in a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signature {
    /// A canary disconnect of this cause.
    Disconnect(DisconnectCause),
    /// A check that failed with this class (shared: a key is made per failed
    /// check, without allocating).
    Check(Arc<str>),
}

impl Signature {
    /// `disconnect:<cause>` or `check:<class>`.
    pub fn label(&self) -> String {
        match self {
            Signature::Disconnect(c) => format!("disconnect:{}", c.as_str()),
            Signature::Check(c) => format!("check:{c}"),
        }
    }
}

/// Devices of a cell: device → (network, site, group).
pub type Members = IntMap<u32, (u32, u32, u32)>;

#[derive(Debug, Default)]
struct Cell {
    disconnected: IntSet<u32>,
    failed: IntSet<u32>,
    checks: u64,
    failed_checks: u64,
}

/// Collects events per (bucket, signature).
#[derive(Debug)]
pub struct IncidentAcc {
    bucket_ms: i64,
    cells: HashMap<(i64, Signature), Members>,
    /// The check signature of each failure class seen.
    checks: HashMap<String, Signature>,
    /// The flagged windows of the last [`IncidentAcc::finish`]: (first, last bucket).
    flagged: Vec<(i64, i64)>,
    /// bucket → devices disconnected, devices with a failed check, checks, failed checks
    timeline: IntMap<i64, Cell>,
}

impl IncidentAcc {
    /// Buckets of `bucket_ms` milliseconds.
    pub fn new(bucket_ms: i64) -> IncidentAcc {
        IncidentAcc {
            bucket_ms: bucket_ms.max(1000),
            cells: HashMap::new(),
            checks: HashMap::new(),
            flagged: Vec::new(),
            timeline: IntMap::default(),
        }
    }

    fn bucket(&self, ms: i64) -> i64 {
        ms.div_euclid(self.bucket_ms)
    }

    /// Start of bucket `b`, Unix ms (saturating: never overflows).
    fn start_ms(&self, b: i64) -> i64 {
        b.saturating_mul(self.bucket_ms)
    }

    /// Adds one canary disconnect (the caller keeps implausible times out).
    pub fn add_disconnect(&mut self, dev: u32, at: (u32, u32, u32), d: &DisconnectObs) {
        if d.cause == DisconnectCause::TokenRenewal {
            return; // the client's own reconnect, not a failure
        }
        let b = self.bucket(i64::try_from(d.at_ms).unwrap_or(i64::MAX));
        self.cells
            .entry((b, Signature::Disconnect(d.cause)))
            .or_default()
            .insert(dev, at);
        self.timeline.entry(b).or_default().disconnected.insert(dev);
    }

    /// Adds the check results of one report (the caller keeps implausible
    /// `started_at` times out).
    pub fn add_check(&mut self, dev: u32, at: (u32, u32, u32), o: &Observation) {
        if o.phases.is_empty() {
            return;
        }
        let b = self.bucket(o.started_ms);
        let cell = self.timeline.entry(b).or_default();
        cell.checks += 1;
        if o.phases.iter().any(|p| p.status == Status::Failed) {
            cell.failed_checks += 1;
        }
        let mut seen: Option<&str> = None;
        for p in &o.phases {
            if p.status != Status::Failed {
                continue;
            }
            let Some(class) = o.class(p) else {
                continue;
            };
            if seen == Some(class) {
                continue;
            }
            seen = Some(class);
            let sig = match self.checks.get(class) {
                Some(sig) => sig.clone(),
                None => {
                    let sig = Signature::Check(class.into());
                    self.checks.insert(class.to_string(), sig.clone());
                    sig
                }
            };
            let key = (b, sig);
            self.cells.entry(key).or_default().insert(dev, at);
            self.timeline.entry(b).or_default().failed.insert(dev);
        }
    }

    /// Flags the windows.
    pub fn finish(&mut self, ctx: &IncidentContext<'_>) -> IncidentView {
        let opts = ctx.opts;
        let auto = ((ctx.devices_total as f64) * 0.02).ceil() as u64;
        let min_devices = opts.incident_min_devices.unwrap_or(auto.max(5)).max(1);
        let mut timeline: Vec<TimelineBucket> = self
            .timeline
            .iter()
            .map(|(b, c)| TimelineBucket {
                start: rfc3339_ms(self.start_ms(*b)),
                start_ms: self.start_ms(*b),
                disconnected_devices: c.disconnected.len() as u64,
                failed_devices: c.failed.len() as u64,
                checks: c.checks,
                failed_checks: c.failed_checks,
                by_signature: Vec::new(),
            })
            .collect();
        timeline.sort_by_key(|t| t.start_ms);
        let mut view = IncidentView {
            bucket_s: (self.bucket_ms / 1000) as u64,
            min_devices,
            min_networks: opts.incident_min_networks,
            timeline,
            windows: Vec::new(),
        };
        // The buckets covered: the reports' span and every event.
        let mut lo = i64::MAX;
        let mut hi = i64::MIN;
        if let Some((a, b)) = ctx.span_ms {
            lo = self.bucket(a);
            hi = self.bucket(b);
        }
        for (b, _) in self.cells.keys() {
            lo = lo.min(*b);
            hi = hi.max(*b);
        }
        if lo > hi {
            return view;
        }
        // Buckets covered, most of them empty: the counts are kept sparse (memory
        // follows the events, not the span of times).
        let n = (hi as i128 - lo as i128 + 1) as u128;
        let mut by_sig: HashMap<&Signature, Vec<(i64, u64)>> = HashMap::new();
        for ((b, sig), m) in &self.cells {
            by_sig.entry(sig).or_default().push((*b, m.len() as u64));
        }
        // Windows per signature: (first bucket, last bucket, signature).
        let mut runs: Vec<(i64, i64, &Signature)> = Vec::new();
        let mut sigs: Vec<_> = by_sig.into_iter().collect();
        sigs.sort_by(|a, b| a.0.cmp(b.0));
        for (sig, counts) in &mut sigs {
            counts.sort_unstable();
            // The median over every bucket covered, the empty ones included.
            let mut sorted: Vec<u64> = counts.iter().map(|c| c.1).collect();
            sorted.sort_unstable();
            let zeros = n - sorted.len() as u128;
            let mid = n / 2;
            let baseline = if mid < zeros {
                0
            } else {
                sorted[(mid - zeros) as usize]
            };
            // A hot bucket has at least `min_devices` (≥ 1) devices: never an empty one.
            let mut run: Option<(i64, i64)> = None;
            for &(b, c) in counts.iter() {
                let hot = c >= baseline + min_devices && c >= 3 * baseline.max(1);
                run = match (hot, run) {
                    (true, Some((s, e))) if e.checked_add(1) == Some(b) => Some((s, b)),
                    (true, prev) => {
                        if let Some((s, e)) = prev {
                            runs.push((s, e, sig));
                        }
                        Some((b, b))
                    }
                    (false, prev) => {
                        if let Some((s, e)) = prev {
                            runs.push((s, e, sig));
                        }
                        None
                    }
                };
            }
            if let Some((s, e)) = run {
                runs.push((s, e, sig));
            }
        }
        // Merge runs that overlap or lie within one bucket of each other.
        runs.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(b.2)));
        let mut merged: Vec<(i64, i64, BTreeSet<&Signature>)> = Vec::new();
        for (s, e, sig) in runs {
            match merged.last_mut() {
                Some(last) if s <= last.1.saturating_add(2) => {
                    last.1 = last.1.max(e);
                    last.2.insert(sig);
                }
                _ => merged.push((s, e, BTreeSet::from([sig]))),
            }
        }
        self.flagged = merged.iter().map(|m| (m.0, m.1)).collect();
        for (s, e, sigs) in merged {
            view.windows.push(self.window(ctx, s, e, &sigs));
        }
        self.fill_causes(&mut view);
        view
    }

    /// Whether bucket `b` lies in a flagged window.
    fn flagged(&self, b: i64) -> bool {
        self.flagged.iter().any(|&(s, e)| s <= b && b <= e)
    }

    /// Devices per signature (`disconnect:<cause>`, `check:<class>`) in every timeline
    /// bucket (token renewals excluded).
    fn fill_causes(&self, view: &mut IncidentView) {
        let mut by_bucket: IntMap<i64, Vec<(String, u64)>> = IntMap::default();
        for ((b, sig), m) in &self.cells {
            by_bucket
                .entry(*b)
                .or_default()
                .push((sig.label(), m.len() as u64));
        }
        for t in &mut view.timeline {
            if let Some(mut v) = by_bucket.remove(&self.bucket(t.start_ms)) {
                v.sort();
                t.by_signature = v;
            }
        }
    }

    /// Per signature, the devices that showed it outside the flagged windows of the
    /// last [`IncidentAcc::finish`]: device → (network, site, group). What stays when
    /// the incidents are taken away is the persistent trouble.
    pub fn outside_windows(&self) -> Vec<(Signature, Members)> {
        let mut m: HashMap<&Signature, Members> = HashMap::new();
        for ((b, sig), members) in &self.cells {
            if self.flagged(*b) {
                continue;
            }
            m.entry(sig)
                .or_default()
                .extend(members.iter().map(|(k, v)| (*k, *v)));
        }
        let mut v: Vec<(Signature, Members)> = m.into_iter().map(|(s, d)| (s.clone(), d)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn window(
        &self,
        ctx: &IncidentContext<'_>,
        s: i64,
        e: i64,
        sigs: &BTreeSet<&Signature>,
    ) -> IncidentWindow {
        let mut members: Members = Members::default();
        for b in s..=e {
            for sig in sigs {
                if let Some(m) = self.cells.get(&(b, (*sig).clone())) {
                    members.extend(m.iter().map(|(k, v)| (*k, *v)));
                }
            }
        }
        let count = |pick: fn(&(u32, u32, u32)) -> u32| -> Vec<LabelCount> {
            let mut m: IntMap<u32, u64> = IntMap::default();
            for v in members.values() {
                *m.entry(pick(v)).or_default() += 1;
            }
            let mut v: Vec<LabelCount> = m
                .into_iter()
                .map(|(k, n)| LabelCount {
                    value: ctx.labels.name(k).to_string(),
                    devices: n,
                })
                .collect();
            v.sort_by(|a, b| b.devices.cmp(&a.devices).then(a.value.cmp(&b.value)));
            v
        };
        let networks = count(|v| v.0);
        let sites = count(|v| v.1);
        let total = members.len() as u64;
        let share_of = |l: &[LabelCount]| {
            l.first()
                .map(|x| x.devices as f64 / total.max(1) as f64)
                .unwrap_or(0.0)
        };
        let opts = ctx.opts;
        let from = rfc3339_ms(self.start_ms(s));
        let to = rfc3339_ms(self.start_ms(e.saturating_add(1)));
        let sig_labels: Vec<String> = sigs.iter().map(|s| s.label()).collect();
        let what = sig_labels.join(", ");
        let (likely, cause, summary) = if share_of(&networks) >= CONFINED_SHARE
            || share_of(&sites) >= CONFINED_SHARE
        {
            let (key, top) = if share_of(&networks) >= CONFINED_SHARE {
                (&opts.network_label, &networks[0])
            } else {
                (&opts.site_label, &sites[0])
            };
            (
                "network",
                Some(2),
                format!(
                    "{total} devices failed the same way ({what}) between {from} and {to}, {} of them with {key}={}: likely that network or site (IoT Hub 404104 cause 2), not the hub",
                    top.devices, top.value
                ),
            )
        } else if networks.len() as u64 >= opts.incident_min_networks {
            (
                "hub",
                Some(3),
                format!(
                    "{total} devices on {} networks and {} sites failed the same way ({what}) at once between {from} and {to}: likely the hub (IoT Hub 404104 cause 3), not the devices' networks",
                    networks.len(),
                    sites.len()
                ),
            )
        } else {
            (
                "unclear",
                None,
                format!(
                    "{total} devices on {} networks failed the same way ({what}) between {from} and {to}: too few networks to tell the hub from the network",
                    networks.len()
                ),
            )
        };
        let mut examples: Vec<&str> = members.keys().map(|d| ctx.devices.name(*d)).collect();
        examples.sort_unstable();
        IncidentWindow {
            from,
            to,
            likely_cause: likely.into(),
            iothub_cause: cause,
            signatures: sig_labels,
            devices: total,
            device_share: total as f64 / ctx.devices_total.max(1) as f64,
            networks,
            sites,
            example_devices: examples.into_iter().take(10).map(str::to_string).collect(),
            summary,
        }
    }
}
