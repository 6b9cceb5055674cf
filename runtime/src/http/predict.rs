//! `POST /v1/predict/{bundle}` and `POST /v1/predict/{bundle}/batch`.

use axum::extract::{Path, RawQuery, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::auth::Caller;
use super::error::{ApiError, ErrorDetail};
use super::extract::{JsonBody, JsonText};
use super::request_context::{ClientRequestId, Served, request_id};
use super::{AppState, ensure_ready};
use crate::explain::Explanation;
use crate::pipeline::Origin;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PredictResponse {
    /// Time-ordered id (UUIDv7); fetch the stored record at /v1/predictions/{id}.
    pub prediction_id: String,
    pub bundle: String,
    pub version: String,
    /// The bundle's response: for car-price `price`, `currency` and, when asked, `forecast`.
    #[schema(value_type = Object)]
    pub outputs: Map<String, Value>,
    pub latency_ms: f64,
    /// With `?explain=true`: each request field's contribution to the value, from the
    /// baseline (the training average), and the same in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Explanation>,
}

/// Query parameters of `POST /v1/predict/{bundle}` and its batch; others are ignored.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PredictQuery {
    /// `true`: explain the prediction (exact TreeSHAP over the bundle's trees: car-price,
    /// housing); a bundle without trees answers 422 `explanations_unavailable`. Default `false`.
    #[serde(default, deserialize_with = "flag")]
    pub explain: Option<bool>,
}

impl PredictQuery {
    /// The query, percent-decoded; a parameter that breaks its rule is the client's error.
    fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        serde_urlencoded::from_str(raw.unwrap_or_default())
            .map_err(|_| ApiError::invalid_field("explain", "`explain` must be true or false, once"))
    }
}

/// A flag as query strings write it: `true` or `1`, `false` or `0`.
fn flag<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    match String::deserialize(deserializer)?.as_str() {
        "true" | "1" => Ok(Some(true)),
        "false" | "0" => Ok(Some(false)),
        _ => Err(serde::de::Error::custom("not a flag")),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Requests, each what /v1/predict/{bundle} takes.
    #[schema(value_type = Vec<Object>)]
    pub instances: Vec<Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResponse {
    pub bundle: String,
    pub version: String,
    /// One entry per instance, in order: either `prediction_id` and `outputs`, or `error`.
    pub predictions: Vec<BatchItem>,
    pub succeeded: usize,
    pub failed: usize,
    pub latency_ms: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchItem {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub outputs: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// With `?explain=true`, for an answered instance: as on /v1/predict/{bundle}.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Explanation>,
}

/// One prediction: the request through the bundle's plugin and model.
#[utoipa::path(
    post, path = "/v1/predict/{bundle}", tag = "predictions",
    params(("bundle" = String, Path, description = "Bundle name, e.g. car-price"), PredictQuery),
    request_body(content = Object, description = "The bundle's input fields (see /v1/bundles)", content_type = "application/json"),
    responses(
        (status = 200, description = "The prediction (with `explanation` when asked)", body = PredictResponse),
        (status = 400, description = "Malformed JSON", body = super::error::ErrorBody),
        (status = 404, description = "Unknown bundle", body = super::error::ErrorBody),
        (status = 413, description = "Body too large", body = super::error::ErrorBody),
        (status = 415, description = "Not application/json", body = super::error::ErrorBody),
        (status = 422, description = "A field breaks the bundle's rules (`field` names it), or `explanations_unavailable`: explain=true on a bundle without trees", body = super::error::ErrorBody),
        (status = 429, description = "At capacity", body = super::error::ErrorBody),
        (status = 500, description = "The plugin or model failed", body = super::error::ErrorBody),
        (status = 503, description = "Starting or draining", body = super::error::ErrorBody),
    )
)]
pub async fn predict(
    State(state): State<AppState>,
    Path(bundle): Path<String>,
    Extension(caller): Extension<Caller>,
    client: Option<Extension<ClientRequestId>>,
    RawQuery(query): RawQuery,
    JsonText(request): JsonText,
) -> Result<(Extension<Served>, Json<PredictResponse>), ApiError> {
    ensure_ready(&state)?;
    let explain = PredictQuery::parse(query.as_deref())?.explain.unwrap_or(false);
    let origin = origin(&caller, client.as_ref());
    let prediction = state.pipeline.predict(&bundle, request_id(), request, origin, explain).await?;
    let served = Served { bundle: prediction.bundle.clone(), version: prediction.version.clone() };
    Ok((
        Extension(served),
        Json(PredictResponse {
            prediction_id: prediction.id.to_string(),
            bundle: prediction.bundle,
            version: prediction.version,
            outputs: prediction.outputs,
            latency_ms: prediction.latency_ms,
            explanation: prediction.explanation,
        }),
    ))
}

