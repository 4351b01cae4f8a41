//! The dashboard: one page for an operator to watch the gateway live,
//! served on the HTTP port at `/` (sans-IO, like the rest of `http`).
//!
//! Its HTML, CSS and JavaScript are files beside this module, built into
//! the binary with `include_bytes!`: no build step, nothing fetched from
//! another host (the page's `Content-Security-Policy` allows its own
//! origin only). The page is public, like `/health`: it holds no data.
//! Everything it shows comes from the public API (`/stats`, `/devices`,
//! `/events` and the rest) with the API token when one is set, which the
//! page asks for and keeps for the tab.
//!
//! The files change only with the binary, so each carries an `ETag` (a
//! hash of its bytes) and `Cache-Control: no-cache`: a browser asks again
//! on each load and gets a body-less 304 while its copy is current.

use std::sync::LazyLock;

use super::api::{Decision, Headers};
use crate::effect::Answer;

/// One file of the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    /// `/`: the page.
    Page,
    /// `/dashboard/dashboard.js`.
    Script,
    /// `/dashboard/dashboard.css`.
    Style,
    /// `/dashboard/icon.svg`: the tab's icon (so the browser does not ask
    /// for `/favicon.ico`).
    Icon,
}

const ALL: [Asset; 4] = [Asset::Page, Asset::Script, Asset::Style, Asset::Icon];

/// What the page may load and connect to: its own origin, nothing else.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                           connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

impl Asset {
    /// The file under `/dashboard/` called `name`.
    pub fn named(name: &str) -> Option<Asset> {
        match name {
            "dashboard.js" => Some(Asset::Script),
            "dashboard.css" => Some(Asset::Style),
            "icon.svg" => Some(Asset::Icon),
            _ => None,
        }
    }

    /// The file's bytes, as built into the binary.
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Asset::Page => include_bytes!("index.html"),
            Asset::Script => include_bytes!("dashboard.js"),
            Asset::Style => include_bytes!("dashboard.css"),
            Asset::Icon => include_bytes!("icon.svg"),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Asset::Page => "text/html; charset=utf-8",
            Asset::Script => "text/javascript; charset=utf-8",
            Asset::Style => "text/css; charset=utf-8",
            Asset::Icon => "image/svg+xml",
        }
    }

    /// The file's entity tag: a strong one, quoted, from a hash of its bytes.
    pub fn etag(self) -> &'static str {
        static TAGS: LazyLock<[String; ALL.len()]> =
            LazyLock::new(|| ALL.map(|asset| format!("\"{:016x}\"", fnv1a(asset.bytes()))));
        &TAGS[self as usize]
    }
}

/// FNV-1a, 64 bits: enough to tell two versions of a file apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Whether an `If-None-Match` value names `etag` (or is `*`). Weak tags
/// (`W/"…"`) match too: the comparison for `If-None-Match` is the weak one
/// (RFC 9110 13.1.2).
fn matches(if_none_match: &[u8], etag: &str) -> bool {
    if_none_match.split(|&b| b == b',').map(<[u8]>::trim_ascii).any(|tag| {
        let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
        tag == b"*" || tag == etag.as_bytes()
    })
}

/// The answer to `GET` (or `HEAD`) of `asset`: the file, or a 304 when the
/// client's copy is current.
pub fn serve(asset: Asset, if_none_match: Option<&[u8]>) -> Decision {
    let mut headers: Headers =
        vec![("Cache-Control", "no-cache"), ("ETag", asset.etag()), ("X-Content-Type-Options", "nosniff")];
    if asset == Asset::Page {
        headers.push(("Content-Security-Policy", PAGE_POLICY));
        // The token travels in URLs where headers cannot be set: keep those
        // URLs out of `Referer`.
        headers.push(("Referrer-Policy", "no-referrer"));
    }
    let current = if_none_match.is_some_and(|value| matches(value, asset.etag()));
    let answer = Answer {
        status: if current { 304 } else { 200 },
        content_type: asset.content_type(),
        body: if current { Vec::new() } else { asset.bytes().to_vec() },
    };
    Decision::Respond(answer, headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(decision: Decision) -> (Answer, Headers) {
        match decision {
            Decision::Respond(answer, headers) => (answer, headers),
            Decision::Ask(..) => panic!("the dashboard's files are answered at once"),
        }
    }

    #[test]
    fn each_file_with_its_type_and_tag() {
        for asset in ALL {
            let (answer, headers) = answer(serve(asset, None));
            assert_eq!((answer.status, answer.content_type), (200, asset.content_type()));
            assert_eq!(answer.body, asset.bytes());
            assert!(headers.contains(&("ETag", asset.etag())), "{headers:?}");
            assert!(headers.contains(&("Cache-Control", "no-cache")), "{headers:?}");
            assert_eq!(asset.etag().len(), 18);
        }
        let tags: std::collections::HashSet<_> = ALL.iter().map(|a| a.etag()).collect();
        assert_eq!(tags.len(), ALL.len(), "each file has its own tag");
        let (_, page) = answer(serve(Asset::Page, None));
        assert!(page.contains(&("Content-Security-Policy", PAGE_POLICY)), "{page:?}");
    }

    #[test]
    fn a_current_copy_gets_304() {
        let tag = Asset::Script.etag();
        for value in [tag.to_string(), format!("W/{tag}"), format!("\"x\", {tag}"), "*".to_string()] {
            let (answer, _) = answer(serve(Asset::Script, Some(value.as_bytes())));
            assert_eq!((answer.status, answer.body.len()), (304, 0), "{value}");
        }
        let (answer, _) = answer(serve(Asset::Script, Some(b"\"0000000000000000\"")));
        assert_eq!(answer.status, 200);
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        // Every src/href in the page is a path on this origin, and the
        // script only talks to paths on it.
        let page = std::str::from_utf8(Asset::Page.bytes()).unwrap();
        for attr in ["src=\"", "href=\""] {
            for part in page.split(attr).skip(1) {
                assert!(part.starts_with('/') || part.starts_with('#'), "{attr}{}", &part[..part.len().min(40)]);
            }
        }
        for asset in ALL {
            let text = std::str::from_utf8(asset.bytes()).unwrap();
            let outside = text.matches("http://").chain(text.matches("https://")).count();
            // The SVG's namespace is the one URL allowed: it is a name, not a fetch.
            let allowed = text.matches("http://www.w3.org/2000/svg").count();
            assert_eq!(outside, allowed, "{asset:?} names another host");
        }
    }
}
