//! Files compiled into the binary and served as they are: Swagger UI for `/docs`, and the
//! kiosk page and dashboard. An appliance often has no Internet access, so no page loads
//! anything from elsewhere.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// What a page may load and run: only the appliance's own files and API. Scripts run from
/// files only (no inline script), so an injected `<script>` does nothing.
const PAGE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                           connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                           frame-ancestors 'none'";

/// A handler that serves `bytes` as `content_type`.
pub fn file(content_type: &'static str, bytes: &'static [u8]) -> impl Fn() -> std::future::Ready<Response> + Clone {
    move || std::future::ready(serve(content_type, bytes))
}

/// A handler that serves an HTML page of our own under [`PAGE_POLICY`].
pub fn page(bytes: &'static [u8]) -> impl Fn() -> std::future::Ready<Response> + Clone {
    move || {
        let mut response = serve("text/html; charset=utf-8", bytes);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_POLICY));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        std::future::ready(response)
    }
}

pub fn serve(content_type: &'static str, bytes: &'static [u8]) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The files change only with the binary; an hour's cache spares a kiosk the download
    // on every visit.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    response
}
