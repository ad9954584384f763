//! Feed schedules: cron expressions evaluated in Europe/London, and when a feed is due.
//!
//! Pure: the time comes from a [`Clock`], so tests drive it across both BST changes. Times are
//! kept in UTC and converted to London wall-clock time only to match the pattern. croner's DST
//! rules apply: a fixed time that does not exist (01:30 on the last Sunday of March) runs at the
//! first minute after the gap, and one that happens twice (01:30 on the last Sunday of October)
//! runs once, at its first occurrence.

use std::str::FromStr;

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Europe::London;
use croner::Cron;

/// Where the time comes from.
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock standing at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(std::sync::Mutex::new(at))
    }

    /// Moves it to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A feed's `schedule:`, a five-field cron expression (or `@daily`-style alias) in London time.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    pattern: String,
}

impl Schedule {
    /// Parses a cron expression; the error says what is wrong with it.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let cron = Cron::from_str(pattern.trim())
            .map_err(|e| format!("`{pattern}` is not a cron expression ({e})"))?;
        Ok(Self {
            cron,
            pattern: pattern.trim().to_string(),
        })
    }

    /// The expression as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&London), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last occurrence at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&London), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// Whether a run is due at `now`, given the occurrence the feed last ran for: the latest
    /// occurrence at or before `now` when it is later than `last_fire`. Occurrences missed
    /// while the daemon was down count once, not once each. A feed that never ran on this
    /// store is not due until its first occurrence after `since` (the daemon's first start).
    pub fn due(
        &self,
        last_fire: Option<DateTime<Utc>>,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let latest = self.last_at_or_before(now)?;
        let floor = last_fire.unwrap_or(since);
        (latest > floor).then_some(latest)
    }
}

/// A feed's `expected_by:` time of day, in London time ("07:00").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedBy(NaiveTime);

impl ExpectedBy {
    /// Parses `HH:MM`.
    pub fn parse(s: &str) -> Result<Self, String> {
        NaiveTime::parse_from_str(s.trim(), "%H:%M")
            .map(Self)
            .map_err(|_| format!("`{s}` is not a time of day as HH:MM (London time)"))
    }

    /// As written, `HH:MM`.
    pub fn as_hhmm(&self) -> String {
        self.0.format("%H:%M").to_string()
    }

    /// The deadline of the London day that contains `now`, and the start of that day, in UTC:
    /// files must have arrived between the two.
    pub fn window(&self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let day = now.with_timezone(&London).date_naive();
        let at = |t: NaiveTime| {
            London
                .from_local_datetime(&day.and_time(t))
                .earliest()
                // The deadline falls in the spring-forward gap: take the hour after it.
                .or_else(|| {
                    London
                        .from_local_datetime(&(day.and_time(t) + chrono::Duration::hours(1)))
                        .earliest()
                })
                .map(|d| d.with_timezone(&Utc))
                .unwrap_or(now)
        };
        (at(NaiveTime::MIN), at(self.0))
    }

    /// Whether a feed is late at `now`: the deadline of today has passed and nothing arrived
    /// since the start of the day. Returns the deadline when late.
    pub fn late(
        &self,
        last_arrival: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let (day_start, deadline) = self.window(now);
        let arrived = last_arrival.is_some_and(|a| a >= day_start);
        (now >= deadline && !arrived).then_some(deadline)
    }
}

