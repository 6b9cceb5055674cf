//! `/openapi.json`, derived from the handlers' annotations so it cannot drift from them.

use axum::Json;
use utoipa::OpenApi;

use crate::auth::Permission;

#[derive(OpenApi)]
#[openapi(
    info(title = "Forecourt", description = "Edge inference appliance: predictions through a sandboxed WebAssembly plugin and an ONNX model. The Open Inference Protocol v2 is also served under /v2 (see the KServe specification)."),
    paths(
        super::predict::predict,
        super::predict::predict_batch,
        super::admin::bundles,
        super::admin::bundle,
        super::admin::prediction,
        super::admin::audit,
        super::admin::audit_verify,
        super::admin::health,
        super::admin::health_detailed,
        super::admin::metrics,
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
    tags(
        (name = "predictions", description = "Predictions and their stored records"),
        (name = "bundles", description = "Loaded model bundles"),
        (name = "audit", description = "The tamper-evident audit trail"),
        (name = "operations", description = "Health and metrics"),
        (name = "inference protocol v2", description = "The Open Inference Protocol (KServe v2): raw tensors to a bundle's model, no plugin; errors are {\"error\": \"...\"}"),
    )
)]
pub struct ApiDoc;

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(with_security(ApiDoc::openapi()))
}

const SCHEME: &str = "bearer";

/// Declares the bearer scheme, and on each operation the roles its route needs (from the
/// router's own table, so the document cannot promise another rule than the one enforced),
/// with the 401 and 403 answers it can give.
fn with_security(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
    use utoipa::openapi::{Ref, RefOr, ResponseBuilder};

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
    let error = |description: &str| -> RefOr<utoipa::openapi::Response> {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
            )
            .build()
            .into()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let Some(permission) = super::permission_of(path) else { continue };
        for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
            if permission == Permission::Open {
                operation.security = Some(vec![SecurityRequirement::default()]);
                continue;
            }
            let roles: Vec<&str> = permission.roles().into_iter().map(|role| role.as_str()).collect();
            operation.security = Some(vec![SecurityRequirement::new(SCHEME, roles.clone())]);
            let responses = &mut operation.responses.responses;
            responses.insert("401".to_owned(), error("No valid bearer token (missing, malformed, unknown or revoked)"));
            responses.insert(
                "403".to_owned(),
                error(&format!("The token's role may not use this route; it needs one of: {}", roles.join(", "))),
            );
            responses
                .entry("429".to_owned())
                .or_insert_with(|| error("The token's rate is used up, or the appliance is at capacity (Retry-After)"));
        }
    }
    doc
}
