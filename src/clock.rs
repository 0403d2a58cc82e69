//! Where hookgate reads the time it stores and schedules by: when a delivery was received, when its next
//! attempt is due, when it gives up, what is old enough to prune, and when the queue's gauges and pruning
//! are next due. One [`Clock`] is chosen at start and handed to everything that reads the time, so tests
//! can run a gateway on tokio's paused clock while production runs on the system's.
//!
//! The times are unix milliseconds, wall-clock time: they are stored in the spool, outlive a restart and
//! are printed by `hookgate spool`. Timing a request or an attempt for the log is not scheduling, and
//! reads [`std::time::Instant`] directly.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time in unix milliseconds. Cheap to copy: every part of a gateway holds the
/// same one.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    source: Source,
}

#[derive(Clone, Copy, Debug)]
enum Source {
    System,
    FollowingTokio,
}

impl Clock {
    /// The system's wall clock: what `hookgate serve` and `hookgate spool` run on.
    pub fn system() -> Clock {
        Clock { source: Source::System }
    }

    /// The system's wall clock moved by as much as tokio's clock has been moved away from real time, so
    /// that a gateway's schedule follows `tokio::time::pause` (it stands still) and `tokio::time::advance(d)`
    /// (it moves on by `d`); where tokio's clock was never paused it reads the same as [`Clock::system`].
    /// For tests. tokio's paused time belongs to one runtime: read it inside the runtime that serves the
    /// gateway (on any other thread it reads the system's time).
    pub fn following_tokio() -> Clock {
        Clock { source: Source::FollowingTokio }
    }

    /// Whether this clock follows tokio's (a test's): it reads the paused time only inside the runtime
    /// that serves the gateway, so what schedules by it must run there.
    pub fn follows_tokio(&self) -> bool {
        matches!(self.source, Source::FollowingTokio)
    }

    /// The current time in unix milliseconds (0 before 1970).
    pub fn now_ms(&self) -> i64 {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_nanos() as i128;
        let nanos = match self.source {
            Source::System => since_epoch,
            Source::FollowingTokio => since_epoch + tokio_ahead_of_real_time_nanos(),
        };
        i64::try_from(nanos.div_euclid(1_000_000)).unwrap_or(i64::MAX).max(0)
    }
}

/// How far tokio's clock is ahead of the monotonic clock in this runtime (negative when it is behind, as
/// after a pause): zero unless it has been paused.
fn tokio_ahead_of_real_time_nanos() -> i128 {
    let (tokio_now, real_now) = (tokio::time::Instant::now().into_std(), std::time::Instant::now());
    match tokio_now.checked_duration_since(real_now) {
        Some(ahead) => ahead.as_nanos() as i128,
        None => -(real_now.duration_since(tokio_now).as_nanos() as i128),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn following_tokio_reads_the_system_time_until_paused() {
        let (system, following) = (Clock::system(), Clock::following_tokio());
        let (before, read, after) = (system.now_ms(), following.now_ms(), system.now_ms());
        assert!(before - 1 <= read && read <= after + 1, "{before} <= {read} <= {after}");
    }

    #[tokio::test(start_paused = true)]
    async fn following_tokio_stands_still_when_paused_and_moves_with_advance() {
        let clock = Clock::following_tokio();
        let start = clock.now_ms();
        std::thread::sleep(Duration::from_millis(30));
        assert!(clock.now_ms() - start <= 1, "paused: it stood still");
        tokio::time::advance(Duration::from_secs(3600)).await;
        let moved = clock.now_ms() - start;
        assert!((3_600_000..=3_600_001).contains(&moved), "advanced by an hour: {moved}");
        // Another clock in the same runtime reads the same time.
        assert!((Clock::following_tokio().now_ms() - clock.now_ms()).abs() <= 1);
    }

    #[tokio::test]
    async fn following_tokio_runs_on_after_a_resume() {
        let clock = Clock::following_tokio();
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(60)).await;
        tokio::time::resume();
        let ahead = clock.now_ms() - Clock::system().now_ms();
        assert!((59_900..=60_001).contains(&ahead), "a minute ahead of the system's time: {ahead}");
        let read = clock.now_ms();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(clock.now_ms() - read >= 20, "and running in real time again");
    }
}
