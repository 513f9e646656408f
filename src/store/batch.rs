//! How a batch of messages is numbered and stored, decided once for both
//! engines: which users and groups it touches, each participant's number,
//! the conversation heads and inbox rows it writes; and how any batch
//! statement names each row once.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;

/// The rows a batch will write, worked out from the users' current sequence
/// numbers, the members of the groups it writes to and the duplicates
/// already stored. Shared by both backends so the membership, idempotency
/// and numbering rules exist once.
pub(super) struct BatchPlan {
    pub(super) outcomes: Vec<InsertOutcome>,
    pub(super) rows: Vec<PlannedRow>,
    /// New `msg_seq` per user touched.
    pub(super) seqs: HashMap<Uuid, i64>,
}

/// The latest message of one direct conversation in a batch: (conversation,
/// user a, user b, message id, time), with a < b.
pub(super) type ConversationHead = (Uuid, Uuid, Uuid, Uuid, DateTime<Utc>);

pub(super) struct PlannedRow {
    pub(super) message: Message,
    /// Direct messages: the sender's and the receiver's numbers.
    pub(super) sender_seq: Option<i64>,
    pub(super) receiver_seq: Option<i64>,
    /// Group messages: every member's number (the sender's included).
    pub(super) inbox: Vec<(Uuid, i64)>,
}

/// Current members of the groups a batch writes to.
pub(super) type GroupMembers = HashMap<Uuid, Vec<Uuid>>;

/// One member's inbox row: (user, seq, message, group, read at).
pub(super) type InboxRow = (Uuid, i64, Uuid, Uuid, Option<DateTime<Utc>>);

impl BatchPlan {
    pub(super) fn new(
        batch: &[NewMessage],
        mut seqs: HashMap<Uuid, i64>,
        groups: &GroupMembers,
        stored: &HashMap<(Uuid, String), Message>,
    ) -> Self {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut rows: Vec<PlannedRow> = Vec::with_capacity(batch.len());
        // (sender, client_id) -> index in `rows`, for repeats inside one batch.
        let mut in_batch: HashMap<(Uuid, &str), usize> = HashMap::new();

        for new in batch {
            if !seqs.contains_key(&new.sender_id) {
                outcomes.push(InsertOutcome::SenderNotFound);
                continue;
            }
            let members = match new.to {
                Target::User(receiver) if !seqs.contains_key(&receiver) => {
                    outcomes.push(InsertOutcome::RecipientNotFound);
                    continue;
                }
                Target::User(_) => None,
                Target::Group(group) => match groups.get(&group) {
                    None => {
                        outcomes.push(InsertOutcome::GroupNotFound);
                        continue;
                    }
                    Some(members) if !members.contains(&new.sender_id) => {
                        outcomes.push(InsertOutcome::NotMember);
                        continue;
                    }
                    Some(members) => Some(members),
                },
            };
            if let Some(client_id) = &new.client_id {
                if let Some(existing) = stored.get(&(new.sender_id, client_id.clone())) {
                    outcomes.push(InsertOutcome::Duplicate(existing.clone()));
                    continue;
                }
                if let Some(&row) = in_batch.get(&(new.sender_id, client_id.as_str())) {
                    outcomes.push(InsertOutcome::Duplicate(rows[row].message.clone()));
                    continue;
                }
                in_batch.insert((new.sender_id, client_id.as_str()), rows.len());
            }
            let mut next = |user: Uuid| {
                let seq = seqs
                    .get_mut(&user)
                    .expect("every user of the batch is locked");
                *seq += 1;
                (user, *seq)
            };
            let (receiver_id, conversation, numbers, row) = match (new.to, members) {
                (Target::User(receiver), _) => {
                    let sender = next(new.sender_id);
                    let receiver_seq = next(receiver);
                    let row = (Some(sender.1), Some(receiver_seq.1), Vec::new());
                    (
                        Some(receiver),
                        conversation_id(new.sender_id, receiver),
                        vec![sender, receiver_seq],
                        row,
                    )
                }
                (Target::Group(group), Some(members)) => {
                    let numbers: Vec<(Uuid, i64)> = members.iter().map(|&m| next(m)).collect();
                    (None, group, numbers.clone(), (None, None, numbers))
                }
                (Target::Group(_), None) => unreachable!("groups were looked up above"),
            };
            let message = Message {
                id: new.id,
                sender_id: new.sender_id,
                receiver_id,
                content: new.content.clone(),
                message_type: MessageType::of(&new.attachments),
                is_read: false,
                read_at: None,
                created_at: new.created_at,
                updated_at: new.created_at,
                client_id: new.client_id.clone(),
                conversation_id: conversation,
                edited_at: None,
                deleted_at: None,
                reply_to: new.reply_to.clone(),
                reactions: Vec::new(),
                attachments: new.attachments.clone(),
            };
            outcomes.push(InsertOutcome::Created(Stored {
                message: message.clone(),
                seqs: numbers,
            }));
            let (sender_seq, receiver_seq, inbox) = row;
            rows.push(PlannedRow {
                message,
                sender_seq,
                receiver_seq,
                inbox,
            });
        }
        Self {
            outcomes,
            rows,
            seqs,
        }
    }

