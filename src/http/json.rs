//! JSON bodies: every answer of the API is a small flat shape, written by
//! `serde_json` straight into the connection's output buffer.

use serde::Serialize;

/// `{"error":"<message>"}`, the body of every error response.
pub fn error(message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Error<'a> {
        error: &'a str,
    }
    to_vec(&Error { error: message })
}

/// Serializes a value that cannot fail to serialize (plain fields, no maps
/// with non-string keys).
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| unreachable!("plain JSON serializes: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_escape_what_json_requires() {
        assert_eq!(error("not found"), br#"{"error":"not found"}"#);
        assert_eq!(error("a\"b\\c\nd\u{1}é"), "{\"error\":\"a\\\"b\\\\c\\nd\\u0001é\"}".as_bytes());
    }
}
