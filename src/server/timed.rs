//! Interval and main listeners: when each is due, and that a given one never runs twice at
//! once. Pure: the master feeds it the clock (an offset from its start) and the events.

use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub enum TimedKind {
    /// Runs every `delay`; `strict` keeps a fixed grid (missed slots are skipped), otherwise
    /// the next run is planned from the end of the previous one.
    Interval { delay: Duration, strict: bool },
    /// Runs once, right after start-up.
    Main,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimedState {
    /// Planned for `next_at`.
    Waiting,
    /// Put into the pool's job queue; no worker took it yet.
    Queued,
    /// A worker runs it.
    Running,
    /// A main listener that ran; it never runs again.
    Spent,
}

#[derive(Clone, Debug)]
pub struct Timed {
    pub kind: TimedKind,
    pub state: TimedState,
    /// When it is (or was) planned to run next.
    pub next_at: Duration,
}

impl Timed {
    /// A timed listener at start-up (`now` = 0): intervals first run one delay after start.
    pub fn new(kind: TimedKind) -> Self {
        let next_at = match &kind {
            TimedKind::Interval { delay, .. } => *delay,
            TimedKind::Main => Duration::ZERO,
        };
        Timed {
            kind,
            state: TimedState::Waiting,
            next_at,
        }
    }

    pub fn is_main(&self) -> bool {
        self.kind == TimedKind::Main
    }

    pub fn due(&self, now: Duration) -> bool {
        self.state == TimedState::Waiting && self.next_at <= now
    }

    /// Time until it is due (None while queued, running or spent).
    pub fn wait_time(&self, now: Duration) -> Option<Duration> {
        (self.state == TimedState::Waiting).then(|| self.next_at.saturating_sub(now))
    }

    /// The run ended at `now` (the handler returned, or its worker died): plan the next one.
    pub fn ended(&mut self, now: Duration) {
        match self.kind {
            TimedKind::Main => self.state = TimedState::Spent,
            TimedKind::Interval { delay, strict } => {
                self.state = TimedState::Waiting;
                self.next_at = next_interval_time(self.next_at, delay, strict, now);
            }
        }
    }
}

/// Strict intervals keep their grid (missed slots are skipped); others restart from `now`.
pub fn next_interval_time(
    planned: Duration,
    delay: Duration,
    strict: bool,
    now: Duration,
) -> Duration {
    if !strict || delay.is_zero() {
        return now + delay;
    }
    let mut next = planned + delay;
    if next <= now {
        let behind = (now - next).as_nanos() / delay.as_nanos() + 1;
        next += delay.saturating_mul(behind.min(u32::MAX as u128) as u32);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn interval_planning() {
        // non-strict: from the end of the run
        assert_eq!(next_interval_time(s(10), s(10), false, s(13)), s(23));
        // strict: on the grid
        assert_eq!(next_interval_time(s(10), s(10), true, s(13)), s(20));
        // strict, a run overran two slots: missed slots are skipped
        assert_eq!(next_interval_time(s(10), s(10), true, s(35)), s(40));
        // strict, exactly on a slot boundary: the next one
        assert_eq!(next_interval_time(s(10), s(10), true, s(20)), s(30));
    }

    #[test]
    fn an_interval_is_never_due_while_queued_or_running() {
        let mut t = Timed::new(TimedKind::Interval {
            delay: s(2),
            strict: false,
        });
        assert!(!t.due(s(1)));
        assert_eq!(t.wait_time(s(1)), Some(s(1)));
        assert!(t.due(s(2)));
        t.state = TimedState::Queued;
        assert!(!t.due(s(9)));
        assert_eq!(t.wait_time(s(9)), None);
        t.state = TimedState::Running;
        assert!(!t.due(s(9)));
        t.ended(s(10));
        assert_eq!((t.state, t.next_at), (TimedState::Waiting, s(12)));
    }

    #[test]
    fn main_runs_once_at_once() {
        let mut m = Timed::new(TimedKind::Main);
        assert!(m.due(Duration::ZERO));
        m.state = TimedState::Running;
        m.ended(s(5));
        assert_eq!(m.state, TimedState::Spent);
        assert!(!m.due(s(100)));
        assert_eq!(m.wait_time(s(100)), None);
    }
}