    /// Each direct conversation's latest message among the rows that
    /// `stored`, so the conversations table only ever points at messages
    /// that exist.
    pub(super) fn conversation_heads(
        &self,
        stored: impl Fn(&PlannedRow) -> bool,
    ) -> Vec<ConversationHead> {
        let mut heads: HashMap<Uuid, ConversationHead> = HashMap::new();
        for row in self.rows.iter().filter(|r| stored(r)) {
            let m = &row.message;
            let Some(receiver) = m.receiver_id else {
                continue;
            };
            let (a, b) = if m.sender_id <= receiver {
                (m.sender_id, receiver)
            } else {
                (receiver, m.sender_id)
            };
            heads.insert(
                m.conversation_id,
                (m.conversation_id, a, b, m.id, m.created_at),
            );
        }
        heads.into_values().collect()
    }

    /// Each group's latest message among the rows that `stored`:
    /// (group, message id, time).
    pub(super) fn group_heads(
        &self,
        stored: impl Fn(&PlannedRow) -> bool,
    ) -> Vec<(Uuid, Uuid, DateTime<Utc>)> {
        let mut heads: HashMap<Uuid, (Uuid, Uuid, DateTime<Utc>)> = HashMap::new();
        for row in self
            .rows
            .iter()
            .filter(|r| stored(r) && !r.inbox.is_empty())
        {
            let m = &row.message;
            heads.insert(m.conversation_id, (m.conversation_id, m.id, m.created_at));
        }
        heads.into_values().collect()
    }

    /// Inbox rows of the group messages that `stored`. The sender's own
    /// row is read from the start.
    pub(super) fn inbox_rows(&self, stored: impl Fn(&PlannedRow) -> bool) -> Vec<InboxRow> {
        self.rows
            .iter()
            .filter(|r| stored(r))
            .flat_map(|r| {
                let m = &r.message;
                r.inbox.iter().map(move |&(user, seq)| {
                    let read = (user == m.sender_id).then_some(m.created_at);
                    (user, seq, m.id, m.conversation_id, read)
                })
            })
            .collect()
    }

    /// (attachment, message, owner) for the files of the rows that
    /// `stored`: each attachment names its message.
    pub(super) fn attachment_links(
        &self,
        stored: impl Fn(&PlannedRow) -> bool,
    ) -> Vec<(Uuid, Uuid, Uuid)> {
        self.rows
            .iter()
            .filter(|r| stored(r))
            .flat_map(|r| {
                let m = &r.message;
                m.attachments.iter().map(move |a| (a.id, m.id, m.sender_id))
            })
            .collect()
    }

