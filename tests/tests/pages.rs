//! The pages people look at, in a real headless Chromium against the real binary: the kiosk
//! valuation page at `/` for every example bundle, and the live dashboard at `/dashboard`
//! under load while a new bundle version is pushed through a real Mosquitto. Each page is
//! checked with axe-core and for console errors, and photographed into target/screenshots.

use std::path::Path;

use forecourt_testkit::{
    Broker, FleetKit, Load, Packaging, Server, add_token, all_bundles, axe_core, browser_script, forecourt_binary,
    golden, screenshots_dir, temp_dir,
};
use serde_json::{Value, json};

/// Runs a browser script, failing the test with everything it said when it fails.
fn run_browser(script: &str, args: &[&str]) -> String {
    let ran = browser_script(script, args);
    let said = format!("{}{}", String::from_utf8_lossy(&ran.stdout), String::from_utf8_lossy(&ran.stderr));
    assert!(ran.status.success(), "{script} failed:\n{said}");
    said
}

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

#[test]
fn the_kiosk_page_values_every_example_bundle_and_shows_field_errors_beside_their_fields() {
    let server = Server::start(&all_bundles());
    let client = server.client();
    let cases: Vec<Value> = ["car-price", "housing", "iris"]
        .iter()
        .map(|bundle| json!({"bundle": bundle, "request": golden(bundle)[0].request}))
        .collect();
    let axe = axe_core();
    let screenshots = screenshots_dir();
    let base = client.url("");
    let said = run_browser(
        "kiosk.py",
        &[
            base.trim_end_matches('/'),
            &Value::from(cases.clone()).to_string(),
            &axe.to_string_lossy(),
            &screenshots.to_string_lossy(),
        ],
    );

    let results: Vec<Value> = said
        .lines()
        .filter_map(|line| line.strip_prefix("result: "))
        .map(|line| serde_json::from_str(line).expect("results are JSON"))
        .collect();
    assert_eq!(results.len(), 3, "one result per bundle:\n{said}");
    for result in &results {
        let bundle = result["bundle"].as_str().unwrap();
        // The page's prediction is the stored one its text names, made from exactly the
        // values typed, and answers what the API answers for them.
        let meta = result["meta"].as_str().unwrap();
        let id = meta.rsplit(' ').next().unwrap();
        let stored = client.get(&format!("/v1/predictions/{id}"));
        assert_eq!(stored.status, 200, "{bundle}: the page's prediction {id} is stored: {stored:?}");
        assert_eq!(stored.json["input"], result["request"], "{bundle}: the form sent the values typed");
        let direct = client.post_json(&format!("/v1/predict/{bundle}"), &result["request"]);
        assert_eq!(direct.status, 200, "{direct:?}");
        assert_eq!(stored.json["outputs"], direct.json["outputs"], "{bundle}: the page's answer is the API's");

        let shown = result["primary"].as_str().unwrap();
        match bundle {
            "iris" => assert_eq!(shown, direct.json["outputs"]["class"], "iris shows the class"),
            _ => {
                let price = direct.json["outputs"]["price"].as_f64().unwrap();
                assert_eq!(digits(shown), format!("{}", price.round() as i64), "{bundle} shows {shown:?} for {price}");
                assert!(shown.starts_with('$'), "{bundle}: a price in USD reads as dollars: {shown:?}");
            }
        }
    }
    let car = &results[0];
    let forecast = direct_forecast(&client, &car["request"]);
    let rows: Vec<&str> = car["forecast_rows"].as_array().unwrap().iter().map(|row| row.as_str().unwrap()).collect();
    assert_eq!(rows.len(), 4, "today and three horizons: {rows:?}");
    for (row, (months, price)) in rows[1..].iter().zip(&forecast) {
        assert!(row.starts_with(&months.to_string()), "{row} is the {months}-month row");
        assert_eq!(digits(row.split_once(' ').unwrap().1), format!("{}", price.round() as i64), "{row}");
    }

    let errors: Vec<&str> = said.lines().filter_map(|line| line.strip_prefix("field error: ")).collect();
    assert!(errors[0].contains("mileage"), "the mileage error names its rule: {errors:?}");
    assert!(errors[1].contains("make"), "the make error names the field: {errors:?}");
    assert!(said.contains("ok: axe-core finds no violation"), "{said}");
    assert_png(&screenshots.join("kiosk.png"));
}

/// car-price's forecast for `request` from the API: (months, price) per horizon.
fn direct_forecast(client: &forecourt_testkit::Client, request: &Value) -> Vec<(i64, f64)> {
    let reply = client.post_json("/v1/predict/car-price", request);
    reply.json["outputs"]["forecast"]
        .as_array()
        .expect("a forecast was asked for")
        .iter()
        .map(|point| (point["months"].as_i64().unwrap(), point["price"].as_f64().unwrap()))
        .collect()
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000, "{} is a real screenshot", path.display());
}

