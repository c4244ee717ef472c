//! The live dashboard at `GET /`: one HTML page, its script and uPlot (vendored under
//! `origin/assets/uplot/`, MIT, see its LICENSE), compiled into the binary: no build step, no
//! CDN. The page holds no data; it polls `/api/streams` and `/api/edges`, which need the admin
//! token when one is configured (the page asks for it).
//!
//! Pure: [`serve`] maps a request path to a complete response.

use axum::http::{header, HeaderValue, Response};
use bytes::Bytes;

/// The vendored uPlot release (npm `uplot`).
pub const UPLOT_VERSION: &str = "1.6.32";

static HTML: &str = include_str!("../assets/dashboard/index.html");
static JS: &str = include_str!("../assets/dashboard/dashboard.js");
static UPLOT_JS: &str = include_str!("../assets/uplot/uPlot.iife.min.js");
static UPLOT_CSS: &str = include_str!("../assets/uplot/uPlot.min.css");

/// Its own scripts and styles, data from where it was served; uPlot sets inline styles.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; frame-ancestors 'self'";

/// The response for `path` when it is the dashboard or one of its files; `None` otherwise.
pub fn serve(path: &str) -> Option<Response<Bytes>> {
    const LONG: &str = "public, max-age=31536000, immutable";
    let (body, kind, cache) = match path {
        "/" => (HTML, "text/html; charset=utf-8", "no-cache"),
        "/dashboard/dashboard.js" => (JS, "text/javascript", "no-cache"),
        "/dashboard/uplot-1.6.32.min.js" => (UPLOT_JS, "text/javascript", LONG),
        "/dashboard/uplot-1.6.32.min.css" => (UPLOT_CSS, "text/css", LONG),
        _ => return None,
    };
    let mut r = media::page::file(body.as_bytes(), kind, cache);
    if path == "/" {
        r.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_the_files_that_are_served() {
        let page = serve("/").unwrap();
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let html = String::from_utf8(page.body().to_vec()).unwrap();
        for src in html.split(['"']).filter(|s| s.starts_with("/dashboard/")) {
            let r = serve(src).unwrap_or_else(|| panic!("{src} is not served"));
            assert!(r.body().len() > 1000, "{src}");
        }
        assert!(html.contains(&format!("uplot-{UPLOT_VERSION}.min.js")));
        assert!(serve("/dashboard/other.js").is_none());
        assert!(serve("/index.html").is_none());
    }
}
