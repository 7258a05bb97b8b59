//! The web page served at `/`: chat about images and text-to-image, streamed from this
//! server's own OpenAI-compatible API.
//!
//! The files in `crates/janus-server/web/` are compiled into the binary, so the page needs
//! nothing beside it at run time, and it loads nothing from anywhere but its own origin (no
//! CDN, fonts or analytics; the browser test in `tests/e2e/browser.mjs` checks the network
//! log).

/// One embedded file: the URL paths it answers and its media type.
struct Asset {
    paths: &'static [&'static str],
    mime: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        paths: &["", "index.html"],
        mime: "text/html; charset=utf-8",
        body: include_bytes!("../web/index.html"),
    },
    Asset {
        paths: &["app.js"],
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/app.js"),
    },
    Asset {
        paths: &["style.css"],
        mime: "text/css; charset=utf-8",
        body: include_bytes!("../web/style.css"),
    },
];

/// The embedded file for a URL path (`/`, `/index.html`, `/app.js`, `/style.css`; the
/// leading slash is optional) as its media type and bytes, or `None` for any other path.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    let name = path.strip_prefix('/').unwrap_or(path);
    ASSETS
        .iter()
        .find(|a| a.paths.contains(&name))
        .map(|a| (a.mime, a.body))
}

#[cfg(test)]
mod tests {
    use super::asset;

    #[test]
    fn serves_the_page_and_its_files() {
        let (mime, body) = asset("/").expect("index");
        assert!(mime.starts_with("text/html"), "{mime}");
        let html = std::str::from_utf8(body).expect("utf-8");
        assert!(html.contains("/app.js") && html.contains("/style.css"));
        assert_eq!(asset("/index.html").map(|a| a.1), Some(body));
        assert!(asset("/app.js")
            .expect("js")
            .0
            .starts_with("text/javascript"));
        assert!(asset("style.css").expect("css").0.starts_with("text/css"));
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for path in [
            "/nope",
            "/web/app.js",
            "/../Cargo.toml",
            "/app.js/",
            "/index.htm",
        ] {
            assert!(asset(path).is_none(), "{path}");
        }
    }

    /// The page must load nothing from another origin: no absolute http(s) or
    /// protocol-relative URLs in any embedded file.
    #[test]
    fn no_external_resources() {
        for path in ["/", "/app.js", "/style.css"] {
            let (_, body) = asset(path).expect("asset");
            let text = std::str::from_utf8(body).expect("utf-8");
            for needle in ["http://", "https://", "src=\"//", "href=\"//", "url(//"] {
                // The one allowed absolute URL is the SVG namespace of the inline icon.
                let hits = text
                    .match_indices(needle)
                    .filter(|(i, _)| !text[*i..].starts_with("http://www.w3.org/2000/svg"))
                    .count();
                assert_eq!(hits, 0, "{path} contains {needle}");
            }
        }
    }
}
