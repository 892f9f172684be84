//! Printing an error with its causes: written once, used by the CLI, the
//! reports and every module that folds a library's error into its own message.
//!
//! A cause whose text the message already contains is left out, so an error
//! that embeds its source (`cannot read X: No such file`) does not stutter.

use std::error::Error;

/// The error and its causes, one per line (`  caused by: …`).
pub fn chain_lines(err: &(dyn Error + 'static)) -> String {
    join(err, "\n  caused by: ")
}

/// The error and its causes on one line, separated by `: `.
pub fn chain_inline(err: &(dyn Error + 'static)) -> String {
    join(err, ": ")
}

/// A parser's message without hints meant for the programmer using the
/// library (serde-saphyr's `set DuplicateKeyPolicy in Options if
/// acceptable`), with what a person can do instead.
pub fn for_people(message: &str) -> String {
    message.replace(
        ", set DuplicateKeyPolicy in Options if acceptable",
        " (a key may appear only once in a mapping: remove or merge the repeated one)",
    )
}

fn join(err: &(dyn Error + 'static), separator: &str) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let t = cause.to_string();
        if !t.is_empty() && !text.contains(&t) {
            text.push_str(separator);
            text.push_str(&t);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_hints_are_replaced() {
        let m = for_people(
            "duplicate mapping key: id, set DuplicateKeyPolicy in Options if acceptable",
        );
        assert!(!m.contains("DuplicateKeyPolicy"), "{m}");
        assert!(
            m.contains("duplicate mapping key: id (a key may appear only once"),
            "{m}"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Embeds(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Inner;

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        assert_eq!(chain_lines(&Embeds(Inner)), "outer: connection refused");
        assert_eq!(
            chain_lines(&Outer(Inner)),
            "cannot connect\n  caused by: connection refused"
        );
        assert_eq!(
            chain_inline(&Outer(Inner)),
            "cannot connect: connection refused"
        );
    }
}
