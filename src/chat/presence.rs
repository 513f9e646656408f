//! Presence: who is told what when a user comes and goes. Transitions are
//! recorded and announced to the user's contacts; what fails is repaired
//! later, so every contact's view converges; and a first message introduces
//! its sender's presence to whoever it made them talk to.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use uuid::Uuid;

use super::Chat;
use crate::bus::{Envelope, Order, SessionId};
use crate::presence::{Closed, Transition};
use crate::protocol::ServerFrame;
use crate::store;

/// A presence transition as the frame contacts get, and its order (so a
/// node never forwards an older one after a newer).
fn presence_frame(t: &Transition) -> (ServerFrame, Order) {
    let frame = if t.online {
        ServerFrame::UserOnline {
            user_id: t.user,
            version: t.version,
        }
    } else {
        ServerFrame::UserOffline {
            user_id: t.user,
            version: t.version,
        }
    };
    let order = Order::Presence {
        user: t.user,
        version: t.version,
    };
    (frame, order)
}

/// A presence change this node owes its contacts an (accurate) word about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repair {
    /// Closing this session failed: close it again.
    Close(SessionId),
    /// The presence store lost the user's state: settle what it is now.
    Settle,
    /// Telling contacts failed (bus or storage): tell them the state now.
    Announce,
}

pub(super) struct PendingRepair {
    user: Uuid,
    repair: Repair,
    due: Instant,
}

/// How soon a failed announcement is tried again.
const ANNOUNCE_RETRY: Duration = Duration::from_secs(1);
/// Transitions recorded and announced together, at most.
pub(super) const ANNOUNCE_BATCH: usize = 512;

/// Pairs remembered as introduced: past this the set starts again (a pair
/// introduced twice costs presence frames the receiving nodes drop).
const INTRODUCED_CAP: usize = 100_000;

/// How long an introduction waits for presence.
const INTRODUCE_WITHIN: Duration = Duration::from_secs(2);

impl Chat {
    pub async fn is_online(&self, user: Uuid) -> bool {
        self.presence.is_online(user).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "presence lookup failed");
            false
        })
    }

    /// A session opened: the user's first session anywhere makes them
    /// online, and their contacts are told. If presence is down, the
    /// heartbeat puts the session in when it is back and announces it then.
    pub async fn session_opened(&self, user: Uuid, session: SessionId) {
        match self.presence.session_opened(user, session).await {
            Ok(Some(transition)) => {
                self.announce(transition).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "presence update failed; the heartbeat restores it")
            }
        }
    }

    /// A session closed: the user's last session anywhere makes them
    /// offline, and their contacts are told.
    pub async fn session_closed(&self, user: Uuid, session: SessionId) {
        match self.presence.session_closed(user, session).await {
            Ok(Closed::Offline(transition)) => {
                self.announce(transition).await;
            }
            Ok(Closed::Unchanged) => {}
            Ok(Closed::Lost) => self.defer(user, Repair::Settle, self.presence_every),
            Err(e) => {
                tracing::warn!(error = %e, "presence update failed; retrying when it is back");
                self.defer(user, Repair::Close(session), self.presence_every);
            }
        }
    }

    /// The heartbeat found these users missing from presence (a flush or an
    /// outage) and put them back: contacts hear they are online, with a new
    /// version, which changes nothing for whoever already saw them online.
    pub async fn restored(&self, transitions: Vec<Transition>) {
        self.announce_all(transitions).await;
    }

    /// Users whose sessions expired on a dead node.
    pub async fn sweep_presence(&self) {
        match self.presence.sweep().await {
            Ok(gone) => self.announce_all(gone).await,
            Err(e) => tracing::warn!(error = %e, "presence sweep failed"),
        }
    }

    /// Carries out the repairs that are due. `healthy_for`: how long
    /// presence has answered this node's heartbeats without a failure.
    pub async fn repair_presence(&self, healthy_for: Duration) {
        let now = Instant::now();
        let due: Vec<PendingRepair> = {
            let mut repairs = self.repairs.lock().expect("not poisoned");
            let (due, later) = std::mem::take(&mut *repairs).into_iter().partition(|r| {
                r.due <= now && (r.repair == Repair::Announce || healthy_for >= self.presence_every)
            });
            *repairs = later;
            due
        };
        let mut due = due.into_iter();
        while let Some(PendingRepair { user, repair, .. }) = due.next() {
            let settled = match repair {
                Repair::Close(session) => match self.presence.session_closed(user, session).await {
                    Ok(Closed::Offline(transition)) => Ok(Some(transition)),
                    Ok(Closed::Unchanged) => Ok(None),
                    Ok(Closed::Lost) => self.presence.settle(user).await.map(Some),
                    Err(e) => Err(e),
                },
                Repair::Settle | Repair::Announce => self.presence.settle(user).await.map(Some),
            };
            let done = match settled {
                Ok(Some(transition)) => self.announce(transition).await,
                Ok(None) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "presence repair failed; retrying");
                    self.defer(user, repair, ANNOUNCE_RETRY);
                    false
                }
            };
            if !done {
                // Something is still down: the rest waits for the next
                // round instead of each waiting out its own timeout now.
                for rest in due.by_ref() {
                    self.defer(rest.user, rest.repair, ANNOUNCE_RETRY);
                }
            }
        }
    }

    fn defer(&self, user: Uuid, repair: Repair, after: Duration) {
        let mut repairs = self.repairs.lock().expect("not poisoned");
        if !repairs.iter().any(|r| r.user == user && r.repair == repair) {
            repairs.push(PendingRepair {
                user,
                repair,
                due: Instant::now() + after,
            });
        }
    }

    /// Records a transition and tells the user's contacts, as part of the
    /// next batch (see [`announce_batch`]). If any step fails the state is
    /// announced again later, so contacts converge; `false` then.
    async fn announce(&self, t: Transition) -> bool {
        let user = t.user;
        let done = match self.announcer.ask(t).await {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(error = %e, "could not announce presence; retrying");
                false
            }
        };
        if !done {
            self.defer(user, Repair::Announce, ANNOUNCE_RETRY);
        }
        done
    }

    /// Announces many transitions (a heartbeat's or a sweep's): up to a
    /// batch's worth queue at once, so they are recorded and told together.
    async fn announce_all(&self, transitions: Vec<Transition>) {
        futures_util::stream::iter(transitions)
            .for_each_concurrent(ANNOUNCE_BATCH, |t| async move {
                self.announce(t).await;
            })
            .await;
    }

    /// A message makes its sender someone who has talked to its other
    /// participants (the recipient, or the members of a group within
    /// `PRESENCE_GROUP_LIMIT`), so they are told the sender's presence now,
    /// rather than at the sender's next transition (which, for a sender
    /// who stays online, may be hours away). Once per sender and
    /// conversation per node; in the background, so no ack waits on
    /// presence.
    pub(super) fn introduce(
        &self,
        sender: Uuid,
        conversation: Uuid,
        participants: impl Iterator<Item = Uuid>,
    ) {
        {
            let mut introduced = self.introduced.lock().expect("not poisoned");
            if introduced.contains(&(sender, conversation)) {
                return;
            }
            if introduced.len() >= INTRODUCED_CAP {
                introduced.clear();
            }
            introduced.insert((sender, conversation));
        }
        let listeners: Vec<Uuid> = participants.filter(|u| *u != sender).collect();
        let (presence, bus, store) = (self.presence.clone(), self.bus.clone(), self.store.clone());
        self.tasks.spawn(async move {
            // A sender who blocked a participant keeps their presence from
            // them, as `contacts` does.
            let pairs: Vec<(Uuid, Uuid)> = listeners.iter().map(|l| (sender, *l)).collect();
            let Ok(blocked) = store.blocked(&pairs).await else {
                return;
            };
            let listeners: Vec<Uuid> = listeners
                .into_iter()
                .filter(|l| !blocked.contains(&(sender, *l)))
                .collect();
            if listeners.is_empty() {
                return;
            }
            // An offline sender is what the participants assume already;
            // settling them would only mint a version for nothing (and an
            // offline frame that may overtake their next online one).
            let online = tokio::time::timeout(INTRODUCE_WITHIN, presence.is_online(sender)).await;
            if !matches!(online, Ok(Ok(true))) {
                return;
            }
            let settled = tokio::time::timeout(INTRODUCE_WITHIN, presence.settle(sender)).await;
            let Ok(Ok(t)) = settled else {
                // The sender's next transition, or a repair, tells them.
                return;
            };
            let (frame, order) = presence_frame(&t);
            let event = Envelope::new(&frame, None).ordered(order);
            let events = listeners.into_iter().map(|l| (l, event.clone())).collect();
            if let Err(e) = bus.publish(events).await {
                tracing::debug!(error = %e, "could not introduce a sender's presence");
            }
        });
    }
}

