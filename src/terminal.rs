//! Text that reaches a terminal: what a slave says (its `Fatal` and failure
//! messages, the stderr of a remote command, how its process ended) and
//! file names are not the operator's, and a control character in them
//! could move the cursor, clear the screen or retitle the window. They are
//! shown escaped.

use std::borrow::Cow;

/// `text` with every control character (C0 but newline and tab, DEL, C1)
/// and every bidirectional override written as a `\u{…}` escape; the text
/// itself when it has none.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A character a terminal may act on rather than show.
fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        // Bidirectional embeddings, overrides and isolates reorder what
        // follows them.
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(escape_controls("plain: é\n\tx"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\u{1b}]0;pwned\u{7}b\u{1b}[2Jc\rd\u{9b}e\u{7f}"),
            "a\\u{1b}]0;pwned\\u{7}b\\u{1b}[2Jc\\u{d}d\\u{9b}e\\u{7f}"
        );
        assert_eq!(escape_controls("x\u{202e}y"), "x\\u{202e}y");
    }
}
