//! The built-in player page, served by the origin and by every edge:
//!
//! - `GET /live/{name}/`: the page (hls.js in low-latency mode with live catch-up and CMCD,
//!   showing the latency and rendition; native HLS on Safari). It plays `index.m3u8` relative to
//!   itself, so it works behind any proxy that forwards `/live/`, and it names no stream itself.
//! - `GET /live/{name}`: a redirect to the page (the trailing slash matters for relative URLs).
//! - `GET /live/.player/…`: its script and hls.js, vendored (`media/assets/hls.js/`, Apache-2.0,
//!   see its LICENSE) and compiled into the binary: no CDN, no build step. `.` cannot start a
//!   stream name, so these never shadow a stream.
//!
//! Pure: [`serve`] maps a request path to a complete response.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// The vendored hls.js release (npm `hls.js`, the full build: the light one lacks CMCD).
pub const HLS_JS_VERSION: &str = "1.7.4";
const HLS_JS_PATH: &str = "/live/.player/hls-1.7.4.min.js";
const PAGE_JS_PATH: &str = "/live/.player/page.js";

static HLS_JS: &[u8] = include_bytes!("../assets/hls.js/hls.min.js");
static PAGE_JS: &str = include_str!("../assets/page.js");
static PAGE_HTML: &str = include_str!("../assets/player.html");

/// What the page may load: its own scripts, media and playlists from where it was served, and
/// the worker hls.js starts from a blob. Embedding it in a frame elsewhere is allowed.
const CSP: &str = "default-src 'self'; script-src 'self'; worker-src 'self' blob:; \
                   media-src 'self' blob:; connect-src 'self'; style-src 'unsafe-inline'; \
                   img-src 'self' data:";

/// The response for `path` when it is the page, its redirect or one of its scripts; `None` for
/// every other path (a playlist, a part, an unknown file).
pub fn serve(path: &str) -> Option<Response<Bytes>> {
    let rest = path.strip_prefix("/live/")?;
    match rest.split_once('/') {
        _ if path == HLS_JS_PATH => Some(file(
            HLS_JS,
            "text/javascript",
            "public, max-age=31536000, immutable",
        )),
        _ if path == PAGE_JS_PATH => Some(file(
            PAGE_JS.as_bytes(),
            "text/javascript",
            "public, max-age=60",
        )),
        Some((name, "")) if crate::StreamName::new(name).is_some() => {
            let mut r = file(PAGE_HTML.as_bytes(), "text/html; charset=utf-8", "no-cache");
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            );
            Some(r)
        }
        None if crate::StreamName::new(rest).is_some() => {
            let mut r = Response::new(Bytes::new());
            *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
            // Relative, so it stays right behind a proxy that mounts us under a prefix.
            let to = format!("{rest}/");
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_str(&to).ok()?);
            Some(r)
        }
        _ => None,
    }
}

/// A static file response: its type, caching and `nosniff` (also the dashboard's files).
pub fn file(
    body: &'static [u8],
    content_type: &'static str,
    cache: &'static str,
) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from_static(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_its_redirect_and_its_scripts_and_nothing_else() {
        let page = serve("/live/cam-1/").unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let html = std::str::from_utf8(page.body()).unwrap();
        // The page loads exactly the scripts served here, relative to itself.
        assert!(html.contains("src=\"../.player/hls-1.7.4.min.js\""));
        assert!(html.contains("src=\"../.player/page.js\""));
        assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));

        let redirect = serve("/live/cam-1").unwrap();
        assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(redirect.headers()[header::LOCATION], "cam-1/");

        let js = serve(HLS_JS_PATH).unwrap();
        assert!(js.body().len() > 100_000);
        assert!(std::str::from_utf8(js.body())
            .unwrap()
            .contains(HLS_JS_VERSION));
        let page_js = std::str::from_utf8(serve(PAGE_JS_PATH).unwrap().body().as_ref())
            .unwrap()
            .to_owned();
        assert!(page_js.contains("lowLatencyMode: true"));
        assert!(page_js.contains("MAX_RATE = 1.5"));

        for other in [
            "/live/cam-1/index.m3u8",
            "/live/cam-1/source/index.m3u8",
            "/live/cam-1/source/",
            "/live/.player/other.js",
            "/live/.player/",
            "/live/bad%20name/",
            "/live/a.b/",
            "/live/",
            "/live",
            "/",
        ] {
            assert!(serve(other).is_none(), "{other}");
        }
    }
}
