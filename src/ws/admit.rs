//! Admission of client frames: each is parsed and charged to its user's
//! budget when it arrives, and a refused one is answered (or, within a
//! burst already answered, not).

use tokio::time::Instant;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::budget::{Budgets, OverBudget};
use crate::error::{ApiError, ErrorCode};
use crate::protocol::{ClientFrame, SendFrame, ServerFrame};
use crate::state::AppState;

/// What to do with one text frame.
pub enum Admitted {
    /// Answered at once (a parse error, a rate limit, a pong), or not at
    /// all (a refusal within a burst already answered).
    Reply(Option<ServerFrame>),
    Send(SendFrame),
    InOrder(ClientFrame),
}

/// Parses a frame and charges it to the user's budget when it arrives
/// (every frame, whatever it is: a flood of pings, invalid JSON or no-op
/// `mark_read`s costs the node as much as one of messages), so pipelined
/// frames are limited exactly as sequential ones.
pub fn admit(state: &AppState, user: &AuthUser, text: &str, refusals: &mut Refusals) -> Admitted {
    let frame = match ClientFrame::parse(text) {
        Ok(frame) => frame,
        Err(e) => {
            return Admitted::Reply(
                match refusals.charge(
                    &state.budgets,
                    user.id,
                    "invalid",
                    e.client_id.clone(),
                    false,
                ) {
                    Charge::Refused(answer) => answer,
                    Charge::Admitted => Some(ServerFrame::error(e.error, e.client_id)),
                },
            );
        }
    };
    // A client waits for the answer to these, refused or not.
    let (client_id, waited_on) = match &frame {
        ClientFrame::Message(_) | ClientFrame::Change { .. } => {
            (frame.client_id().map(str::to_owned), true)
        }
        ClientFrame::Sync { .. } | ClientFrame::Ping => (None, true),
        _ => (None, false),
    };
    if let Charge::Refused(answer) =
        refusals.charge(&state.budgets, user.id, frame.kind(), client_id, waited_on)
    {
        return Admitted::Reply(answer);
    }
    crate::metrics::frame_in(frame.kind());
    match frame {
        ClientFrame::Message(f) => Admitted::Send(f),
        ClientFrame::Ping => Admitted::Reply(Some(ServerFrame::Pong)),
        frame => Admitted::InOrder(frame),
    }
}

/// Refused frames in a row after which a socket is not read until its
/// user's budget has room again.
const REFUSALS_BEFORE_PAUSE: u32 = 64;

/// Charges frames to the user's budget and answers refusals. A frame whose
/// answer the client waits for (a message, a `sync`, a `ping`, or any frame
/// naming a `client_id`) always hears back; other refused frames (typing,
/// `mark_read`, invalid or binary frames) get one `rate_limited` per burst,
/// and nothing more until a frame is admitted again: a flood is not
/// answered frame by frame.
///
/// A client that keeps sending past its refusals is then not read at all
/// until its budget has room again: refusing a frame still costs reading
/// and parsing it, and a flood refused frame by frame would take as much
/// of the node as the client cared to send. Unread, its frames wait in the
/// kernel's buffers, and once those are full its own sends block.
#[derive(Default)]
pub struct Refusals {
    answered: bool,
    in_row: u32,
    resume_at: Option<Instant>,
}

impl Refusals {
    /// Charges one frame of `kind` to `user`'s budget.
    pub fn charge(
        &mut self,
        budgets: &Budgets,
        user: Uuid,
        kind: &'static str,
        client_id: Option<String>,
        waited_on: bool,
    ) -> Charge {
        let wait = match budgets.charge_user(user) {
            Ok(()) => {
                self.answered = false;
                self.in_row = 0;
                return Charge::Admitted;
            }
            Err(OverBudget(wait)) => wait,
        };
        crate::metrics::rate_limited(kind);
        self.in_row = self.in_row.saturating_add(1);
        if self.in_row > REFUSALS_BEFORE_PAUSE {
            self.resume_at = Some(Instant::now() + wait);
        }
        if self.answered && !waited_on && client_id.is_none() {
            return Charge::Refused(None);
        }
        self.answered = true;
        Charge::Refused(Some(ServerFrame::error(
            ApiError::new(ErrorCode::RateLimited, "too many frames; slow down"),
            client_id,
        )))
    }

    /// Until when the socket is not to be read, if it is paused.
    pub fn resume_at(&self) -> Option<Instant> {
        self.resume_at
    }

