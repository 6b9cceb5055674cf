//! `GET /docs`: Swagger UI over `/openapi.json`, from files compiled into the binary
//! (runtime/assets/swagger-ui, swagger-ui-dist 5.35.0), so it needs no CDN and works on an
//! appliance without Internet access. Every asset is served from the appliance itself.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

macro_rules! asset {
    ($file:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/swagger-ui/", $file))
    };
}

/// The route of each asset besides the page itself, with its content type and bytes.
pub const ASSETS: [(&str, &str, &[u8]); 3] = [
    ("/docs/swagger-ui.css", "text/css; charset=utf-8", asset!("swagger-ui.css")),
    ("/docs/swagger-ui-bundle.js", "text/javascript; charset=utf-8", asset!("swagger-ui-bundle.js")),
    ("/docs/swagger-initializer.js", "text/javascript; charset=utf-8", asset!("swagger-initializer.js")),
];

/// The page: it loads the assets above by absolute path.
pub async fn page() -> Response {
    serve("text/html; charset=utf-8", asset!("index.html"))
}

/// A handler that serves `bytes` as `content_type`.
pub fn asset(content_type: &'static str, bytes: &'static [u8]) -> impl Fn() -> std::future::Ready<Response> + Clone {
    move || std::future::ready(serve(content_type, bytes))
}

fn serve(content_type: &'static str, bytes: &'static [u8]) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change only with the binary; an hour's cache spares a kiosk 1.9 MB per visit.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    response
}
