//! The pages people look at, from runtime/assets/web compiled into the binary: the kiosk's
//! valuation form at `/` and the live dashboard at `/dashboard`. The pages themselves hold
//! no data (they are open); what they show comes from the API with the token the user
//! gives them, so the API's roles guard the data, not the pages.
//!
//! The charts are uPlot (runtime/assets/web/vendor/uplot, fetched from npm with a pinned
//! sha256 by `make vendor`, MIT).

macro_rules! asset {
    ($file:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/web/", $file))
    };
}

pub const KIOSK: &[u8] = asset!("kiosk.html");
pub const DASHBOARD: &[u8] = asset!("dashboard.html");

/// The pages' scripts, styles and libraries: route, content type, bytes.
pub const ASSETS: [(&str, &str, &[u8]); 7] = [
    ("/ui/forecourt.css", "text/css; charset=utf-8", asset!("forecourt.css")),
    ("/ui/api.js", "text/javascript; charset=utf-8", asset!("api.js")),
    ("/ui/kiosk.js", "text/javascript; charset=utf-8", asset!("kiosk.js")),
    ("/ui/dashboard.js", "text/javascript; charset=utf-8", asset!("dashboard.js")),
    ("/ui/uPlot.min.css", "text/css; charset=utf-8", asset!("vendor/uplot/uPlot.min.css")),
    ("/ui/uPlot.iife.min.js", "text/javascript; charset=utf-8", asset!("vendor/uplot/uPlot.iife.min.js")),
    ("/ui/favicon.svg", "image/svg+xml", asset!("favicon.svg")),
];
