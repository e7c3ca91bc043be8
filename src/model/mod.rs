//! The report model, on the ground floor: everything a report holds, typed.
//!
//! Probes, the tuner and the agent produce these types; `diagnose` reads them;
//! `report/` renders them; `fleet` reads their JSON back. This module imports
//! nothing else of hubprobe, and its serde shape is the JSON Schema in
//! `docs/report.schema.json` (`hubprobe.report/1`).

pub mod canary;
