//! Timestamps: RFC 3339 in UTC with milliseconds, and the time carried by a UUIDv7.
//!
//! A few lines of calendar arithmetic instead of a date crate: the store only ever formats UTC instants.

use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

const MS_PER_DAY: u64 = 86_400_000;

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let (year, month, day) = civil_from_days(unix_ms / MS_PER_DAY);
    let ms_of_day = unix_ms % MS_PER_DAY;
    let (hour, minute) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
    let (second, milli) = (ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z")
}

/// The RFC 3339 time of a UUIDv7 (its 48-bit millisecond timestamp); `None` for other versions.
pub fn time_of_id(id: Uuid) -> Option<String> {
    unix_ms_of_id(id).map(rfc3339_millis)
}

/// The millisecond timestamp in the first 48 bits of a UUIDv7.
pub(crate) fn unix_ms_of_id(id: Uuid) -> Option<u64> {
    (id.get_version_num() == 7).then(|| unix_ms_of_key(id.as_bytes()))
}

/// The timestamp of a prediction key (a UUIDv7's bytes, big-endian).
pub(crate) fn unix_ms_of_key(key: &[u8]) -> u64 {
    key.iter().take(6).fold(0, |ms, &byte| ms << 8 | u64::from(byte))
}

pub fn now_unix_ms() -> u64 {
    // A clock before 1970 is a broken clock; 0 keeps the record writable.
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// (year, month, day) of the day `days` after 1970-01-01, proleptic Gregorian.
///
/// Howard Hinnant's `civil_from_days`, restricted to days after the epoch: shifts the year to start in
/// March so the leap day is the last day of the year, then splits into 400-year eras of 146097 days.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_millis(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
        assert_eq!(rfc3339_millis(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc3339_millis(1_709_251_200_000), "2024-03-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(1_735_689_599_000), "2024-12-31T23:59:59.000Z");
        assert_eq!(rfc3339_millis(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        // Walks 1970..2400 day by day against month lengths: catches any slip, including 2100 and 2400.
        let leap = |year: u64| year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
        let month_length = |year: u64, month: u64| match month {
            2 if leap(year) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut expected = (1970, 1, 1);
        for days in 0..157_000 {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            let (year, month, day) = expected;
            expected = match (day == month_length(year, month), month) {
                (false, _) => (year, month, day + 1),
                (true, 12) => (year + 1, 1, 1),
                (true, _) => (year, month + 1, 1),
            };
        }
        assert_eq!(expected.0, 2399);
    }

    #[test]
    fn reads_the_time_of_a_uuid_v7() {
        let id = Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, 1_709_210_096, 789_000_000));
        assert_eq!(time_of_id(id).as_deref(), Some("2024-02-29T12:34:56.789Z"));
        assert_eq!(time_of_id(Uuid::nil()), None);
    }
}
