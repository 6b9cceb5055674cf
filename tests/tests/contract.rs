//! The published contract against the real binary with the example bundles: /openapi.json
//! validates as OpenAPI, each bundle's components say what /v1/bundles says (fields, types,
//! bounds, vocabularies, required fields), /docs loads only from the appliance, and
//! schemathesis (every check and phase, fixed seed) finds nothing.

use std::path::Path;

use forecourt_testkit::{
    Fuzzing, Server, add_token, browser_script, example_bundles, schemathesis, temp_dir, validate_openapi,
};
use serde_json::{Value, json};

/// A server with the example bundles and its data in `data`, and an admin token made before
/// it starts (so that the document's security requirements are enforced, as on a deployed
/// appliance).
fn server_with_admin(data: &Path) -> (Server, String) {
    let token = add_token(data, "admin", "contract", &[]);
    (Server::builder(&example_bundles()).data_dir(data).start(), token)
}

fn component<'a>(document: &'a Value, name: &str) -> &'a Value {
    let schema = &document["components"]["schemas"][name];
    assert!(schema.is_object(), "no component {name}");
    schema
}

#[test]
fn the_document_validates_and_carries_each_bundles_schema() {
    let data = temp_dir();
    let (server, token) = server_with_admin(data.path());
    let client = server.client().as_token(Some(&token));
    let document = client.get("/openapi.json").json;
    if let Err(report) = validate_openapi(&document) {
        panic!("/openapi.json is not valid OpenAPI:\n{report}");
    }
    assert!(document["openapi"].as_str().is_some_and(|version| version.starts_with("3.1")), "{}", document["openapi"]);

    let bundles = client.get("/v1/bundles").json;
    let bundles = bundles["bundles"].as_array().expect("a bundles array");
    assert_eq!(bundles.len(), 3);
    for bundle in bundles {
        let name = bundle["name"].as_str().unwrap();
        let base: String = name.split('-').map(|part| part[..1].to_uppercase() + &part[1..]).collect();
        let request = component(&document, &format!("{base}Request"));
        assert_eq!(request["additionalProperties"], false, "{name}: the plugin refuses other fields");
        let inputs = bundle["inputs"].as_array().unwrap();
        let required: Vec<&Value> = inputs.iter().filter(|f| f["required"] == true).map(|f| &f["name"]).collect();
        assert_eq!(request["required"].as_array().unwrap().iter().collect::<Vec<_>>(), required, "{name}");
        assert_eq!(request["properties"].as_object().unwrap().len(), inputs.len(), "{name}");
        for field in inputs {
            let what = format!("{name}.{}", field["name"].as_str().unwrap());
            let property = &request["properties"][field["name"].as_str().unwrap()];
            let (schema, expected_type) = match field["type"].as_str().unwrap() {
                "number" => (property, "number"),
                "integer" => (property, "integer"),
                "boolean" => (property, "boolean"),
                "category" | "text" => (property, "string"),
                "integer_list" => {
                    assert_eq!(property["type"], "array", "{what}");
                    (&property["items"], "integer")
                }
                other => panic!("{what}: a field type the examples do not use: {other}"),
            };
            assert_eq!(schema["type"], expected_type, "{what}: {property}");
            for bound in ["minimum", "maximum"] {
                if let Some(value) = field[bound].as_f64() {
                    assert_eq!(schema[bound].as_f64(), Some(value), "{what}: {bound} in {property}");
                }
            }
            if let Some(categories) = field.get("categories") {
                assert_eq!(&schema["enum"], categories, "{what}: the vocabulary");
            }
            if let Some(unit) = field.get("unit") {
                assert_eq!(&property["x-unit"], unit, "{what}");
            }
            if let Some(max_items) = field.get("max_items") {
                assert_eq!(&property["maxItems"], max_items, "{what}");
            }
            if let Some(default) = field.get("default") {
                assert_eq!(&property["default"], default, "{what}");
            }
        }
        let paths = &document["paths"];
        let request_ref = json!(format!("#/components/schemas/{base}Request"));
        let single = &paths[format!("/v1/predict/{name}")]["post"];
        assert_eq!(single["requestBody"]["content"]["application/json"]["schema"]["$ref"], request_ref, "{name}");
        let answer = &single["responses"]["200"]["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(answer, &json!(format!("#/components/schemas/{base}Response")), "{name}");
        let outputs = component(&document, &format!("{base}Outputs"))["properties"].as_object().unwrap();
        for output in bundle["outputs"].as_array().unwrap() {
            assert!(outputs.contains_key(output["name"].as_str().unwrap()), "{name}: output {output}");
        }
        let batch = &paths[format!("/v1/predict/{name}/batch")]["post"]["requestBody"]["content"];
        let batch = &batch["application/json"]["schema"]["$ref"];
        assert_eq!(batch, &json!(format!("#/components/schemas/{base}BatchRequest")), "{name}");
    }

    let car = component(&document, "CarPriceRequest");
    assert_eq!(car["properties"]["make"]["enum"][0], "buick", "{car}");
    assert_eq!(car["properties"]["cylinders"]["type"], "integer", "{car}");
    assert_eq!(car["properties"]["mileage"]["maximum"], 1_000_000, "{car}");
    assert_eq!(car["properties"]["forecast_months"]["maxItems"], 12, "the plugin's cap on a list: {car}");

    // Every response of every operation is documented with a description, and the
    // operations that read a body list the body refusals.
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                assert!(response["description"].as_str().is_some_and(|d| !d.is_empty()), "{method} {path} {status}");
            }
            let statuses: Vec<&str> = operation["responses"].as_object().unwrap().keys().map(String::as_str).collect();
            for status in ["429", "503"] {
                assert!(statuses.contains(&status), "{method} {path} lacks {status}: {statuses:?}");
            }
            if path.starts_with("/v1/predict/") {
                for status in ["400", "401", "403", "404", "413", "415", "422", "500"] {
                    assert!(statuses.contains(&status), "{method} {path} lacks {status}: {statuses:?}");
                }
            }
        }
    }
}

