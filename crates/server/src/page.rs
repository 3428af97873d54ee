//! The web page at `/`: translate, caption and generate in the browser, with attention and the
//! sampler's filters shown. Plain HTML, CSS and JavaScript embedded in the binary: no build
//! step, no CDN, nothing fetched but this server's own API.

use axum::http::header;
use axum::response::IntoResponse;

/// Only this server's own scripts, styles and API; pictures may also be the user's own
/// (object URLs of picked files).
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; \
                   script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'";

fn asset(body: &'static str, content_type: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

pub async fn index() -> impl IntoResponse {
    asset(
        include_str!("../page/index.html"),
        "text/html; charset=utf-8",
    )
}

pub async fn script() -> impl IntoResponse {
    asset(
        include_str!("../page/page.js"),
        "text/javascript; charset=utf-8",
    )
}

pub async fn style() -> impl IntoResponse {
    asset(include_str!("../page/page.css"), "text/css; charset=utf-8")
}
