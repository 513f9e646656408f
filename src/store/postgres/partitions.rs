//! The messages table's weeks (see `store::weeks` and the migration that
//! partitioned it): each node makes sure the coming weeks exist, and drops
//! the weeks that expired, whole.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;
use crate::store::weeks::{WEEK_MS, expiry_bound, first_id_at, week_of};

/// Weeks created ahead of the current one: a node whose maintenance stops
/// (or a clock a little ahead) still has somewhere to write for two weeks.
const WEEKS_AHEAD: i64 = 2;
/// And behind it: a message minted just before Monday 00:00 (or by a clock
/// a little behind) written into a database created just after.
const WEEKS_BEHIND: i64 = 1;

/// Serializes nodes changing the set of partitions (any constant shared by
/// every node: the ASCII of "ochatwk").
const PARTITIONS_LOCK: i64 = 0x006f_6368_6174_776b;

/// Creating or dropping a partition takes a lock on the messages table for
/// a moment; past this wait it gives up (every write queued behind it
/// would wait as long) and the next round tries again.
const LOCK_WAIT: &str = "SET LOCAL lock_timeout = '500ms'";

/// One partition's id range; `None` is unbounded.
#[derive(Debug, PartialEq)]
struct Week {
    name: String,
    from: Option<Uuid>,
    to: Option<Uuid>,
}

impl Week {
    fn overlaps(&self, from: Uuid, to: Uuid) -> bool {
        self.from.is_none_or(|f| f < to) && self.to.is_none_or(|t| t > from)
    }
}

/// Reads `FOR VALUES FROM (MINVALUE) TO ('0193…')`, as `pg_get_expr`
/// prints a range partition's bounds.
fn parse_bounds(expr: &str) -> Option<(Option<Uuid>, Option<Uuid>)> {
    let bound = |part: &str| -> Option<Option<Uuid>> {
        let inner = part.split_once('(')?.1.split_once(')')?.0.trim();
        match inner {
            "MINVALUE" | "MAXVALUE" => Some(None),
            quoted => Some(Some(quoted.trim_matches('\'').parse().ok()?)),
        }
    };
    let (from, to) = expr.split_once(" TO ")?;
    Some((bound(from)?, bound(to)?))
}

