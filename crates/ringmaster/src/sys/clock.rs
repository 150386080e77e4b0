//! Wall-clock time for schedules and log lines: seconds since the epoch and their broken-down
//! local time (libc's localtime_r, after one tzset at startup).

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use ringmaster_core::LocalTime;

extern "C" {
    /// POSIX tzset(3) (the libc crate does not declare it on Linux).
    fn tzset();
}

/// Read TZ and the zone files once; call at startup (and after a reload if the zone may have
/// changed). localtime_r is not required to do this itself.
pub fn init_timezone() {
    // SAFETY: tzset takes no arguments; it only updates libc's time-zone globals, and the
    // master is single-threaded, so nothing reads them concurrently.
    unsafe { tzset() }
}

/// Seconds since the Unix epoch now (negative before 1970, which no real clock shows).
pub fn unix_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The local time of `unix_secs` in the time zone set up by [`init_timezone`]. Fails only for
/// times the C library cannot represent (years beyond i32).
pub fn local_time(unix_secs: i64) -> io::Result<LocalTime> {
    let out_of_range = || io::Error::new(io::ErrorKind::InvalidInput, "time out of range");
    #[allow(clippy::useless_conversion)] // time_t is 32 bits on some targets
    let t: libc::time_t = unix_secs.try_into().map_err(|_| out_of_range())?;
    // SAFETY: an all-zero `tm` is a valid value (integers and a null zone pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers refer to live locals; localtime_r writes only into `tm`.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        return Err(out_of_range());
    }
    let small = |v: libc::c_int| u8::try_from(v).map_err(|_| out_of_range());
    Ok(LocalTime {
        year: tm.tm_year.checked_add(1900).ok_or_else(out_of_range)?,
        month: small(tm.tm_mon + 1)?,
        day: small(tm.tm_mday)?,
        hour: small(tm.tm_hour)?,
        minute: small(tm.tm_min)?,
        second: small(tm.tm_sec)?,
        weekday: small(tm.tm_wday)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testutil::in_forked_child;
    use std::time::Duration;

    #[test]
    fn now_is_after_2020() {
        assert!(unix_now() > 1_577_836_800);
    }

    #[test]
    fn fields_are_in_range_and_weeks_repeat() {
        let now = unix_now();
        let t = local_time(now).expect("local time");
        assert!((1..=12).contains(&t.month) && (1..=31).contains(&t.day));
        assert!(t.hour < 24 && t.minute < 60 && t.second <= 60 && t.weekday < 7);
        let week_later = local_time(now + 7 * 86_400).expect("local time");
        assert_eq!(week_later.weekday, t.weekday);
    }

    #[test]
    fn the_zone_comes_from_tz() {
        // Setting TZ is process-wide: do it in a single-threaded forked copy.
        assert!(in_forked_child(Duration::from_secs(10), || {
            std::env::set_var("TZ", "UTC0");
            init_timezone();
            let utc = local_time(0).ok();
            std::env::set_var("TZ", "EST5");
            init_timezone();
            let est = local_time(0).ok();
            let thursday = LocalTime {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0,
                weekday: 4,
            };
            let wednesday_evening = LocalTime {
                year: 1969,
                month: 12,
                day: 31,
                hour: 19,
                minute: 0,
                second: 0,
                weekday: 3,
            };
            utc == Some(thursday) && est == Some(wednesday_evening)
        }));
    }
}
