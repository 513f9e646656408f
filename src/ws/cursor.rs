//! Where a user's live delivery stands on this node: which of their
//! sequence numbers reached their sessions, so repeats are dropped and
//! gaps noticed.

use std::collections::BTreeSet;
use std::time::Instant;

/// Which of a user's sequence numbers reached this node's sessions of that
/// user. Live delivery can reorder and lose frames; this is what lets the
/// node drop repeats and notice (and then fill) what it missed.
#[derive(Debug, Default)]
pub struct Cursor {
    /// Every number up to here is accounted for: delivered, committed
    /// before the user's first session here, or never used (a number a
    /// lost idempotency race left unused). `None` until it is read.
    pub(super) floor: Option<i64>,
    /// Numbers above `floor + 1` already delivered.
    pub(super) ahead: BTreeSet<i64>,
    /// Since when a number below `ahead` has been missing.
    pub(super) gap_since: Option<Instant>,
    /// The bus subscription for this user is confirmed.
    pub(super) live: bool,
}

impl Cursor {
    /// Records number `seq`; `false` when it was delivered already.
    pub(super) fn accept(&mut self, seq: i64) -> bool {
        match self.floor {
            Some(floor) if seq <= floor => return false,
            Some(floor) if seq == floor + 1 => {
                self.floor = Some(seq);
                self.absorb();
            }
            _ => {
                if !self.ahead.insert(seq) {
                    return false;
                }
            }
        }
        true
    }

    /// Moves the floor up to `to`: everything at or below it is accounted
    /// for.
    pub(super) fn raise(&mut self, to: i64) {
        let floor = self.floor.map_or(to, |floor| floor.max(to));
        self.floor = Some(floor);
        self.ahead.retain(|&s| s > floor);
        self.absorb();
    }

    /// Sets the first floor, unless one was set already: a reading taken
    /// for an earlier session (since closed) must not move a later one's.
    pub(super) fn set_first(&mut self, to: i64) {
        if self.floor.is_none() {
            self.raise(to);
        }
    }

    pub(super) fn absorb(&mut self) {
        while let Some(floor) = self.floor {
            if self.ahead.first() != Some(&(floor + 1)) {
                break;
            }
            self.ahead.pop_first();
            self.floor = Some(floor + 1);
        }
    }

    /// Updates `gap_since`; `true` when a gap just opened.
    pub(super) fn track_gap(&mut self) -> bool {
        let open = self.floor.is_some() && !self.ahead.is_empty();
        match (open, self.gap_since) {
            (true, None) => {
                self.gap_since = Some(Instant::now());
                true
            }
            (false, _) => {
                self.gap_since = None;
                false
            }
            (true, Some(_)) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_drops_repeats_and_sees_gaps_close() {
        let mut cursor = Cursor::default();
        // Before the floor is known, frames are delivered and remembered.
        assert!(cursor.accept(7));
        assert!(!cursor.track_gap());
        cursor.set_first(5);
        assert!(cursor.track_gap(), "6 is missing");
        assert!(!cursor.accept(7), "a repeat");
        assert!(cursor.accept(6));
        assert!(!cursor.track_gap());
        assert_eq!(cursor.floor, Some(7));
        assert!(!cursor.accept(3), "from before the floor");
        // A hole that never fills: catch-up raises the floor past it.
        assert!(cursor.accept(10));
        assert!(cursor.track_gap());
        cursor.raise(10);
        assert!(!cursor.track_gap());
        assert_eq!((cursor.floor, cursor.ahead.len()), (Some(10), 0));
    }
}
