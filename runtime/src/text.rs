//! Outside text quoted into messages: never an unbounded echo of what a client sent.
//!
//! A leaf: every protocol (HTTP, gRPC) and the protocol-neutral tensor checks quote
//! with it, so a message reads the same whichever way the request came.

/// The most of an outside value an error message repeats: enough to recognise it, never
/// an unbounded echo of what a client sent.
const ECHO_MAX_CHARS: usize = 40;

/// `value` quoted for a message, cut to [`ECHO_MAX_CHARS`] characters.
pub fn echo(value: &str) -> String {
    let head = truncate(value, ECHO_MAX_CHARS);
    if head.len() < value.len() {
        format!("{head:?}… ({} characters)", value.chars().count())
    } else {
        format!("{head:?}")
    }
}

/// The first `max` characters of `text`.
pub fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_is_cut_to_its_bound() {
        assert_eq!(echo("abc"), "\"abc\"");
        let long = "x".repeat(5000);
        let cut = echo(&long);
        assert!(cut.len() < 80 && cut.ends_with("(5000 characters)"), "{cut}");
    }
}