    pub fn resume(&mut self) {
        self.resume_at = None;
    }
}

pub enum Charge {
    Admitted,
    /// Refused, with the answer to send, if any.
    Refused(Option<ServerFrame>),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Limits;

    /// A budget of `burst` frames that refills once an hour: what is
    /// refused stays refused for the test's length.
    fn budgets(burst: u32) -> Budgets {
        Budgets::new(&Limits {
            rate_per_sec: 1.0 / 3600.0,
            rate_burst: burst,
            ..Limits::default()
        })
    }

    fn refused(charge: Charge) -> Option<Option<ServerFrame>> {
        match charge {
            Charge::Admitted => None,
            Charge::Refused(answer) => Some(answer),
        }
    }

    fn code(answer: &Option<ServerFrame>) -> String {
        let json: serde_json::Value =
            serde_json::from_slice(&answer.as_ref().expect("an answer").to_json()).unwrap();
        json["code"].as_str().unwrap().to_owned()
    }

    #[test]
    fn frames_within_the_budget_are_admitted() {
        let (budgets, user) = (budgets(3), Uuid::now_v7());
        let mut refusals = Refusals::default();
        for _ in 0..3 {
            assert!(refused(refusals.charge(&budgets, user, "typing", None, false)).is_none());
        }
        let answer = refused(refusals.charge(&budgets, user, "typing", None, false));
        assert_eq!(
            code(&answer.expect("the fourth is refused")),
            "rate_limited"
        );
    }

    #[test]
    fn a_refused_burst_is_answered_once() {
        let (budgets, user) = (budgets(1), Uuid::now_v7());
        let mut refusals = Refusals::default();
        refusals.charge(&budgets, user, "typing", None, false);
        let first = refused(refusals.charge(&budgets, user, "typing", None, false)).unwrap();
        assert_eq!(code(&first), "rate_limited");
        for _ in 0..10 {
            let next = refused(refusals.charge(&budgets, user, "mark_read", None, false));
            assert!(next.unwrap().is_none(), "no answer within the burst");
        }
    }

    #[test]
    fn a_frame_the_client_waits_on_always_hears_back() {
        let (budgets, user) = (budgets(1), Uuid::now_v7());
        let mut refusals = Refusals::default();
        refusals.charge(&budgets, user, "message", None, true);
        for i in 0..5 {
            let id = format!("c{i}");
            let answer =
                refused(refusals.charge(&budgets, user, "message", Some(id.clone()), true))
                    .unwrap();
            let json: serde_json::Value =
                serde_json::from_slice(&answer.unwrap().to_json()).unwrap();
            assert_eq!(json["code"], "rate_limited");
            assert_eq!(json["client_id"], id.as_str());
            assert!(
                refused(refusals.charge(&budgets, user, "sync", None, true))
                    .unwrap()
                    .is_some()
            );
        }
    }

    #[test]
    fn reading_pauses_past_its_refusals_in_a_row_until_the_budget_has_room() {
        let (budgets, user) = (budgets(1), Uuid::now_v7());
        let mut refusals = Refusals::default();
        refusals.charge(&budgets, user, "typing", None, false);
        for _ in 0..REFUSALS_BEFORE_PAUSE {
            refusals.charge(&budgets, user, "typing", None, false);
            assert_eq!(refusals.resume_at(), None, "refusals alone do not pause");
        }
        refusals.charge(&budgets, user, "typing", None, false);
        let resume = refusals.resume_at().expect("paused past the refusals");
        let wait = resume - Instant::now();
        assert!(
            wait > Duration::from_secs(3000) && wait <= Duration::from_secs(3600),
            "until the budget has room: {wait:?}"
        );
        refusals.resume();
        assert_eq!(refusals.resume_at(), None);
    }

    #[test]
    fn an_admitted_frame_starts_a_new_burst() {
        let (budgets, user) = (budgets(1), Uuid::now_v7());
        let mut refusals = Refusals::default();
        refusals.charge(&budgets, user, "typing", None, false);
        assert!(
            refused(refusals.charge(&budgets, user, "typing", None, false))
                .unwrap()
                .is_some()
        );
        // Room again (here: a budget of its own, as after a refill).
        let refilled = Uuid::now_v7();
        assert!(refused(refusals.charge(&budgets, refilled, "typing", None, false)).is_none());
        let answer = refused(refusals.charge(&budgets, user, "typing", None, false)).unwrap();
        assert!(answer.is_some(), "the next burst is answered again");
    }
}
