//! `GET /` and the files it loads: the browser chat page, its script,
//! stylesheet and icon, embedded in the binary at build time and served with a
//! Content-Security-Policy that lets the page load only these files and open
//! only its own WebSocket (PROTOCOL.md §7).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST,
    X_CONTENT_TYPE_OPTIONS,
};
use hyper::Response;
use protocol::ErrorCode;

use super::response::{error, HttpResponse};

const CHAT_PAGE: &str = include_str!("../../static/index.html");

/// A file the page loads, under the path the page names it by.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

// The script and the styles are files rather than inline blocks so the policy
// can say 'self': no hashes to keep in step with the page, and nothing an
// injected inline block could match.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/chat.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../static/chat.js"),
    },
    Asset {
        path: "/chat.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../static/chat.css"),
    },
    // An SVG under the name browsers ask for: they go by the content type,
    // not the extension, and a few hundred bytes of text beats a binary .ico.
    Asset {
        path: "/favicon.ico",
        content_type: "image/svg+xml",
        body: include_bytes!("../../static/favicon.svg"),
    },
];

/// The page's policy, all but `connect-src` (which depends on the request).
/// Everything is denied unless named: the page runs /chat.js, applies
/// /chat.css and shows /favicon.ico, all from this server; it posts no forms
/// (the compose form is handled in script), sets no base URL and is never
/// framed.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The assets' policy. They are never documents, but one opened on its own
/// (the SVG icon in particular) may then load and run nothing.
const ASSET_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// The chat page, with its policy fitted to the host the browser asked for.
pub fn chat_page(request_headers: &HeaderMap) -> HttpResponse {
    let host = request_headers.get(HOST).and_then(|h| h.to_str().ok());
    respond(
        CHAT_PAGE.as_bytes(),
        "text/html; charset=utf-8",
        page_policy(host),
    )
}

/// Whether `path` names one of the files the page loads.
pub fn is_asset(path: &str) -> bool {
    ASSETS.iter().any(|a| a.path == path)
}

/// One of the files the page loads; 404 for any other path.
pub fn asset(path: &str) -> HttpResponse {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(a) => respond(
            a.body,
            a.content_type,
            HeaderValue::from_static(ASSET_POLICY),
        ),
        None => error(ErrorCode::NotFound, format!("no such path: {path}")),
    }
}

fn respond(body: &'static [u8], content_type: &'static str, policy: HeaderValue) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(body)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidate every time: the page and its script must come from the same
    // build, and a cached old script under a new page could miss its ids.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(CONTENT_SECURITY_POLICY, policy);
    // Without it a browser may guess a type from the bytes; with it, the
    // script and stylesheet are used only under the types given here.
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// The page's full policy for a request that named `host`.
///
/// `connect-src 'self'` covers a WebSocket to the page's own host and port in
/// Chromium, Firefox and Safari 15.4+ (CSP Level 3 lets 'self' match ws: and
/// wss:); `ws://host wss://host` say the same to browsers that match 'self'
/// against http(s) only. The page opens its socket to `location.host`, which is
/// what the browser put in Host; behind a proxy that rewrites Host the extra
/// sources are merely useless and 'self' still applies. A Host that is not a
/// plain name[:port] (IPv6 literals included: a policy cannot name them) is
/// left out rather than escaped, so a request cannot write its own directives.
fn page_policy(host: Option<&str>) -> HeaderValue {
    let own_socket = match host.filter(|h| is_plain_authority(h)) {
        Some(h) => format!(" ws://{h} wss://{h}"),
        None => String::new(),
    };
    let policy = format!("{PAGE_POLICY}; connect-src 'self'{own_socket}");
    // Only checked ASCII went in, so this cannot fail; if it somehow did, a
    // page that can load nothing is the safe way to be wrong.
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
}

