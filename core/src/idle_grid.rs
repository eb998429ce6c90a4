//! One clock tick for the timers of an idle engine.
//!
//! Each link keeps its NAT binding open with a keepalive every 25 s. Timed from each link's
//! own last packet, ten idle links wake the device ten times per interval, at scattered
//! moments; a phone's radio and CPU wake with each. So the timers that only keep things alive
//! are placed on one grid shared by every link: multiples of the interval in wall-clock time
//! (Unix seconds), so that friends' devices, whose keepalives arrive here and wake us too,
//! tick at the same moments as far as their clocks agree. A keepalive goes at the last grid
//! point before it is due (or, when that is too soon after the last one, the next: at most
//! 2 s late), and timers that may be late (dropping old session keys) at the next grid point
//! after theirs. After one interval every idle link fires at the same instants: one wake-up
//! per interval for all of them.

use std::time::{Duration, Instant};

/// The grid's period: the NAT keepalive interval.
pub const IDLE_TICK: Duration = Duration::from_secs(25);

#[derive(Clone, Copy, Debug)]
pub struct IdleGrid {
    epoch: Instant,
}

impl IdleGrid {
    /// A grid whose points are `epoch + k × IDLE_TICK`.
    pub fn new(epoch: Instant) -> IdleGrid {
        IdleGrid { epoch }
    }

    /// The grid whose points are the multiples of the period in Unix time, given the wall
    /// clock (`unix`, since the Unix epoch) at `now`. To the nanosecond: devices anchored to
    /// whole seconds would tick up to a second apart, their keepalives arriving one by one.
    pub fn anchored(now: Instant, unix: Duration) -> IdleGrid {
        let period = IDLE_TICK.as_nanos();
        let into_period = u64::try_from(unix.as_nanos() % period).unwrap_or(0);
        IdleGrid::new(
            now.checked_sub(Duration::from_nanos(into_period))
                .unwrap_or(now),
        )
    }

    /// The last grid point at or before `t` (`t` itself before the epoch: nothing is
    /// aligned there).
    fn floor(&self, t: Instant) -> Instant {
        match t.checked_duration_since(self.epoch) {
            Some(since) => {
                let periods = u32::try_from(since.as_nanos() / IDLE_TICK.as_nanos());
                let back = periods
                    .ok()
                    .and_then(|p| IDLE_TICK.checked_mul(p))
                    .unwrap_or(since);
                self.epoch + back.min(since)
            }
            None => t,
        }
    }

    /// When a keepalive due at `due` (the last one at `since`) goes: the last grid point at
    /// or before `due` that is at least `min_gap` after `since`; if there is none, the grid
    /// point after that one (at most `min_gap` plus one period after `since`).
    pub fn keepalive(&self, since: Instant, due: Instant, min_gap: Duration) -> Instant {
        if due < self.epoch {
            return due;
        }
        let at = self.floor(due);
        if at >= since + min_gap {
            at
        } else {
            at + IDLE_TICK
        }
    }

    /// Whether `t` is a point of the grid.
    pub fn is_point(&self, t: Instant) -> bool {
        t.checked_duration_since(self.epoch)
            .is_some_and(|since| since.as_nanos() % IDLE_TICK.as_nanos() == 0)
    }

    /// The first grid point at or after `t`, for a timer that may run late.
    pub fn not_before(&self, t: Instant) -> Instant {
        let at = self.floor(t);
        if at >= t {
            at
        } else {
            at + IDLE_TICK
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_secs(2);

    #[test]
    fn keepalives_of_different_links_meet_on_the_grid_and_are_at_most_the_gap_late() {
        let t0 = Instant::now();
        let grid = IdleGrid::new(t0);
        let mut fired = Vec::new();
        // Links whose last packets were scattered over one interval; the last one's first
        // grid point (25 s) comes 1.5 s after it, too soon: it waits for the next.
        for k in 0..11u64 {
            let mut last = t0 + Duration::from_millis(1_000 + 2_250 * k);
            let mut times = Vec::new();
            for _ in 0..4 {
                let due = last + IDLE_TICK;
                let at = grid.keepalive(last, due, GAP);
                assert!(at >= last + GAP, "link {k}: {at:?}");
                // Never more than the interval plus the minimum gap apart.
                assert!(at - last <= IDLE_TICK + GAP, "link {k}");
                times.push(at);
                last = at;
            }
            fired.push(times);
        }
        // Every keepalive is on the grid, so idle links fire at the same instants.
        for times in &fired {
            for at in times {
                assert_eq!((*at - t0).as_nanos() % IDLE_TICK.as_nanos(), 0);
            }
        }
        assert_eq!(fired[10][0], t0 + IDLE_TICK * 2);
    }

    #[test]
    fn a_grid_point_too_soon_after_the_last_tick_is_skipped() {
        let t0 = Instant::now();
        let grid = IdleGrid::new(t0);
        let last = t0 + Duration::from_secs(24);
        let at = grid.keepalive(last, last + IDLE_TICK, GAP);
        assert_eq!(at, t0 + IDLE_TICK * 2);
        assert!(at - last <= IDLE_TICK + GAP);
    }

    #[test]
    fn devices_started_at_different_times_share_the_wall_clock_grid() {
        let t0 = Instant::now();
        // Two devices whose clocks agree, started 7 s apart.
        let unix = |s: u64, ms: u64| Duration::from_secs(s) + Duration::from_millis(ms);
        let a = IdleGrid::anchored(t0, unix(1_800_000_003, 0));
        let b = IdleGrid::anchored(t0 + Duration::from_millis(7_481), unix(1_800_000_010, 481));
        let t = t0 + Duration::from_secs(100);
        assert_eq!(a.not_before(t), b.not_before(t));
        // 1_800_000_000 is a multiple of 25: the grid point 3 s before a's start.
        assert_eq!(a.not_before(t0), t0 + Duration::from_secs(22));
        assert!(a.is_point(a.not_before(t)) && !a.is_point(t0));
        // Started within the same second, they still tick at the same instants.
        let c = IdleGrid::anchored(t0 + Duration::from_millis(900), unix(1_800_000_003, 900));
        assert_eq!(a.not_before(t), c.not_before(t));
    }

    #[test]
    fn late_timers_go_to_the_next_grid_point() {
        let t0 = Instant::now();
        let grid = IdleGrid::new(t0);
        let t = t0 + Duration::from_secs(541);
        assert_eq!(grid.not_before(t), t0 + Duration::from_secs(550));
        assert_eq!(grid.not_before(t0 + IDLE_TICK), t0 + IDLE_TICK);
        // Before the epoch nothing moves.
        if let Some(before) = t0.checked_sub(Duration::from_secs(3)) {
            assert_eq!(grid.not_before(before), before);
            assert_eq!(grid.keepalive(before, before + GAP, GAP), before + GAP);
        }
    }
}