/// A UTC time as London wall-clock time, for people.
pub fn london(t: DateTime<Utc>) -> String {
    t.with_timezone(&London)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn nightly_schedule_follows_london_time_across_both_bst_changes() {
        let s = Schedule::parse("30 2 * * *").unwrap();
        // Winter (GMT = UTC).
        assert_eq!(
            s.next_after(utc("2026-01-10T12:00:00Z")),
            Some(utc("2026-01-11T02:30:00Z"))
        );
        // Summer (BST = UTC+1): 02:30 London is 01:30 UTC.
        assert_eq!(
            s.next_after(utc("2026-07-10T12:00:00Z")),
            Some(utc("2026-07-11T01:30:00Z"))
        );
        // Spring forward, Sunday 29 March 2026: 01:00 GMT becomes 02:00 BST; 02:30 exists.
        assert_eq!(
            s.next_after(utc("2026-03-28T12:00:00Z")),
            Some(utc("2026-03-29T01:30:00Z"))
        );
        // Fall back, Sunday 25 October 2026: 02:00 BST becomes 01:00 GMT; 02:30 happens once.
        assert_eq!(
            s.next_after(utc("2026-10-24T12:00:00Z")),
            Some(utc("2026-10-25T02:30:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-10-25T02:30:00Z")),
            Some(utc("2026-10-26T02:30:00Z"))
        );
    }

    #[test]
    fn a_time_inside_the_spring_gap_runs_once_right_after_it() {
        // 01:30 London does not exist on 29 March 2026.
        let s = Schedule::parse("30 1 * * *").unwrap();
        let next = s.next_after(utc("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(
            next,
            utc("2026-03-29T01:00:00Z"),
            "02:00 BST, straight after the gap"
        );
        assert_eq!(s.next_after(next), Some(utc("2026-03-30T00:30:00Z")));
    }

    #[test]
    fn a_time_inside_the_autumn_overlap_runs_once() {
        // 01:30 London happens twice on 25 October 2026 (00:30 and 01:30 UTC).
        let s = Schedule::parse("30 1 * * *").unwrap();
        let first = s.next_after(utc("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, utc("2026-10-25T00:30:00Z"));
        assert_eq!(s.next_after(first), Some(utc("2026-10-26T01:30:00Z")));
        // And the daemon, ticking every minute through the night, fires once.
        let clock = ManualClock::new(utc("2026-10-24T23:00:00Z"));
        let since = clock.now();
        let mut last = None;
        let mut fired = Vec::new();
        while clock.now() < utc("2026-10-25T06:00:00Z") {
            if let Some(f) = s.due(last, since, clock.now()) {
                fired.push(f);
                last = Some(f);
            }
            clock.set(clock.now() + chrono::Duration::minutes(1));
        }
        assert_eq!(fired, vec![utc("2026-10-25T00:30:00Z")]);
    }

    #[test]
    fn a_missed_run_runs_once_at_start_and_a_new_feed_waits() {
        let s = Schedule::parse("0 2 * * *").unwrap();
        let last = Some(utc("2026-11-20T02:00:00Z"));
        // Down for three nights: one run at start, for the latest occurrence.
        let now = utc("2026-11-23T09:15:00Z");
        assert_eq!(s.due(last, now, now), Some(utc("2026-11-23T02:00:00Z")));
        // Once it ran, nothing is due until the next night.
        assert_eq!(s.due(Some(utc("2026-11-23T02:00:00Z")), now, now), None);
        // A feed that never ran waits for its first occurrence after the daemon started.
        assert_eq!(s.due(None, now, now), None);
        assert_eq!(
            s.due(None, now, utc("2026-11-24T02:00:30Z")),
            Some(utc("2026-11-24T02:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_are_refused_with_the_pattern() {
        let e = Schedule::parse("61 2 * * *").unwrap_err();
        assert!(e.contains("`61 2 * * *`"), "{e}");
        assert!(Schedule::parse("@daily").is_ok());
    }

    #[test]
    fn expected_by_is_late_only_after_the_deadline_with_nothing_arrived() {
        let e = ExpectedBy::parse("07:00").unwrap();
        // Summer: 07:00 BST = 06:00 UTC.
        let yesterday = Some(utc("2026-07-09T01:40:00Z"));
        assert_eq!(e.late(yesterday, utc("2026-07-10T05:59:00Z")), None);
        assert_eq!(
            e.late(yesterday, utc("2026-07-10T06:00:00Z")),
            Some(utc("2026-07-10T06:00:00Z"))
        );
        assert_eq!(
            e.late(
                Some(utc("2026-07-10T01:40:00Z")),
                utc("2026-07-10T08:00:00Z")
            ),
            None
        );
        // Winter: 07:00 GMT = 07:00 UTC.
        assert_eq!(e.late(None, utc("2026-12-10T06:30:00Z")), None);
        assert!(e.late(None, utc("2026-12-10T07:00:00Z")).is_some());
        assert!(ExpectedBy::parse("7am").is_err());
    }
}