#[test]
fn docs_serve_swagger_ui_from_the_appliance_itself() {
    let data = temp_dir();
    let (server, token) = server_with_admin(data.path());
    // The page and its files are open (a browser sends no token when it opens a page); the
    // document they show is not, so the page asks for a token and sends it.
    assert_eq!(server.get("/openapi.json").status, 401, "the document needs a token once tokens exist");
    let client = server.client();
    let page = client.get("/docs");
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(!page.text.contains("http://") && !page.text.contains("https://") && !page.text.contains("//cdn"));
    let assets: Vec<&str> = ["src=\"", "href=\""]
        .iter()
        .flat_map(|attribute| page.text.split(attribute).skip(1))
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert!(page.text.contains("id=\"forecourt-token\"") && page.text.contains("type=\"password\""), "{}", page.text);
    assert_eq!(assets.len(), 3, "the page loads its script, initializer and stylesheet: {}", page.text);
    for asset in assets {
        assert!(asset.starts_with("/docs/") && !asset.starts_with("//"), "{asset} is not the appliance's own");
        let reply = client.get(asset);
        assert_eq!(reply.status, 200, "{asset}");
        assert!(reply.text.len() > 100, "{asset} is served");
    }
    let initializer = client.get("/docs/swagger-initializer.js").text;
    assert!(
        initializer.contains("url: \"/openapi.json\"") && initializer.contains("validatorUrl: null"),
        "{initializer}"
    );
    assert!(
        initializer.contains("sessionStorage") && initializer.contains("request.headers.Authorization = \"Bearer \""),
        "the token typed in goes with every request of the page: {initializer}"
    );
    assert_eq!(server.client().as_token(Some(&token)).get("/openapi.json").status, 200);
}

/// /docs as an operator meets it in a browser: asks for a token, shows the API with it,
/// keeps it across a reload, and "Try it out" gets the appliance's answer.
#[test]
fn docs_in_a_headless_chromium_take_a_token_and_show_the_api() {
    let data = temp_dir();
    let (server, token) = server_with_admin(data.path());
    let base = server.client().url("");
    let ran = browser_script("docs_token.py", &[base.trim_end_matches('/'), &token]);
    let said = format!("{}{}", String::from_utf8_lossy(&ran.stdout), String::from_utf8_lossy(&ran.stderr));
    assert!(ran.status.success(), "the browser did not get through /docs:\n{said}");
    assert!(said.lines().any(|line| line == "ok"), "{said}");
}

/// Schemathesis with every check and every phase (the examples phase finds none here) on
/// every operation, each bundle's included. Its waivers are listed in tests/contract/.
#[test]
fn schemathesis_finds_nothing() {
    let data = temp_dir();
    let (server, token) = server_with_admin(data.path());
    // One worker: reproducible, and Python's compiler has been seen to fail under two.
    // 150 cases per operation take about a minute on 2 cores.
    let run = schemathesis(&server.client(), &token, Fuzzing { seed: 42, max_examples: 150, workers: 1 });
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "schemathesis found something:\n{report}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(report.contains("Tested: 2"), "it tested the operations: {report}");
}