#[test]
fn the_dashboard_moves_under_load_and_shows_a_pushed_version_with_tokens_on() {
    let broker = Broker::start();
    let kit = FleetKit::new();
    let data = temp_dir();
    let viewer = add_token(data.path(), "viewer", "dashboard", &[]);
    let kiosk = add_token(data.path(), "kiosk", "kiosk-page", &[]);
    let server = kit.appliance(&broker, "kiosk-9", &[]).data_dir(data.path()).start();
    let fcb = kit.package("1.1.0", Packaging::Signed);
    let mut push = vec![forecourt_binary().to_string_lossy().into_owned()];
    push.extend(kit.push_args(&broker, &fcb, "kiosk-9", "dashboard-push"));

    let load = Load::start(server.client().as_token(Some(&kiosk)));
    let axe = axe_core();
    let screenshots = screenshots_dir();
    let base = server.client().url("");
    let said = run_browser(
        "dashboard.py",
        &[
            base.trim_end_matches('/'),
            &viewer,
            &kiosk,
            &Value::from(push).to_string(),
            "1.1.0",
            &axe.to_string_lossy(),
            &screenshots.to_string_lossy(),
        ],
    );
    let report = load.finish();
    assert!(report.failures.is_empty(), "no request failed under the dashboard and the push: {:?}", report.failures);
    assert!(report.ok > 0);
    assert_eq!(report.versions.last().map(|(_, version)| version.as_str()), Some("1.1.0"), "{:?}", report.versions);
    assert!(said.contains("ok: axe-core finds no violation on the dashboard"), "{said}");
    assert_png(&screenshots.join("dashboard.png"));
}

#[test]
fn the_pages_and_their_files_are_served_from_the_binary_with_a_strict_policy() {
    let data = temp_dir();
    let viewer = add_token(data.path(), "viewer", "pages", &[]);
    let kiosk = add_token(data.path(), "kiosk", "pages-kiosk", &[]);
    let server = Server::builder(&all_bundles()).data_dir(data.path()).start();
    let client = server.client();
    for (path, content_type) in [("/", "text/html"), ("/dashboard", "text/html")] {
        let page = client.get(path);
        assert_eq!(page.status, 200, "{path} needs no token: it holds no data");
        assert!(page.header("content-type").unwrap().starts_with(content_type));
        let policy = page.header("content-security-policy").expect("a content security policy");
        assert!(policy.contains("script-src 'self'") && policy.contains("connect-src 'self'"), "{policy}");
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
        let text = &page.text;
        for asset in ["/ui/forecourt.css", "/ui/api.js", "/ui/uPlot.iife.min.js"] {
            assert!(text.contains(asset), "{path} loads {asset}");
            let served = client.get(asset);
            assert_eq!(served.status, 200, "{asset}");
            assert_eq!(served.header("x-content-type-options"), Some("nosniff"));
        }
        assert!(!text.contains("http://") && !text.contains("https://"), "{path} loads nothing from elsewhere");
    }
    // The data behind the dashboard needs a viewer's token; a kiosk's is not enough.
    assert_eq!(client.get("/v1/overview").status, 401);
    assert_eq!(client.as_token(Some(&kiosk)).get("/v1/overview").status, 403);
    let viewing = client.as_token(Some(&viewer));
    let reply = viewing.get("/v1/overview?step=1");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["traffic"]["step_seconds"], 1);
    let points = reply.json["traffic"]["points"].as_array().expect("traffic points");
    assert!(points.len() <= 300, "five minutes of one-second points at most: {}", points.len());
    let names: Vec<&str> =
        reply.json["bundles"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"car-price") && names.contains(&"iris"), "{names:?}");
    let bad = viewing.get("/v1/overview?step=0");
    assert_eq!((bad.status, bad.json["error"]["field"].as_str()), (422, Some("step")), "{bad:?}");

    // A prediction shows in the overview: in the window's count and as the newest stored.
    let predicted = client.as_token(Some(&kiosk)).post_json("/v1/predict/car-price", &forecourt_testkit::car());
    assert_eq!(predicted.status, 200, "{predicted:?}");
    let reply = viewing.get("/v1/overview");
    assert_eq!(reply.json["recent_predictions"][0]["id"], predicted.json["prediction_id"], "{reply:?}");
    assert!(reply.json["recent_predictions"][0].get("input").is_none(), "the overview shows no customer input");
    assert!(reply.json["store"]["predictions"].as_u64().unwrap() >= 1);
}
