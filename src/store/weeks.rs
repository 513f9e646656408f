//! History is kept, and expires, by the week. Message ids are UUIDv7, whose
//! first 48 bits are their millisecond timestamp, so the ids of one week
//! form one range: PostgreSQL partitions the messages table on those ranges
//! and drops a week at a time; SQLite deletes the same weeks' rows.

use chrono::{DateTime, Utc};
use uuid::Uuid;

const DAY_MS: i64 = 86_400_000;
pub(crate) const WEEK_MS: i64 = 7 * DAY_MS;
/// 1970-01-05, the first Monday after the epoch: weeks start on Mondays,
/// 00:00 UTC, as ISO weeks do (and PostgreSQL's `date_trunc('week', ..)`).
const FIRST_MONDAY_MS: i64 = 4 * DAY_MS;

/// The start of the week holding `at`, in Unix milliseconds.
pub(crate) fn week_of(at: DateTime<Utc>) -> i64 {
    (at.timestamp_millis() - FIRST_MONDAY_MS).div_euclid(WEEK_MS) * WEEK_MS + FIRST_MONDAY_MS
}

/// The smallest UUIDv7 minted at `ms`: every message id minted at or after
/// that millisecond sorts at or after it (byte order, as both databases
/// compare UUIDs).
pub(crate) fn first_id_at(ms: i64) -> Uuid {
    Uuid::from_u128((ms.max(0) as u128) << 80)
}

/// Where expiry stops for a cutoff: the start of the cutoff's week, so only
/// whole weeks that ended before it go.
pub(crate) fn expiry_bound(before: DateTime<Utc>) -> Uuid {
    first_id_at(week_of(before))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    #[test]
    fn weeks_start_on_monday_midnight_utc() {
        let wednesday = Utc.with_ymd_and_hms(2026, 12, 9, 15, 30, 0).unwrap();
        let start = DateTime::from_timestamp_millis(week_of(wednesday)).unwrap();
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 12, 7, 0, 0, 0).unwrap());
        assert_eq!(start.weekday(), Weekday::Mon);
        assert_eq!(week_of(start), start.timestamp_millis());
        let last_instant = start + chrono::Duration::milliseconds(WEEK_MS - 1);
        assert_eq!(week_of(last_instant), start.timestamp_millis());
        assert_eq!(last_instant.hour(), 23);
        assert_eq!(
            week_of(last_instant + chrono::Duration::milliseconds(1)),
            start.timestamp_millis() + WEEK_MS
        );
    }

    #[test]
    fn a_weeks_first_id_sorts_between_the_ids_minted_around_it() {
        let start = Utc.with_ymd_and_hms(2026, 12, 7, 0, 0, 0).unwrap();
        let bound = first_id_at(start.timestamp_millis());
        let ts = |at: DateTime<Utc>| {
            uuid::Timestamp::from_unix(
                uuid::NoContext,
                at.timestamp() as u64,
                at.timestamp_subsec_nanos(),
            )
        };
        let before = Uuid::new_v7(ts(start - chrono::Duration::milliseconds(1)));
        let at = Uuid::new_v7(ts(start));
        assert!(before < bound, "{before} < {bound}");
        assert!(bound <= at, "{bound} <= {at}");
        // As PostgreSQL prints it: the migration computes the same bound.
        assert_eq!(bound.to_string(), "01a24dcc-d800-0000-0000-000000000000");
        assert_eq!(expiry_bound(start + chrono::Duration::days(3)), bound);
    }
}