/// A table name as an identifier, whatever it holds.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PgStore {
    async fn weeks(conn: &mut sqlx::PgConnection) -> StoreResult<Vec<Week>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid)
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'messages'::regclass",
        )
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter()
            .map(|(name, expr)| {
                let (from, to) = parse_bounds(&expr).ok_or_else(|| {
                    StoreError::Internal(format!("unexpected bounds of {name}: {expr}"))
                })?;
                Ok(Week { name, from, to })
            })
            .collect()
    }

    /// Makes sure the week holding `at`, the [`WEEKS_AHEAD`] after it and
    /// the [`WEEKS_BEHIND`] before it exist (where no partition covers them
    /// already). Each is created on its own and then attached, which locks
    /// the messages table less than creating it in place would.
    pub(super) async fn prepare_weeks(&self, at: DateTime<Utc>) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITIONS_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(LOCK_WAIT).execute(&mut *tx).await?;
        let existing = Self::weeks(&mut tx).await?;
        for week in -WEEKS_BEHIND..=WEEKS_AHEAD {
            let start = week_of(at) + week * WEEK_MS;
            let (from, to) = (first_id_at(start), first_id_at(start + WEEK_MS));
            if existing.iter().any(|w| w.overlaps(from, to)) {
                continue;
            }
            let name = DateTime::from_timestamp_millis(start)
                .map(|d| format!("messages_{}", d.format("%Y%m%d")))
                .ok_or_else(|| StoreError::Internal(format!("no date at {start} ms")))?;
            // The name is made here from a date; the bounds are UUIDs.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE {name} (LIKE messages INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            )))
            .execute(&mut *tx)
            .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE messages ATTACH PARTITION {name} FOR VALUES FROM ('{from}') TO ('{to}')"
            )))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Drops every week that ended before `before`'s week began, one
    /// transaction each: first what points into it (inbox rows, changes,
    /// reactions, attachments, idempotency keys, and replies quoting it,
    /// which lose their quote), then the partition itself. Answers the
    /// dropped attachments, whose bytes the caller removes.
    pub(super) async fn expire_messages(&self, before: DateTime<Utc>) -> StoreResult<Expired> {
        let bound = expiry_bound(before);
        let mut expired = Expired::default();
        let candidates = {
            let mut conn = self.pool.acquire().await?;
            Self::weeks(&mut conn).await?
        };
        if let Some(unbounded) = candidates.iter().find(|w| w.to.is_none()) {
            tracing::warn!(
                partition = %unbounded.name,
                "messages written with random (not UUIDv7) ids keep one partition for every id: \
                 MESSAGE_RETENTION cannot drop weeks of it"
            );
        }
        let expiring = candidates
            .into_iter()
            .filter(|w| w.to.is_some_and(|to| to <= bound));
        for week in expiring {
            // A week dropped stays dropped: its files are answered even if
            // a later week fails.
            match self.drop_week(&week).await {
                Ok(Some(dropped)) => {
                    expired.messages += dropped.messages;
                    expired.files.extend(dropped.files);
                }
                Ok(None) => {}
                Err(e) if expired.messages > 0 || !expired.files.is_empty() => {
                    tracing::warn!(error = %e, partition = %week.name, "could not drop an expired week");
                    return Ok(expired);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }

    /// Drops one expired week (see [`PgStore::expire_messages`]); `None`
    /// when another node dropped it first.
    async fn drop_week(&self, week: &Week) -> StoreResult<Option<Expired>> {
        let Some(to) = week.to else {
            return Ok(None);
        };
        let from = week.from.unwrap_or(Uuid::nil());
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITIONS_LOCK)
            .execute(&mut *tx)
            .await?;
        // Another node may have dropped it while this one waited.
        let name = quoted(&week.name);
        let there: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&name)
            .fetch_one(&mut *tx)
            .await?;
        if !there {
            return Ok(None);
        }
        // Nothing new may point into the week from here on: a late
        // reaction or reply waits for this commit, then finds the message
        // gone. The wait for the lock itself is bounded.
        sqlx::query(LOCK_WAIT).execute(&mut *tx).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE {name} IN EXCLUSIVE MODE"
        )))
        .execute(&mut *tx)
        .await?;
        let files: Vec<Uuid> = sqlx::query_scalar(
            "DELETE FROM attachments WHERE message_id >= $1 AND message_id < $2 RETURNING id",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&mut *tx)
        .await?;
        for statement in [
            "DELETE FROM reactions WHERE message_id >= $1 AND message_id < $2",
            // Their change_inbox rows go with them (ON DELETE CASCADE).
            "DELETE FROM message_changes WHERE message_id >= $1 AND message_id < $2",
            "DELETE FROM inbox WHERE message_id >= $1 AND message_id < $2",
            "DELETE FROM message_keys WHERE message_id >= $1 AND message_id < $2",
            "UPDATE messages SET reply_to = NULL WHERE reply_to >= $1 AND reply_to < $2",
        ] {
            sqlx::query(statement)
                .bind(from)
                .bind(to)
                .execute(&mut *tx)
                .await?;
        }
        let messages: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {name}")))
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE messages DETACH PARTITION {name}"
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {name}")))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(partition = %week.name, messages, "dropped an expired week of messages");
        Ok(Some(Expired {
            messages: messages as u64,
            files,
        }))
    }

    /// The partitions' names, oldest first (tests and operators' checks).
    pub async fn message_partitions(&self) -> StoreResult<Vec<String>> {
        let mut conn = self.pool.acquire().await?;
        let mut weeks = Self::weeks(&mut conn).await?;
        weeks.sort_by_key(|w| w.from);
        Ok(weeks.into_iter().map(|w| w.name).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_read_as_postgresql_prints_them() {
        let (a, b) = (
            "019afb42-0800-0000-0000-000000000000",
            "01a24dcc-d800-0000-0000-000000000000",
        );
        assert_eq!(
            parse_bounds(&format!("FOR VALUES FROM (MINVALUE) TO ('{a}')")),
            Some((None, Some(a.parse().unwrap())))
        );
        assert_eq!(
            parse_bounds(&format!("FOR VALUES FROM ('{a}') TO ('{b}')")),
            Some((Some(a.parse().unwrap()), Some(b.parse().unwrap())))
        );
        assert_eq!(parse_bounds("DEFAULT"), None);
        assert_eq!(parse_bounds("FOR VALUES FROM ('x') TO ('y')"), None);
    }

    #[test]
    fn a_week_overlaps_the_ranges_it_shares_ids_with() {
        let id = |n: u128| Uuid::from_u128(n << 80);
        let week = Week {
            name: "w".into(),
            from: Some(id(10)),
            to: Some(id(20)),
        };
        assert!(week.overlaps(id(15), id(25)));
        assert!(week.overlaps(id(0), id(11)));
        assert!(!week.overlaps(id(20), id(30)));
        assert!(!week.overlaps(id(0), id(10)));
        let before = Week {
            name: "old".into(),
            from: None,
            to: Some(id(20)),
        };
        assert!(before.overlaps(id(0), id(1)));
        assert!(!before.overlaps(id(20), id(27)));
    }
}
