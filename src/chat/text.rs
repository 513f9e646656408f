//! The one place text from a client is judged: message content, and names
//! people see beside it (usernames, group titles).
//!
//! Content may span lines, so it keeps newline and tab and refuses every
//! other control character (an ESC starts a terminal escape in a log or a
//! CLI client; NUL cannot be stored in PostgreSQL). A name is one line shown
//! next to others' words, so it refuses controls of any kind and the
//! invisible format characters too: a right-to-left override turns
//! `bob\u{202e}gnp.exe` into "bobexe.png", and zero-width characters make two
//! names look the same.

use unicode_general_category::{GeneralCategory, get_general_category};

/// A character content may not hold.
pub fn refused_in_content(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

/// A character a name or title may not hold: controls (Cc), format
/// characters (Cf: bidi overrides, zero-width joiners and spaces, the BOM),
/// and line or paragraph separators.
pub fn refused_in_name(c: char) -> bool {
    matches!(
        get_general_category(c),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// What a name or title may not hold, for error messages.
pub const NAME_RULE: &str = "no control or invisible formatting characters";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_keeps_lines_and_tabs_and_nothing_else_invisible() {
        for ok in ['\n', '\t', 'a', 'é', '🙂', '\u{200d}'] {
            assert!(!refused_in_content(ok), "{ok:?}");
        }
        for bad in ['\0', '\u{1}', '\u{1b}', '\r', '\u{7f}', '\u{85}'] {
            assert!(refused_in_content(bad), "{bad:?}");
        }
    }

    #[test]
    fn names_refuse_controls_bidi_overrides_and_zero_width() {
        for bad in [
            '\n', '\u{1b}', '\u{202e}', '\u{2066}', '\u{200b}', '\u{200d}', '\u{feff}', '\u{2028}',
            '\u{ad}',
        ] {
            assert!(refused_in_name(bad), "{bad:?}");
        }
        for ok in ['a', 'Ж', '中', '🙂', ' ', '-', 'é'] {
            assert!(!refused_in_name(ok), "{ok:?}");
        }
    }
}
