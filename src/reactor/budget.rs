//! How much work one turn of the loop may do.
//!
//! A reactor serves every connection from one thread, so a turn that runs
//! long delays everyone: a collar's `PING`, a `/health` probe, the next
//! accept. Each kind of work therefore has a budget per turn; what is left
//! over is carried to the next turn, in order (round robin), never done by
//! re-entering a handler. Every time a budget runs out it is counted
//! ([`crate::stats::Stats::budget_spent`]), so an operator sees which
//! limit shapes the load.

use std::time::Duration;

/// The per-turn budgets. Each is at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Reads of the 64 KiB scratch buffer per connection per turn.
    pub reads: usize,
    /// Requests answered per connection per turn (a protocol's unit of
    /// work: an HTTP request).
    pub requests: usize,
    /// Connections accepted per listener per turn.
    pub accepts: usize,
    /// Timers fired per turn.
    pub timers: usize,
    /// Bytes written to one connection per turn.
    pub write_bytes: usize,
    /// Bytes written to all connections together per turn.
    pub turn_write_bytes: usize,
    /// Time the run phase may take in one turn, all connections together:
    /// the per-connection budgets bound one connection, this bounds a
    /// crowd of them (many clients each asking for large pages, say).
    pub turn_time: Duration,
}

impl Default for Budgets {
    fn default() -> Budgets {
        Budgets {
            reads: 1,
            requests: 16,
            accepts: 256,
            timers: 1024,
            write_bytes: 64 * 1024,
            turn_write_bytes: 1024 * 1024,
            turn_time: Duration::from_millis(2),
        }
    }
}

/// The budgets, for counting which one ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Reads = 0,
    Requests = 1,
    Accepts = 2,
    Timers = 3,
    WriteBytes = 4,
    TurnWriteBytes = 5,
    TurnTime = 6,
}

impl Budget {
    pub const ALL: [Budget; 7] = [
        Budget::Reads,
        Budget::Requests,
        Budget::Accepts,
        Budget::Timers,
        Budget::WriteBytes,
        Budget::TurnWriteBytes,
        Budget::TurnTime,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Budget::Reads => "reads",
            Budget::Requests => "requests",
            Budget::Accepts => "accepts",
            Budget::Timers => "timers",
            Budget::WriteBytes => "write-bytes",
            Budget::TurnWriteBytes => "turn-write-bytes",
            Budget::TurnTime => "turn-time",
        }
    }
}
