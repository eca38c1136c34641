//! Pool policy: given a pool's configuration, its worker counts and the clock, decide
//! whether to fork a worker, stop an idle one, or wait. Pure: no processes, no clock reads,
//! so every rule of listen.md §2 is unit-tested here without forking.

use std::time::Duration;

/// A pool's options from `listen{}` (validated in Lua before they get here).
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    /// Desired number of idle (spare) workers.
    pub pre_fork: u32,
    /// Minimum number of workers.
    pub min_fork: u32,
    /// Hard maximum of workers.
    pub max_fork: u32,
    /// Pause between creations of spare workers.
    pub fork_delay: Duration,
    /// Pause after a failed fork or a failing `prepare`.
    pub fork_error_delay: Duration,
    /// While there are more idle workers than `pre_fork` (and more than `min_fork` in all),
    /// one idle worker is stopped per `exit_delay`.
    pub exit_delay: Duration,
}

impl Default for PoolConfig {
    /// The defaults of listen.md §2.
    fn default() -> Self {
        PoolConfig {
            pre_fork: 1,
            min_fork: 2,
            max_fork: 16,
            fork_delay: Duration::from_millis(250),
            fork_error_delay: Duration::from_secs(2),
            exit_delay: Duration::from_secs(60),
        }
    }
}

/// Worker counts of a pool, as the master knows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Forked, still running `prepare` (will be idle soon).
    pub starting: u32,
    pub idle: u32,
    pub busy: u32,
}

impl Counts {
    pub fn total(&self) -> u32 {
        self.starting + self.idle + self.busy
    }
    /// Workers that are, or will soon be, ready for a connection.
    pub fn spare(&self) -> u32 {
        self.starting + self.idle
    }
}

/// What the master should do for a pool now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Fork,
    StopIdle,
    /// Nothing now; ask again at the latest after this long (None: only on an event).
    Wait(Option<Duration>),
}

/// Timing state the policy keeps per pool. Times are offsets from an arbitrary epoch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pool {
    pub config: PoolConfig,
    last_fork: Option<Duration>,
    /// No fork before this time (after a fork or `prepare` failure).
    error_until: Option<Duration>,
    /// When the surplus of idle workers was first seen (exit_delay runs from here).
    surplus_since: Option<Duration>,
}

impl Pool {
    pub fn new(config: PoolConfig) -> Self {
        Pool {
            config,
            ..Default::default()
        }
    }

    /// Records a fork (successful or not) at `now`.
    pub fn forked(&mut self, now: Duration) {
        self.last_fork = Some(now);
    }

    /// Records a failed fork or failing `prepare`: no fork for `fork_error_delay`.
    pub fn fork_failed(&mut self, now: Duration) {
        self.error_until = Some(now + self.config.fork_error_delay);
    }

    /// Records that an idle worker was stopped at `now`: the next one waits a full delay.
    pub fn stopped_idle(&mut self, now: Duration) {
        self.surplus_since = Some(now);
    }

    /// Whether a waiting client would make [`decide`](Self::decide) fork now: below
    /// `max_fork` and not pausing after a failure. The master watches the listeners for
    /// pending connections only then, so it never spins on a connection it cannot serve.
    pub fn can_fork(&self, counts: Counts, now: Duration) -> bool {
        counts.total() < self.config.max_fork && self.error_until.is_none_or(|until| now >= until)
    }

    /// Whether the policy is timing surplus idle workers (an exit_delay is running).
    pub fn tracking_surplus(&self) -> bool {
        self.surplus_since.is_some()
    }

