//! Admission of client frames: each is parsed and charged to its user's
//! budget when it arrives, and a refused one is answered (or, within a
//! burst already answered, not).

use tokio::time::Instant;

use crate::auth::AuthUser;
use crate::budget::OverBudget;
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
                match refusals.charge(state, user, "invalid", e.client_id.clone(), false) {
                    Charge::Refused(answer) => answer,
                    Charge::Admitted => Some(ServerFrame::error(e.error, e.client_id)),
                },
            );
        }
    };
    // A client waits for the answer to these, refused or not.
    let (client_id, waited_on) = match &frame {
        ClientFrame::Message(f) => (f.client_id.clone(), true),
        ClientFrame::Sync { .. } | ClientFrame::Ping => (None, true),
        _ => (None, false),
    };
    if let Charge::Refused(answer) =
        refusals.charge(state, user, frame.kind(), client_id, waited_on)
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
    pub fn charge(
        &mut self,
        state: &AppState,
        user: &AuthUser,
        kind: &'static str,
        client_id: Option<String>,
        waited_on: bool,
    ) -> Charge {
        let wait = match state.budgets.charge_user(user.id) {
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
