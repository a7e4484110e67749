//! The admin page at `/admin/ui/`: three static files compiled into the
//! binary (no CDN, no build step).
//!
//! The page is public; every call it makes to the admin API carries the
//! password in `X-Admin-Password`. It renders data only as text (never as
//! HTML) and uses no inline script or style, so it runs under [`CSP`].

/// The Content-Security-Policy the gateway sends with every asset.
pub const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const INDEX_HTML: &[u8] = include_bytes!("index.html");
const APP_JS: &[u8] = include_bytes!("app.js");
const APP_CSS: &[u8] = include_bytes!("app.css");

/// The asset at `path` (the part of the URL after `/admin/ui/`; `""` is the
/// page itself) as `(content type, bytes)`, or `None` if there is none.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    match path {
        "" | "index.html" => Some(("text/html; charset=utf-8", INDEX_HTML)),
        "app.js" => Some(("text/javascript; charset=utf-8", APP_JS)),
        "app.css" => Some(("text/css; charset=utf-8", APP_CSS)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(path: &str) -> &'static str {
        let (_, bytes) = asset(path).unwrap_or_else(|| panic!("no asset {path:?}"));
        std::str::from_utf8(bytes).expect("assets are UTF-8")
    }

    #[test]
    fn empty_path_and_index_html_are_the_page() {
        let (ty, page) = asset("").expect("page");
        assert_eq!(ty, "text/html; charset=utf-8");
        assert_eq!(asset("index.html"), Some((ty, page)));
        assert!(text("").starts_with("<!doctype html>"));
    }

    #[test]
    fn script_and_stylesheet_have_their_content_types() {
        assert_eq!(
            asset("app.js").map(|a| a.0),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(
            asset("app.css").map(|a| a.0),
            Some("text/css; charset=utf-8")
        );
    }

    #[test]
    fn unknown_and_traversal_paths_are_none() {
        for path in [
            "nope.js",
            "../app.js",
            "/app.js",
            "app.js/",
            "APP.JS",
            "mod.rs",
            "app.js?x=1",
            "./app.js",
        ] {
            assert!(asset(path).is_none(), "{path:?} should not be an asset");
        }
    }

    #[test]
    fn page_references_only_its_own_assets() {
        let page = text("");
        assert!(page.contains(r#"<script src="app.js" defer></script>"#));
        assert!(page.contains(r#"<link rel="stylesheet" href="app.css">"#));
        for attr in ["src=\"", "href=\""] {
            for url in page.split(attr).skip(1) {
                let url = url.split('"').next().unwrap_or("");
                assert!(
                    !url.contains("//") && !url.starts_with('/'),
                    "page loads {url:?}; only its own relative assets may be loaded"
                );
            }
        }
    }

    /// The CSP forbids inline code; an inline handler or style would only
    /// fail at run time in the browser, so catch it here.
    #[test]
    fn page_has_no_inline_script_style_or_handlers() {
        let page = text("").to_ascii_lowercase();
        assert_eq!(
            page.matches("<script").count(),
            1,
            "only the external script"
        );
        assert!(!page.contains("<style"), "no <style> element");
        assert!(!page.contains("style=\""), "no style attributes");
        assert!(!page.contains("javascript:"), "no javascript: URLs");
        for word in page.split(|c: char| c.is_whitespace() || c == '<') {
            if let Some(rest) = word.strip_prefix("on") {
                assert!(!rest.contains("=\""), "inline handler attribute: {word}");
            }
        }
    }

    /// Data reaches the DOM only as text: no HTML-parsing sinks in the script.
    #[test]
    fn script_uses_no_html_sinks() {
        let js = text("app.js");
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!js.contains(sink), "app.js uses {sink}");
        }
    }

    #[test]
    fn csp_forbids_inline_code_and_framing() {
        assert!(CSP.contains("script-src 'self';"));
        assert!(CSP.contains("style-src 'self';"));
        assert!(CSP.contains("frame-ancestors 'none'"));
        assert!(!CSP.contains("unsafe"));
    }
}
