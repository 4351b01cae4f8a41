//! Writing JSON by hand: the API's responses are a few flat shapes, so a
//! string escaper and `write!` are all it takes.

use std::fmt::Write as _;

/// Appends `text` as a JSON string literal, quotes included.
pub fn string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `{"error":"<message>"}`, the body of every error response.
pub fn error(message: &str) -> String {
    let mut out = String::from("{\"error\":");
    string(&mut out, message);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_json_requires() {
        let mut out = String::new();
        string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn error_body() {
        assert_eq!(error("not found"), r#"{"error":"not found"}"#);
    }
}
