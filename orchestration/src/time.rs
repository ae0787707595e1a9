//! The machines' notion of time.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A point in time, in milliseconds on a clock the caller chooses.
///
/// Not `std::time::Instant` on purpose: every transition time is journaled, and a
/// monotonic instant means nothing after a restart. The agent passes wall-clock
/// milliseconds since the Unix epoch; tests pass whatever they like. The machines never
/// read a clock themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Time(u64);

impl Time {
    /// The origin of the caller's clock.
    pub const ZERO: Time = Time(0);

    /// A time `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Time(ms)
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + ms`, saturating instead of wrapping so a huge timeout means "never".
    pub const fn plus_millis(self, ms: u64) -> Self {
        Time(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub const fn millis_since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}