    /// Decides the next action. `pending` = a connection waits and no worker is idle.
    pub fn decide(&mut self, counts: Counts, pending: bool, now: Duration) -> Action {
        let c = &self.config;
        let total = counts.total();
        let mut wake: Option<Duration> = None;
        let mut earliest = |at: Duration| {
            let d = at.saturating_sub(now);
            wake = Some(wake.map_or(d, |w: Duration| w.min(d)));
        };

        // Stopping surplus idle workers, one per exit_delay.
        if counts.idle > c.pre_fork && total > c.min_fork {
            let since = *self.surplus_since.get_or_insert(now);
            if now >= since + c.exit_delay {
                return Action::StopIdle;
            }
            earliest(since + c.exit_delay);
        } else {
            self.surplus_since = None;
        }

        if total >= c.max_fork {
            return Action::Wait(wake);
        }
        if let Some(until) = self.error_until {
            if now < until {
                earliest(until);
                return Action::Wait(wake);
            }
            self.error_until = None;
        }
        // Below the minimum, or a client waits with no spare worker: fork at once.
        if total < c.min_fork || (pending && counts.spare() == 0) {
            return Action::Fork;
        }
        // Spare workers are created at most one per fork_delay.
        if counts.spare() < c.pre_fork {
            let at = self.last_fork.map_or(now, |t| t + c.fork_delay);
            if now >= at {
                return Action::Fork;
            }
            earliest(at);
        }
        Action::Wait(wake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn counts(starting: u32, idle: u32, busy: u32) -> Counts {
        Counts {
            starting,
            idle,
            busy,
        }
    }

    fn pool(pre: u32, min: u32, max: u32) -> Pool {
        Pool::new(PoolConfig {
            pre_fork: pre,
            min_fork: min,
            max_fork: max,
            ..Default::default()
        })
    }

    #[test]
    fn table_of_decisions() {
        // (pre, min, max, counts, pending, expected) at now = 10 s, no history
        let rows = [
            (1, 2, 16, counts(0, 0, 0), false, Action::Fork), // below min
            (1, 2, 16, counts(1, 0, 0), false, Action::Fork), // still below min
            (1, 2, 16, counts(0, 2, 0), false, Action::Wait(None)), // satisfied
            (1, 2, 16, counts(0, 0, 2), false, Action::Fork), // no spare: pre_fork wants 1
            (0, 0, 16, counts(0, 0, 2), false, Action::Wait(None)), // no spares wanted
            (0, 0, 16, counts(0, 0, 2), true, Action::Fork),  // a client waits
            (0, 0, 2, counts(0, 0, 2), true, Action::Wait(None)), // but max reached
            (0, 0, 16, counts(1, 0, 2), true, Action::Wait(None)), // one is starting already
            (3, 2, 4, counts(0, 1, 3), false, Action::Wait(None)), // max caps pre_fork
        ];
        for (i, (pre, min, max, c, pending, want)) in rows.into_iter().enumerate() {
            assert_eq!(
                pool(pre, min, max).decide(c, pending, ms(10_000)),
                want,
                "row {i}"
            );
        }
    }

    #[test]
    fn spare_forks_are_spaced_by_fork_delay() {
        let mut p = pool(3, 0, 16);
        p.forked(ms(1000));
        assert_eq!(
            p.decide(counts(1, 0, 0), false, ms(1100)),
            Action::Wait(Some(ms(150)))
        );
        assert_eq!(p.decide(counts(1, 0, 0), false, ms(1250)), Action::Fork);
    }

    #[test]
    fn can_fork_only_below_max_and_outside_error_pauses() {
        let mut p = pool(0, 0, 2);
        assert!(p.can_fork(counts(0, 0, 1), ms(0)));
        assert!(!p.can_fork(counts(0, 0, 2), ms(0)));
        p.fork_failed(ms(1000));
        assert!(!p.can_fork(counts(0, 0, 0), ms(2999)));
        assert!(p.can_fork(counts(0, 0, 0), ms(3000)));
    }

    #[test]
    fn replacing_below_min_ignores_fork_delay() {
        let mut p = pool(1, 4, 16);
        p.forked(ms(1000));
        assert_eq!(p.decide(counts(0, 1, 2), false, ms(1001)), Action::Fork);
    }

    #[test]
    fn fork_error_delay_pauses_every_fork() {
        let mut p = pool(1, 2, 16);
        p.fork_failed(ms(1000));
        assert_eq!(
            p.decide(counts(0, 0, 0), true, ms(1500)),
            Action::Wait(Some(ms(1500)))
        );
        assert_eq!(p.decide(counts(0, 0, 0), true, ms(3000)), Action::Fork);
    }

    #[test]
    fn surplus_idle_workers_stop_one_per_exit_delay() {
        let mut p = pool(1, 2, 16);
        // 5 idle > pre_fork 1, total 5 > min 2: the delay starts now
        assert_eq!(
            p.decide(counts(0, 5, 0), false, ms(0)),
            Action::Wait(Some(ms(60_000)))
        );
        assert_eq!(
            p.decide(counts(0, 5, 0), false, ms(59_999)),
            Action::Wait(Some(ms(1)))
        );
        assert_eq!(
            p.decide(counts(0, 5, 0), false, ms(60_000)),
            Action::StopIdle
        );
        p.stopped_idle(ms(60_000));
        assert_eq!(
            p.decide(counts(0, 4, 0), false, ms(60_001)),
            Action::Wait(Some(ms(59_999)))
        );
        // the surplus disappears (clients arrived): the timer resets
        assert_eq!(
            p.decide(counts(0, 1, 3), false, ms(70_000)),
            Action::Wait(None)
        );
        assert_eq!(
            p.decide(counts(0, 4, 0), false, ms(80_000)),
            Action::Wait(Some(ms(60_000)))
        );
    }

    #[test]
    fn never_stops_below_min_fork() {
        let mut p = pool(0, 3, 16);
        assert_eq!(p.decide(counts(0, 3, 0), false, ms(0)), Action::Wait(None));
        assert_eq!(
            p.decide(counts(0, 3, 0), false, ms(1_000_000)),
            Action::Wait(None)
        );
    }

    #[test]
    fn simulation_reaches_steady_state_without_exceeding_max() {
        // Run the policy against a simulated pool under changing load.
        let mut p = pool(2, 2, 6);
        let mut c = Counts::default();
        let mut now = ms(0);
        for step in 0..3500u64 {
            let busy_wanted = match step {
                0..=499 => 0,
                500..=999 => 10, // more load than max_fork
                _ => 1,
            };
            // workers start instantly; clients take idle workers
            c.idle += c.starting;
            c.starting = 0;
            while c.busy < busy_wanted && c.idle > 0 {
                c.idle -= 1;
                c.busy += 1;
            }
            while c.busy > busy_wanted {
                c.busy -= 1;
                c.idle += 1;
            }
            let pending = c.busy < busy_wanted;
            match p.decide(c, pending, now) {
                Action::Fork => {
                    p.forked(now);
                    c.starting += 1;
                }
                Action::StopIdle => {
                    p.stopped_idle(now);
                    c.idle -= 1;
                }
                Action::Wait(_) => {}
            }
            assert!(c.total() <= 6, "step {step}: {c:?}");
            now += ms(100);
        }
        // after the load drops to one client: one busy, pre_fork (2) idle
        assert_eq!((c.busy, c.idle), (1, 2));
    }
}
