//! When EVENTS fire: next-fire times for `at=` and `cron=` schedules, computed on local time.
//!
//! Pure: local time comes from a function the caller passes in (libc's localtime_r in the
//! master, a fixed offset in tests), so every rule here is tested with a fake clock.

use crate::config::{CronSpec, TimeOfDay};

/// A broken-down local time, as localtime_r gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    /// 1..=12
    pub month: u8,
    /// 1..=31
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// 0..=6, Sunday is 0.
    pub weekday: u8,
}

/// Turns seconds since the epoch into local time.
pub type LocalClock = fn(i64) -> LocalTime;

/// How far ahead we look for a matching minute before giving up (a cron spec such as
/// "0 0 31 2 *" never matches).
const SEARCH_DAYS: i64 = 366 * 5;

/// The first whole minute strictly after `after_unix` at which `matches` holds, in local time.
fn next_matching_minute(
    after_unix: i64,
    local: LocalClock,
    matches: impl Fn(&LocalTime) -> MinuteMatch,
) -> Option<i64> {
    let mut t = after_unix.div_euclid(60) * 60 + 60;
    let limit = after_unix + SEARCH_DAYS * 86_400;
    while t <= limit {
        let lt = local(t);
        // Realign to the local minute boundary (zones with odd second offsets exist).
        if lt.second != 0 {
            t += 60 - i64::from(lt.second);
            continue;
        }
        match matches(&lt) {
            MinuteMatch::Yes => return Some(t),
            MinuteMatch::NextMinute => t += 60,
            MinuteMatch::NextHour => t += 60 * (60 - i64::from(lt.minute)),
            MinuteMatch::NextDay => {
                t += 60 * (60 - i64::from(lt.minute)) + 3600 * (23 - i64::from(lt.hour))
            }
        }
    }
    None
}

enum MinuteMatch {
    Yes,
    NextMinute,
    NextHour,
    NextDay,
}

/// Next time after `after_unix` for a daily `at=HHMM` event.
pub fn next_daily(at: TimeOfDay, after_unix: i64, local: LocalClock) -> Option<i64> {
    next_matching_minute(after_unix, local, |lt| {
        if lt.hour != at.hour {
            MinuteMatch::NextHour
        } else if lt.minute != at.minute {
            MinuteMatch::NextMinute
        } else {
            MinuteMatch::Yes
        }
    })
}

/// Next time after `after_unix` for a `cron=` event. Day of month and day of week combine as
/// in cron(8): when both are restricted, either may match.
pub fn next_cron(spec: &CronSpec, after_unix: i64, local: LocalClock) -> Option<i64> {
    next_matching_minute(after_unix, local, |lt| {
        let month_ok = spec.months & (1 << lt.month) != 0;
        let dom_ok = spec.days_of_month & (1 << lt.day) != 0;
        let dow_ok = spec.days_of_week & (1 << (lt.weekday % 7)) != 0;
        let day_ok = match (spec.any_day_of_month, spec.any_day_of_week) {
            (true, true) => true,
            (true, false) => dow_ok,
            (false, true) => dom_ok,
            (false, false) => dom_ok || dow_ok,
        };
        if !month_ok || !day_ok {
            MinuteMatch::NextDay
        } else if spec.hours & (1 << lt.hour) == 0 {
            MinuteMatch::NextHour
        } else if spec.minutes & (1 << lt.minute) == 0 {
            MinuteMatch::NextMinute
        } else {
            MinuteMatch::Yes
        }
    })
}

/// Local time in UTC, for tests and for hosts without a zone.
pub fn utc(unix: i64) -> LocalTime {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    LocalTime {
        year: year as i32,
        month: month as u8,
        day: day as u8,
        hour: (secs / 3600) as u8,
        minute: (secs % 3600 / 60) as u8,
        second: (secs % 60) as u8,
        weekday: (days + 4).rem_euclid(7) as u8, // 1970-01-01 was a Thursday
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-26 22:49:23 UTC, a Thursday.
    const NOW: i64 = 1_795_733_363;

    fn cron(minutes: &[u32], hours: &[u32], dom: Option<&[u32]>, dow: Option<&[u32]>) -> CronSpec {
        let bits64 = |v: &[u32]| v.iter().fold(0u64, |a, &x| a | 1 << x);
        let all_hours = (0..24).collect::<Vec<_>>();
        let all_days = (1..32).collect::<Vec<_>>();
        CronSpec {
            minutes: bits64(minutes),
            hours: bits64(if hours.is_empty() { &all_hours } else { hours }) as u32,
            days_of_month: bits64(dom.unwrap_or(&all_days)) as u32,
            months: bits64(&(1..13).collect::<Vec<_>>()) as u16,
            days_of_week: bits64(dow.unwrap_or(&[0, 1, 2, 3, 4, 5, 6])) as u8,
            any_day_of_month: dom.is_none(),
            any_day_of_week: dow.is_none(),
            text: String::new(),
        }
    }

    #[test]
    fn utc_breaks_down_a_known_instant() {
        let lt = utc(NOW);
        assert_eq!((lt.year, lt.month, lt.day), (2026, 11, 26));
        assert_eq!((lt.hour, lt.minute, lt.second, lt.weekday), (22, 49, 23, 4));
    }

    #[test]
    fn daily_later_today_or_tomorrow() {
        let at = |hour, minute| TimeOfDay { hour, minute };
        let today_2300 = next_daily(at(23, 0), NOW, utc).unwrap();
        assert_eq!(utc(today_2300).day, 26);
        assert_eq!(today_2300 - NOW, 10 * 60 + 37);
        let tomorrow_0401 = next_daily(at(4, 1), NOW, utc).unwrap();
        let lt = utc(tomorrow_0401);
        assert_eq!((lt.day, lt.hour, lt.minute, lt.second), (27, 4, 1, 0));
        // Exactly at the time: the next run is a day later, never the same instant.
        assert_eq!(
            next_daily(at(4, 1), tomorrow_0401, utc),
            Some(tomorrow_0401 + 86_400)
        );
    }

    #[test]
    fn cron_minutes_and_weekdays() {
        let every_15 = cron(&[0, 15, 30, 45], &[], None, None);
        let next = next_cron(&every_15, NOW, utc).unwrap();
        assert_eq!(utc(next).minute, 0);
        assert_eq!(utc(next).hour, 23);
        // Mondays at 02:30: Thursday -> the coming Monday, Nov 30.
        let monday = cron(&[30], &[2], None, Some(&[1]));
        let lt = utc(next_cron(&monday, NOW, utc).unwrap());
        assert_eq!(
            (lt.month, lt.day, lt.hour, lt.minute, lt.weekday),
            (11, 30, 2, 30, 1)
        );
    }

    #[test]
    fn cron_day_fields_combine_with_or() {
        // The 1st of the month or any Saturday, at midnight: Saturday Nov 28 comes first.
        let spec = cron(&[0], &[0], Some(&[1]), Some(&[6]));
        let lt = utc(next_cron(&spec, NOW, utc).unwrap());
        assert_eq!((lt.day, lt.weekday), (28, 6));
    }

    #[test]
    fn impossible_cron_gives_none() {
        let mut spec = cron(&[0], &[0], Some(&[31]), None);
        spec.months = 1 << 2; // February 31st
        assert_eq!(next_cron(&spec, NOW, utc), None);
    }
}