/// Several predictions in one model run; each instance's error is reported at its index.
/// `?explain=true` explains each answered instance.
#[utoipa::path(
    post, path = "/v1/predict/{bundle}/batch", tag = "predictions",
    params(("bundle" = String, Path, description = "Bundle name"), PredictQuery),
    request_body = BatchRequest,
    responses(
        (status = 200, description = "One answer per instance, in order: outputs, or the instance's error", body = BatchResponse),
        (status = 400, description = "Malformed JSON, or not a JSON object (`invalid_json`)", body = super::error::ErrorBody),
        (status = 404, description = "Unknown bundle", body = super::error::ErrorBody),
        (status = 413, description = "Body too large", body = super::error::ErrorBody),
        (status = 415, description = "Not application/json", body = super::error::ErrorBody),
        (status = 422, description = "`instances` missing, not an array, empty or over server.max_batch; or `explanations_unavailable`: explain=true on a bundle without trees", body = super::error::ErrorBody),
        (status = 429, description = "At capacity", body = super::error::ErrorBody),
        (status = 500, description = "The plugin or model failed for the whole batch", body = super::error::ErrorBody),
        (status = 503, description = "Starting or draining", body = super::error::ErrorBody),
    )
)]
pub async fn predict_batch(
    State(state): State<AppState>,
    Path(bundle): Path<String>,
    Extension(caller): Extension<Caller>,
    client: Option<Extension<ClientRequestId>>,
    RawQuery(query): RawQuery,
    JsonBody(batch): JsonBody<BatchRequest>,
) -> Result<(Extension<Served>, Json<BatchResponse>), ApiError> {
    ensure_ready(&state)?;
    let explain = PredictQuery::parse(query.as_deref())?.explain.unwrap_or(false);
    if batch.instances.is_empty() {
        return Err(ApiError::invalid_field("instances", "`instances` must hold at least one instance"));
    }
    let origin = origin(&caller, client.as_ref());
    let answer = state.pipeline.predict_batch(&bundle, batch.instances, origin, explain).await?;
    let predictions: Vec<BatchItem> = answer
        .results
        .into_iter()
        .enumerate()
        .map(|(index, result)| match result {
            Ok(prediction) => BatchItem {
                index,
                prediction_id: Some(prediction.id.to_string()),
                outputs: Some(prediction.outputs),
                error: None,
                explanation: prediction.explanation,
            },
            Err(error) => BatchItem {
                index,
                prediction_id: None,
                outputs: None,
                error: Some(ApiError::from(error).detail()),
                explanation: None,
            },
        })
        .collect();
    let failed = predictions.iter().filter(|item| item.error.is_some()).count();
    let served = Served { bundle: answer.bundle.clone(), version: answer.version.clone() };
    Ok((
        Extension(served),
        Json(BatchResponse {
            bundle: answer.bundle,
            version: answer.version,
            succeeded: predictions.len() - failed,
            failed,
            predictions,
            latency_ms: answer.latency_ms,
        }),
    ))
}

/// Who asked, as the prediction's record keeps it.
pub(super) fn origin<'a>(caller: &'a Caller, client: Option<&'a Extension<ClientRequestId>>) -> Origin<'a> {
    Origin { token: caller.token_id(), client_request_id: client.map(|Extension(id)| &*id.0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_code::ErrorCode;

    #[test]
    fn explain_is_a_flag_read_percent_decoded_beside_parameters_it_ignores() {
        let cases = [
            (None, None),
            (Some(""), None),
            (Some("explain=true"), Some(true)),
            (Some("explain=1&page=2"), Some(true)),
            (Some("explain=false"), Some(false)),
            (Some("explain=0"), Some(false)),
            (Some("explain=%74rue"), Some(true)),
            (Some("explained=maybe"), None),
        ];
        for (raw, explain) in cases {
            assert_eq!(PredictQuery::parse(raw).unwrap().explain, explain, "{raw:?}");
        }
        for bad in ["explain=maybe", "explain=", "explain", "explain=TRUE", "explain=true&explain=false"] {
            let detail = PredictQuery::parse(Some(bad)).unwrap_err().detail();
            assert_eq!((detail.code, detail.field.as_deref()), (ErrorCode::InvalidField, Some("explain")), "{bad}");
        }
    }
}
