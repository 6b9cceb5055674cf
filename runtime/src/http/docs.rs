//! `GET /docs`: Swagger UI over `/openapi.json`, from files compiled into the binary
//! (runtime/assets/swagger-ui, swagger-ui-dist 5.35.0), so it needs no CDN and works on an
//! appliance without Internet access. Every asset is served from the appliance itself.

use axum::response::Response;

use super::static_files;

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
    static_files::serve("text/html; charset=utf-8", asset!("index.html"))
}
