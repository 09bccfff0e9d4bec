//! An error said with its causes, for errors whose own message names only their kind: a
//! transport's "transport error", a database driver's "db error" or "error connecting to
//! server", where what went wrong is in the source.

/// `err` and each of its causes, "a: b: c". A cause that says what the text already ends
/// with is left out: some errors repeat their source's message in their own.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    /// An error that says its source's message in its own, as some transports' do.
    #[derive(Debug, thiserror::Error)]
    #[error("transport error: {0}")]
    struct Repeating(#[source] std::io::Error);

    #[test]
    fn each_cause_follows_its_error() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(error_chain(&Outer(refused)), "outer: refused");
        let missing = std::io::Error::other("scheme is missing");
        assert_eq!(
            error_chain(&Repeating(missing)),
            "transport error: scheme is missing"
        );
        assert_eq!(
            error_chain(&std::fmt::Error),
            "an error occurred when formatting an argument"
        );
    }
}
