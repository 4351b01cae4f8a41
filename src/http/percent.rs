//! Percent-decoding of path segments and query strings.
//!
//! A MAC in a URL often arrives encoded (`CE%3A96%3AC2%3A78%3A27%3AFC`),
//! and a query value may use `+` for a space. Decoding borrows when there
//! is nothing to decode, which is the common case.

use std::borrow::Cow;

/// The text had a `%` not followed by two hex digits, or decoded to bytes
/// that are not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadEncoding;

/// Decodes `%XX` escapes (a path segment: `+` stays a plus).
pub fn decode(text: &str) -> Result<Cow<'_, str>, BadEncoding> {
    decode_with(text, false)
}

/// Decodes a query component: `%XX` escapes and `+` as a space.
pub fn decode_query(text: &str) -> Result<Cow<'_, str>, BadEncoding> {
    decode_with(text, true)
}

fn decode_with(text: &str, plus_is_space: bool) -> Result<Cow<'_, str>, BadEncoding> {
    let bytes = text.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || (plus_is_space && b == b'+')) {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|&b| (b as char).to_digit(16)).ok_or(BadEncoding)?;
                let lo = bytes.get(i + 2).and_then(|&b| (b as char).to_digit(16)).ok_or(BadEncoding)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map(Cow::Owned).map_err(|_| BadEncoding)
}

/// Iterates over the `key=value` pairs of a query string, decoded. A pair
/// that fails to decode is yielded as an error.
pub fn query_pairs(query: &str) -> impl Iterator<Item = Result<(Cow<'_, str>, Cow<'_, str>), BadEncoding>> {
    query.split('&').filter(|pair| !pair.is_empty()).map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        Ok((decode_query(key)?, decode_query(value)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes() {
        assert_eq!(decode("CE%3A96%3ac2%3A78%3A27%3AFC").unwrap(), "CE:96:c2:78:27:FC");
        assert_eq!(decode("a+b%20c").unwrap(), "a+b c");
        assert_eq!(decode_query("a+b%20c").unwrap(), "a b c");
        assert!(matches!(decode("plain").unwrap(), Cow::Borrowed("plain")));
    }

    #[test]
    fn rejects_bad_escapes() {
        for bad in ["%", "%4", "%zz", "abc%G0", "%ff"] {
            assert_eq!(decode(bad), Err(BadEncoding), "{bad:?}");
        }
    }

    #[test]
    fn splits_query_pairs() {
        let pairs: Vec<_> = query_pairs("limit=10&&mac=aa%3Abb&flag&x=a+b").map(Result::unwrap).collect();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
        assert_eq!(pairs, [("limit", "10"), ("mac", "aa:bb"), ("flag", ""), ("x", "a b")]);
        assert!(query_pairs("a=%zz").next().unwrap().is_err());
    }
}
