//! `/openapi.json`, derived from the handlers' annotations and the router's table so it
//! cannot drift from them, with each loaded bundle's schema ([`super::bundle_schema`]).

use axum::Json;
use axum::extract::State;
use utoipa::OpenApi;

use super::AppState;
use crate::auth::Permission;

#[derive(OpenApi)]
#[openapi(
    info(title = "Forecourt", description = "Edge inference appliance: predictions through a sandboxed WebAssembly plugin and an ONNX model. The Open Inference Protocol v2 is also served under /v2 (see the KServe specification)."),
    paths(
        super::overview::overview,
        super::predict::predict,
        super::predict::predict_batch,
        super::bundles::bundles,
        super::bundles::bundle,
        super::records::prediction,
        super::quality::record_outcome,
        super::quality::bundle_quality,
        super::quality::bundle_drift,
        super::records::audit,
        super::records::audit_verify,
        super::health::health,
        super::health::health_detailed,
        super::health::metrics,
        super::v2::server_metadata,
        super::v2::live,
        super::v2::ready,
        super::v2::model_metadata,
        super::v2::model_version_metadata,
        super::v2::model_ready,
        super::v2::model_version_ready,
        super::v2::infer,
        super::v2::infer_version,
    ),
    components(schemas(
        super::v2::V2ErrorBody,
        crate::explain::Explanation,
        crate::explain::Contribution,
        crate::explain::ForecastChange
    )),
    tags(
        (name = "predictions", description = "Predictions and their stored records"),
        (name = "bundles", description = "Loaded model bundles"),
        (name = "audit", description = "The tamper-evident audit trail"),
        (name = "quality", description = "Outcomes of predictions, and the live accuracy they give each bundle version"),
        (name = "operations", description = "Health and metrics"),
        (name = "inference protocol v2", description = "The Open Inference Protocol (KServe v2): raw tensors to a bundle's model, no plugin; errors are {\"error\": \"...\"}"),
    )
)]
pub struct ApiDoc;

/// The document as of now: built at each request, so it shows the bundles loaded now.
pub async fn document(State(state): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    let mut doc = with_security(ApiDoc::openapi());
    // After the security pass: the bundles' paths are copies of the generic predict
    // operations, which it has already given their roles and refusals.
    super::bundle_schema::add_bundles(&mut doc, &state.pipeline.registry().summaries(), state.config.max_batch);
    Json(doc)
}

const SCHEME: &str = "bearer";

/// Declares the bearer scheme, and on each operation the roles its route needs (from the
/// router's own table, so the document cannot promise another rule than the one enforced),
/// with the 401 and 403 answers it can give; and on every operation the answers of the
/// layers around every route: 429 (load shedding, a token's rate) and 503 (timeout).
fn with_security(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

    let mut bearer = Http::new(HttpAuthScheme::Bearer);
    bearer.bearer_format = Some("fct_<id>_<secret>, from `forecourt token add`".to_owned());
    bearer.description = Some(
        "An API token. Roles: kiosk (predict, read its own predictions), viewer (read predictions, bundles, \
         audit, detailed health), admin (everything), metrics (/metrics). Required unless the appliance \
         has no token and serves loopback only (or auth.allow_anonymous)."
            .to_owned(),
    );
    doc.components
        .get_or_insert_with(Default::default)
        .security_schemes
        .insert(SCHEME.to_owned(), SecurityScheme::Http(bearer).into());
    let error = |description: &str, body: &str| -> RefOr<utoipa::openapi::Response> {
        ResponseBuilder::new()
            .description(description)
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name(body))).build())
            .build()
            .into()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let Some(permission) = super::permission_of(path) else { continue };
        // The inference protocol's refusals keep its own shape (ApiError::into_response_for).
        let refusal_body = if super::error::speaks_protocol_v2(path) { "V2ErrorBody" } else { "ErrorBody" };
        for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
            let responses = &mut operation.responses.responses;
            for (status, description) in [
                ("429", "The token's rate is used up, or the appliance is at capacity (Retry-After)"),
                ("503", "Not answered within server.request_timeout_secs (`timeout`)"),
            ] {
                match responses.get_mut(status) {
                    Some(RefOr::T(response)) => also_error_body(response, description, refusal_body),
                    Some(RefOr::Ref(_)) => {}
                    None => {
                        responses.insert(status.to_owned(), error(description, refusal_body));
                    }
                }
            }
            if permission == Permission::Open {
                operation.security = Some(vec![SecurityRequirement::default()]);
                continue;
            }
            let roles: Vec<&str> = permission.roles().into_iter().map(|role| role.as_str()).collect();
            operation.security = Some(vec![SecurityRequirement::new(SCHEME, roles.clone())]);
            responses.insert(
                "401".to_owned(),
                error("No valid bearer token (missing, malformed, unknown or revoked)", refusal_body),
            );
            responses.insert(
                "403".to_owned(),
                error(
                    &format!("The token's role may not use this route; it needs one of: {}", roles.join(", ")),
                    refusal_body,
                ),
            );
        }
    }
    doc
}

/// A handler's own answer with a status the layers around every route also give (429 from
/// load shedding or a token's rate, 503 from the timeout) in the route's error body `body`:
/// its schema becomes either (when they differ), and its description says both.
fn also_error_body(response: &mut utoipa::openapi::Response, layer: &str, body: &str) {
    use utoipa::openapi::schema::AnyOfBuilder;
    use utoipa::openapi::{Ref, RefOr};

    let error_body = Ref::from_schema_name(body);
    for content in response.content.values_mut() {
        let RefOr::T(content) = content else { continue };
        match &content.schema {
            Some(RefOr::Ref(existing)) if existing == &error_body => {}
            Some(existing) => {
                content.schema =
                    Some(RefOr::T(AnyOfBuilder::new().item(existing.clone()).item(error_body.clone()).build().into()));
            }
            None => content.schema = Some(error_body.clone().into()),
        }
    }
    response.description = format!("{}; or: {layer}", response.description);
}