/// Whether `authority` is `name[:port]` as a CSP host-source may spell it:
/// dot-separated labels of letters, digits and hyphens, and a numeric port.
fn is_plain_authority(authority: &str) -> bool {
    let (name, port) = match authority.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (authority, None),
    };
    let name_ok = name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port_ok = match port {
        None => true,
        Some(p) => (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()),
    };
    name_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    /// The policy's directives, name to sources, as a browser would split it.
    fn directives(policy: &HeaderValue) -> Vec<(String, Vec<String>)> {
        policy
            .to_str()
            .unwrap()
            .split(';')
            .map(|d| {
                let mut words = d.split_whitespace().map(str::to_owned);
                (words.next().unwrap(), words.collect())
            })
            .collect()
    }

    fn sources<'a>(d: &'a [(String, Vec<String>)], name: &str) -> &'a [String] {
        let found: Vec<_> = d.iter().filter(|(n, _)| n == name).collect();
        assert_eq!(found.len(), 1, "{name} appears once in {d:?}");
        &found[0].1
    }

    fn request_with_host(host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_str(host).unwrap());
        h
    }

    #[test]
    fn page_is_served_with_a_tight_policy_and_nosniff() {
        let r = chat_page(&request_with_host("127.0.0.1:8080"));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(r.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
        let d = directives(&r.headers()[CONTENT_SECURITY_POLICY]);
        let names: Vec<_> = d.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "default-src",
                "script-src",
                "style-src",
                "img-src",
                "base-uri",
                "form-action",
                "frame-ancestors",
                "connect-src"
            ]
        );
        for none in ["default-src", "base-uri", "form-action", "frame-ancestors"] {
            assert_eq!(sources(&d, none), ["'none'"], "{none}");
        }
        for own in ["script-src", "style-src", "img-src"] {
            assert_eq!(sources(&d, own), ["'self'"], "{own}");
        }
        assert_eq!(
            sources(&d, "connect-src"),
            ["'self'", "ws://127.0.0.1:8080", "wss://127.0.0.1:8080"]
        );
    }

    #[test]
    fn connect_src_names_only_a_plain_host() {
        let connect = |headers: &HeaderMap| {
            let r = chat_page(headers);
            sources(
                &directives(&r.headers()[CONTENT_SECURITY_POLICY]),
                "connect-src",
            )
            .to_vec()
        };
        assert_eq!(
            connect(&request_with_host("chat.example.com")),
            ["'self'", "ws://chat.example.com", "wss://chat.example.com"]
        );
        assert_eq!(connect(&HeaderMap::new()), ["'self'"]);
        // Each of these would add a source or a directive, or is a form a
        // policy cannot spell; the page falls back to 'self' alone.
        for hostile in [
            "evil.example; script-src *",
            "a.example *",
            "a.example,b.example",
            "'unsafe-inline'",
            "[::1]:8080",
            "a..example",
            "a.example:",
            "a.example:80:80",
            "a.example:123456",
            "",
        ] {
            assert_eq!(
                connect(&request_with_host(hostile)),
                ["'self'"],
                "{hostile:?}"
            );
        }
    }

    #[test]
    fn assets_are_served_with_their_types_and_nosniff() {
        for (path, ty) in [
            ("/chat.js", "text/javascript; charset=utf-8"),
            ("/chat.css", "text/css; charset=utf-8"),
            ("/favicon.ico", "image/svg+xml"),
        ] {
            assert!(is_asset(path), "{path}");
            let r = asset(path);
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(r.headers()[CONTENT_TYPE], ty, "{path}");
            assert_eq!(r.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            assert_eq!(r.headers()[CONTENT_SECURITY_POLICY], ASSET_POLICY, "{path}");
        }
        assert!(!is_asset("/index.html") && !is_asset("/chat.js.map"));
        assert_eq!(asset("/nope.js").status(), StatusCode::NOT_FOUND);
        let icon = std::str::from_utf8(ASSETS[2].body).unwrap();
        assert!(icon.starts_with("<svg") && !icon.contains("<script") && !icon.contains("style"));
    }

    /// What the policy forbids must not be in the page: it would be blocked,
    /// and the page would break in the browser rather than here.
    #[test]
    fn page_has_no_inline_code_or_style() {
        let page = CHAT_PAGE.to_ascii_lowercase();
        assert!(!page.contains("<style"), "a <style> block");
        assert!(!page.contains(" style="), "a style= attribute");
        assert!(!page.contains("javascript:"), "a javascript: URL");
        for (i, _) in page.match_indices("<script") {
            let tag = &page[i..i + page[i..].find('>').unwrap()];
            assert!(tag.contains(" src=\"/"), "an inline script: {tag}");
        }
        for word in page.split(|c: char| c.is_whitespace() || c == '<') {
            assert!(
                !(word.starts_with("on") && word.contains('=')),
                "an event-handler attribute: {word}"
            );
        }
    }

    /// Every file the page names is one this module serves, from this server.
    #[test]
    fn page_loads_only_served_assets() {
        let mut named = Vec::new();
        for attr in ["src=\"", "href=\""] {
            for (i, _) in CHAT_PAGE.match_indices(attr) {
                let rest = &CHAT_PAGE[i + attr.len()..];
                named.push(&rest[..rest.find('"').unwrap()]);
            }
        }
        named.sort_unstable();
        let mut served: Vec<_> = ASSETS.iter().map(|a| a.path).collect();
        served.sort_unstable();
        assert_eq!(named, served);
    }

    /// The ids and accessible names scripts rely on (PROTOCOL.md §7).
    #[test]
    fn page_keeps_its_contract_names() {
        for id in ["state", "log", "groups", "group", "who"] {
            assert!(CHAT_PAGE.contains(&format!("id=\"{id}\"")), "id {id}");
        }
        for label in [
            ">Token</label>",
            "user id",
            "aria-label=\"to\"",
            "aria-label=\"message\"",
        ] {
            assert!(CHAT_PAGE.contains(label), "label {label}");
        }
        for button in ["Connect", "Sign out", "Join", "Leave", "Send"] {
            assert!(
                CHAT_PAGE.contains(&format!(">{button}</button>")),
                "button {button}"
            );
        }
    }
}
