//! Exit codes, in the monitoring-plugins convention, so hubprobe drops into Nagios,
//! Icinga, Zabbix or a shell script unchanged.

use crate::model::report::Verdict;

/// The process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// 0: every probed endpoint works.
    Ok = 0,
    /// 1: degraded (an endpoint fails but another works, a certificate expires soon,
    /// the clock is off, a legacy root is used ...).
    Warning = 1,
    /// 2: the device cannot reach the hub the way it is configured.
    Critical = 2,
    /// 3: hubprobe could not run: bad usage, bad input, unwritable output, internal error.
    Unknown = 3,
}

impl ExitCode {
    /// The numeric code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl Verdict {
    /// The exit code of this verdict (monitoring-plugins convention).
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(self)
    }
}

impl From<Verdict> for ExitCode {
    /// The exit code of a verdict (monitoring-plugins convention).
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Ok => ExitCode::Ok,
            Verdict::Warning => ExitCode::Warning,
            Verdict::Critical => ExitCode::Critical,
            Verdict::Unknown => ExitCode::Unknown,
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c.code())
    }
}