/// Records a batch of transitions and tells each user's contacts: one
/// statement records them all, one finds every user's contacts, and the
/// frames go to the bus in one hand-off. A departure storm (a node's
/// clients failing over to this one) is then a few statements per batch
/// instead of two per user, each waiting for one of the pool's
/// connections that the arriving users' connects need too. Answers, for
/// each transition, whether it was both recorded and told.
pub(super) async fn announce_batch(
    store: &dyn store::Store,
    bus: &crate::bus::SharedBus,
    group_limit: u32,
    transitions: Vec<Transition>,
) -> store::StoreResult<Vec<bool>> {
    let at = store::now();
    let records: Vec<_> = transitions.iter().map(|t| (t.user, t.online, at)).collect();
    let recorded = store.set_presences(&records).await;
    if let Err(e) = &recorded {
        tracing::warn!(error = %e, users = records.len(), "could not record presence");
    }
    let users: Vec<Uuid> = transitions.iter().map(|t| t.user).collect();
    let told = match store.contacts_of(&users, group_limit).await {
        Ok(pairs) => {
            let mut contacts: std::collections::HashMap<Uuid, Vec<Uuid>> = Default::default();
            for (user, contact) in pairs {
                contacts.entry(user).or_default().push(contact);
            }
            let mut events = Vec::new();
            for t in &transitions {
                let Some(to) = contacts.get(&t.user) else {
                    continue;
                };
                let (frame, order) = presence_frame(t);
                let (kind, json) = (frame.kind(), frame.to_json());
                events.extend(to.iter().map(|c| {
                    (
                        *c,
                        Envelope::shared(kind, json.clone(), None).ordered(order),
                    )
                }));
            }
            if events.is_empty() {
                // Nobody to tell (new users): no wait behind the bus.
                Ok(())
            } else {
                bus.publish_confirmed(events)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = &told {
        tracing::warn!(error = %e, users = users.len(), "could not announce presence; retrying");
    }
    Ok(vec![recorded.is_ok() && told.is_ok(); transitions.len()])
}
