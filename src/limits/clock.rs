//! UTC windows for limits and budgets: the minute (rate limits), the day and the calendar month
//! (budgets), each with the counter key suffix every replica computes alike and the seconds
//! until it resets. Plain integer arithmetic on Unix time; no time-zone crate needed for UTC.

/// Seconds since the Unix epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31), Howard Hinnant's `civil_from_days`.
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) → days since 1970-01-01 (`days_from_civil`).
pub fn days(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The windows a moment falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub minute: u64,
    pub day: u64,
    /// `YYYYMM`
    pub month: u64,
    pub minute_reset: u64,
    pub day_reset: u64,
    pub month_reset: u64,
}

impl Windows {
    pub fn at(unix: u64) -> Windows {
        let day = unix / 86_400;
        let (y, m, _) = civil(day as i64);
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        let next_month = days(ny, nm, 1) as u64 * 86_400;
        Windows {
            minute: unix / 60,
            day,
            month: y as u64 * 100 + u64::from(m),
            minute_reset: 60 - unix % 60,
            day_reset: 86_400 - unix % 86_400,
            month_reset: next_month.saturating_sub(unix).max(1),
        }
    }
}

/// Seconds as OpenAI writes `x-ratelimit-reset-*`: `1s`, `59s`, `6m0s`, `1h2m3s`.
pub fn openai_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// RFC 3339 UTC for a Unix time (for the reset time a `budget_exceeded` error names).
pub fn rfc3339(unix: u64) -> String {
    let (y, mo, d) = civil((unix / 86_400) as i64);
    let s = unix % 86_400;
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s % 3600 / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_arithmetic_matches_known_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(days(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(days(2026, 12, 2), 20_789);
        // 2026-12-31T23:59:30Z: month resets in 30 s, into January 2027
        let t = days(2026, 12, 31) as u64 * 86_400 + 86_370;
        let w = Windows::at(t);
        assert_eq!((w.month, w.month_reset, w.day_reset, w.minute_reset), (202_612, 30, 30, 30));
        assert_eq!(rfc3339(t + 30), "2027-01-01T00:00:00Z");
        let feb = Windows::at(days(2024, 2, 1) as u64 * 86_400);
        assert_eq!(feb.month_reset, 29 * 86_400);
    }

    #[test]
    fn durations_are_written_as_openai_does() {
        assert_eq!(openai_duration(1), "1s");
        assert_eq!(openai_duration(59), "59s");
        assert_eq!(openai_duration(360), "6m0s");
        assert_eq!(openai_duration(3723), "1h2m3s");
    }
}