    /// Some rows were not stored because their `client_id` was already taken
    /// (a writer on another node won the race): answer those, and their
    /// repeats in this batch, with the message already stored.
    pub(super) fn resolve_conflicts(&mut self, existing: &HashMap<Uuid, Message>) {
        for outcome in &mut self.outcomes {
            let lost = match outcome {
                InsertOutcome::Created(Stored { message: m, .. }) | InsertOutcome::Duplicate(m) => {
                    existing.get(&m.id)
                }
                _ => None,
            };
            if let Some(stored) = lost {
                *outcome = InsertOutcome::Duplicate(stored.clone());
            }
        }
    }
}

/// The groups a batch writes to, sorted so every writer locks them in one
/// order (before any user).
pub(super) fn groups_of(batch: &[NewMessage]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = batch
        .iter()
        .filter_map(|m| match m.to {
            Target::Group(g) => Some(g),
            Target::User(_) => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Users a batch touches (direct participants and the members of its
/// groups), sorted so every writer locks them in one order.
pub(super) fn users_of(batch: &[NewMessage], groups: &GroupMembers) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = batch
        .iter()
        .flat_map(|m| match m.to {
            Target::User(r) => vec![m.sender_id, r],
            Target::Group(_) => vec![m.sender_id],
        })
        .chain(groups.values().flatten().copied())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// What one change of a batch came to before the batch is numbered.
pub(super) enum Step {
    /// Answered without a write: refused, or nothing to do.
    Refused(ChangeOutcome),
    /// Its `client_id` was taken meanwhile by a change to another message.
    KeyTaken,
    Applied(Written),
}

/// A change written, waiting for its numbers.
pub(super) struct Written {
    /// The message as the change left it.
    pub(super) message: Message,
    /// Who can read the message, in id order: each gets the change numbered.
    pub(super) readers: Vec<Uuid>,
    /// Attachments a delete took from the message.
    pub(super) removed: Vec<Uuid>,
    pub(super) deleted: bool,
}

/// A batch of changes numbered relative to each reader's current number:
/// each reader's count (`users`, `counts`) and, per (reader, change), the
/// change's place among that reader's (1 for its first change of the
/// batch), in batch order. Adding a reader's base gives the real numbers.
#[derive(Default)]
pub(super) struct ChangeNumbers {
    pub(super) users: Vec<Uuid>,
    pub(super) counts: Vec<i64>,
    pub(super) reader: Vec<Uuid>,
    pub(super) place: Vec<i64>,
    pub(super) change: Vec<Uuid>,
}

impl ChangeNumbers {
    pub(super) fn new(changes: &[(Uuid, &[Uuid])]) -> Self {
        let mut counts = HashMap::<Uuid, i64>::new();
        let mut plan = Self::default();
        for &(change, readers) in changes {
            for &reader in readers {
                let count = counts.entry(reader).or_default();
                *count += 1;
                plan.reader.push(reader);
                plan.place.push(*count);
                plan.change.push(change);
            }
        }
        let mut users: Vec<(Uuid, i64)> = counts.into_iter().collect();
        users.sort_unstable();
        (plan.users, plan.counts) = users.into_iter().unzip();
        plan
    }

    /// Each change's (reader, number), in batch order, given each reader's
    /// number before the batch.
    pub(super) fn numbered(
        &self,
        changes: &[(Uuid, &[Uuid])],
        bases: &HashMap<Uuid, i64>,
    ) -> Vec<Vec<(Uuid, i64)>> {
        let mut next = self.reader.iter().zip(&self.place);
        changes
            .iter()
            .map(|(_, readers)| {
                next.by_ref()
                    .take(readers.len())
                    .map(|(&user, &place)| (user, bases[&user] + place))
                    .collect()
            })
            .collect()
    }
}

/// `ids` sorted, each once.
pub(super) fn distinct(ids: &[Uuid]) -> Vec<Uuid> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// `items` with only the last of each key kept, in the order of those
/// last ones: a batch names each row once (PostgreSQL refuses an upsert
/// that touches a row twice, and an update joined to two values for one
/// row takes either).
pub(super) fn last_per_key<T, K: Eq + std::hash::Hash>(
    items: &[T],
    key: impl Fn(&T) -> K,
) -> Vec<&T> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<&T> = items.iter().rev().filter(|i| seen.insert(key(i))).collect();
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_numbers_each_user_in_order_and_folds_repeats() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let new = |client_id: &str| NewMessage {
            id: Uuid::now_v7(),
            sender_id: a,
            to: Target::User(b),
            content: "hi".into(),
            client_id: Some(client_id.into()),
            created_at: now(),
            reply_to: None,
            attachments: Vec::new(),
        };
        let batch = [new("1"), new("2"), new("1")];
        let plan = BatchPlan::new(
            &batch,
            HashMap::from([(a, 5), (b, 9)]),
            &HashMap::new(),
            &HashMap::new(),
        );
        assert_eq!(plan.rows.len(), 2);
        assert_eq!(
            (plan.rows[0].sender_seq, plan.rows[0].receiver_seq),
            (Some(6), Some(10))
        );
        assert_eq!(
            (plan.rows[1].sender_seq, plan.rows[1].receiver_seq),
            (Some(7), Some(11))
        );
        assert_eq!(
            plan.outcomes[2],
            InsertOutcome::Duplicate(plan.rows[0].message.clone())
        );
        assert_eq!(plan.seqs[&a], 7);
    }

    #[test]
    fn a_group_message_numbers_every_member_and_needs_a_member() {
        let (a, b, c, outsider, g) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        let new = |from: Uuid, to: Target| NewMessage {
            id: Uuid::now_v7(),
            sender_id: from,
            to,
            content: "hi".into(),
            client_id: None,
            created_at: now(),
            reply_to: None,
            attachments: Vec::new(),
        };
        let batch = [
            new(a, Target::Group(g)),
            new(outsider, Target::Group(g)),
            new(a, Target::Group(Uuid::now_v7())),
        ];
        let plan = BatchPlan::new(
            &batch,
            HashMap::from([(a, 1), (b, 2), (c, 3), (outsider, 4)]),
            &HashMap::from([(g, vec![a, b, c])]),
            &HashMap::new(),
        );
        assert_eq!(plan.rows.len(), 1);
        assert_eq!(plan.rows[0].inbox, vec![(a, 2), (b, 3), (c, 4)]);
        assert_eq!(plan.rows[0].message.receiver_id, None);
        assert_eq!(plan.rows[0].message.conversation_id, g);
        assert_eq!(plan.outcomes[1], InsertOutcome::NotMember);
        assert_eq!(plan.outcomes[2], InsertOutcome::GroupNotFound);
        let inbox = plan.inbox_rows(|_| true);
        assert_eq!(
            inbox[0].4,
            Some(plan.rows[0].message.created_at),
            "the sender has read their own"
        );
        assert_eq!(inbox[1].4, None);
    }

    #[test]
    fn a_batch_of_changes_numbers_each_reader_in_batch_order() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let (x, y, z) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let (ab, bc) = ([a, b], [b, c]);
        let changes: [(Uuid, &[Uuid]); 3] = [(x, &ab), (y, &bc), (z, &ab)];
        let plan = ChangeNumbers::new(&changes);
        assert_eq!(plan.users, vec![a, b, c]);
        assert_eq!(plan.counts, vec![2, 3, 1]);
        let numbered = plan.numbered(&changes, &HashMap::from([(a, 10), (b, 20), (c, 30)]));
        assert_eq!(
            numbered,
            vec![
                vec![(a, 11), (b, 21)],
                vec![(b, 22), (c, 31)],
                vec![(a, 12), (b, 23)]
            ]
        );
    }
}
