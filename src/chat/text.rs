//! The one place text from a client is judged: message content, names
//! people see beside it (usernames, group titles), idempotency keys and
//! avatar URLs.
//!
//! Content may span lines, so it keeps newline and tab and refuses every
//! other control character (an ESC starts a terminal escape in a log or a
//! CLI client; NUL cannot be stored in PostgreSQL). A name is one line shown
//! next to others' words, so it refuses controls of any kind and the
//! invisible format characters too: a right-to-left override turns
//! `bob\u{202e}gnp.exe` into "bobexe.png", and zero-width characters make two
//! names look the same.

use unicode_general_category::{GeneralCategory, get_general_category};

use crate::error::{ApiError, ApiResult, ErrorCode};

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

/// Message text: trimmed, 1..=limit characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content(pub(super) String);

impl Content {
    pub fn parse(raw: &str, max_chars: usize) -> ApiResult<Self> {
        let trimmed = raw.trim();
        // Checked before the batch: one message PostgreSQL cannot store (a
        // NUL) must not fail the others committed with it.
        if trimmed.contains(refused_in_content) {
            return Err(ApiError::invalid_field(
                "content must not contain control characters other than newline and tab",
            ));
        }
        if trimmed.is_empty() {
            return Err(ApiError::new(ErrorCode::ContentEmpty, "content is empty"));
        }
        let chars = trimmed.chars().count();
        if chars > max_chars {
            return Err(ApiError::new(
                ErrorCode::ContentTooLong,
                format!("content is {chars} characters; the limit is {max_chars}"),
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }
}

/// A sender's idempotency key: 1..=64 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId(pub(super) String);

impl ClientId {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(raw: &str) -> ApiResult<Self> {
        if raw.is_empty() || raw.chars().count() > Self::MAX_CHARS || raw.contains('\0') {
            return Err(ApiError::invalid_field(
                "client_id must be 1 to 64 characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

/// A reaction: one emoji as Unicode lists it (skin tones and sequences
/// included, kept in its fully qualified form so one emoji is counted once
/// however a keyboard typed it), or a `:shortcode:` of at most 32
/// characters (lowercase letters, digits, `_`, `+`, `-`) for an app's own
/// set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emoji(pub(super) String);

impl Emoji {
    pub const MAX_SHORTCODE_CHARS: usize = 32;

    pub fn parse(raw: &str) -> ApiResult<Self> {
        if let Some(emoji) = emojis::get(raw) {
            return Ok(Self(emoji.as_str().to_owned()));
        }
        let code = raw
            .strip_prefix(':')
            .and_then(|r| r.strip_suffix(':'))
            .filter(|c| !c.is_empty() && raw.chars().count() <= Self::MAX_SHORTCODE_CHARS);
        let word = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_+-".contains(c);
        match code {
            Some(code) if code.chars().all(word) => Ok(Self(raw.to_owned())),
            _ => Err(ApiError::invalid_field(
                "emoji must be one emoji, or a :shortcode: of at most 32 characters \
                 (a-z, 0-9, _, +, -)",
            )),
        }
    }
}

const MAX_AVATAR_URL_CHARS: usize = 2048;

/// An avatar (a user's or a group's): an http(s) URL without whitespace.
pub fn avatar_url(raw: &str) -> ApiResult<String> {
    // Not trimmed: a URL has no spaces, at its ends or anywhere.
    let url = raw;
    let web = url.starts_with("https://") || url.starts_with("http://");
    // Control characters (U+0000 above all, which PostgreSQL cannot store)
    // are no part of a URL.
    let stray = |c: char| c.is_whitespace() || c.is_control();
    if !web || url.chars().count() > MAX_AVATAR_URL_CHARS || url.contains(stray) {
        return Err(ApiError::invalid_field(format!(
            "avatar_url must be an http(s) URL of at most {MAX_AVATAR_URL_CHARS} characters, or null"
        )));
    }
    Ok(url.to_owned())
}

/// Why a name or title was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadName {
    /// Nothing but spaces.
    Empty,
    /// Longer than allowed as sent, or holding a character names refuse.
    Invalid,
}

/// A name or title: trimmed, at most `max_chars` characters as sent (the
/// length the API document bounds), none of them refused in names.
pub fn name(raw: &str, max_chars: usize) -> Result<String, BadName> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(BadName::Empty);
    }
    // Judged as sent: trimming must not make `"Trip\r"` pass, as the API
    // document's pattern (no control character anywhere) refuses it.
    if raw.chars().count() > max_chars || raw.contains(refused_in_name) {
        return Err(BadName::Invalid);
    }
    Ok(name.to_owned())
}

/// What a name or title may not hold, for error messages.
pub const NAME_RULE: &str = "no control or invisible formatting characters";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_trimmed_and_bounded() {
        assert_eq!(Content::parse("  hi  ", 10).unwrap(), Content("hi".into()));
        assert_eq!(
            Content::parse(" \n\t ", 10).unwrap_err().code,
            ErrorCode::ContentEmpty
        );
        assert_eq!(
            Content::parse(&"é".repeat(11), 10).unwrap_err().code,
            ErrorCode::ContentTooLong
        );
        assert!(
            Content::parse(&"é".repeat(10), 10).is_ok(),
            "the limit counts characters, not bytes"
        );
        assert_eq!(
            Content::parse("line one\n\tline two", 100).unwrap(),
            Content("line one\n\tline two".into())
        );
        assert_eq!(
            Content::parse("red \u{1b}[31m alert", 100).unwrap_err(),
            ApiError::invalid_field(
                "content must not contain control characters other than newline and tab"
            )
        );
    }

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
    fn a_name_is_judged_as_sent_then_trimmed() {
        assert_eq!(name("  Trip  ", 100), Ok("Trip".to_owned()));
        assert_eq!(name("Trip\r", 100), Err(BadName::Invalid));
        assert_eq!(name("\tTrip", 100), Err(BadName::Invalid));
        assert_eq!(name(" \r ", 100), Err(BadName::Empty));
    }

    #[test]
    fn a_reaction_is_one_emoji_or_a_shortcode() {
        for ok in ["👍", "❤️", "👍🏽", "👨‍👩‍👧", "🇫🇷", ":party_parrot:", ":+1:"]
        {
            assert!(Emoji::parse(ok).is_ok(), "{ok:?}");
        }
        assert_eq!(
            Emoji::parse("❤").unwrap(),
            Emoji::parse("❤️").unwrap(),
            "one heart, with or without its variation selector"
        );
        let longest = format!(":{}:", "a".repeat(30));
        assert!(Emoji::parse(&longest).is_ok());
        for bad in [
            "",
            "a",
            "👍👍",
            "👍 ",
            "::",
            ":Caps:",
            ":a b:",
            &format!(":{}:", "a".repeat(31)),
            "<script>",
        ] {
            assert_eq!(
                Emoji::parse(bad).unwrap_err().code,
                ErrorCode::InvalidField,
                "{bad:?}"
            );
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
