//! The request path in-process: the real routing table, worker pool and store (sled in a
//! temporary directory), with plain backends in place of a wasm plugin and an ONNX model.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::*;
use crate::bundle::{Inference, Routes, VersionStats};
use crate::explain::Explanation;
use crate::plugin::{InputError, InputErrorCode};
use crate::store::StoreConfig;

/// A version answering `{"y": 2x}` to `{"x": <number>}`. Anything else is refused as the
/// client's fault, and `"crash": true` fails its model: the version's fault.
#[derive(Debug)]
struct Doubler {
    name: String,
    version: Version,
    explainable: bool,
    /// Each request meets the test here twice: once when it reaches the worker, once to be
    /// let go (see [`meet`]).
    gate: Option<Arc<Barrier>>,
    /// The plugin's and the model's sha256, as the record names them.
    digests: (String, String),
    metrics: BundleMetrics,
    stats: VersionStats,
}

impl Doubler {
    fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.parse().unwrap(),
            explainable: false,
            gate: None,
            digests: ("ab".repeat(32), "cd".repeat(32)),
            metrics: BundleMetrics::new(name, version, ["y"]),
            stats: VersionStats::default(),
        }
    }

    fn gated(mut self, gate: &Arc<Barrier>) -> Self {
        self.gate = Some(Arc::clone(gate));
        self
    }
}

impl Versioned for Doubler {
    fn name(&self) -> &str {
        &self.name
    }
    fn version(&self) -> &Version {
        &self.version
    }
}

impl Backend for Doubler {
    fn infer(&self, request: &str, explain: bool) -> Result<Inference, InferenceError> {
        if let Some(gate) = &self.gate {
            gate.wait();
            gate.wait();
        }
        let refused = |code, message: &str| {
            InferenceError::Input(InputError { code, field: Some("x".to_owned()), message: message.to_owned() })
        };
        let request: Value = serde_json::from_str(request)
            .map_err(|_| refused(InputErrorCode::MalformedJson, "the request is not JSON"))?;
        if request["crash"] == true {
            return Err(ModelError::Run { reason: "the model crashed".to_owned() }.into());
        }
        let x = request["x"].as_f64().ok_or_else(|| refused(InputErrorCode::MissingField, "x is required"))?;
        let y = 2.0 * x as f32;
        let mut response = Map::new();
        response.insert("y".to_owned(), json!(y));
        Ok(Inference {
            response,
            outputs: vec![Tensor::float32("y", vec![1, 1], vec![y])],
            plugin_time: Duration::ZERO,
            inference_time: Duration::ZERO,
            explanation: explain.then(|| Explanation {
                method: "doubling",
                baseline: 0.0,
                value: f64::from(y),
                unit: None,
                contributions: Vec::new(),
                forecast: Vec::new(),
                text: format!("twice {x}"),
            }),
        })
    }

    fn infer_batch(&self, requests: &[&str], explain: bool) -> Vec<Result<Inference, InferenceError>> {
        requests.iter().map(|request| self.infer(request, explain)).collect()
    }

    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
        match inputs {
            [Tensor { shape, data: TensorData::Float32(values), .. }] => {
                Ok(vec![Tensor::float32("y", shape.clone(), values.iter().map(|x| 2.0 * x).collect())])
            }
            _ => Err(ModelError::Run { reason: "one float32 input expected".to_owned() }),
        }
    }

    fn explainable(&self) -> bool {
        self.explainable
    }

    fn digests(&self) -> (&str, &str) {
        (&self.digests.0, &self.digests.1)
    }

    fn metrics(&self) -> &BundleMetrics {
        &self.metrics
    }

    fn stats(&self) -> &VersionStats {
        &self.stats
    }
}

/// A pipeline over `versions`, a durable store in a temporary directory and `workers`
/// threads with `queue` places.
struct Served {
    pipeline: Pipeline<Routes<Doubler>>,
    store: Store,
    _dir: TempDir,
}

fn serve(versions: impl IntoIterator<Item = Doubler>, workers: usize, queue: usize) -> Served {
    let routes = Routes::default();
    for version in versions {
        routes.insert(version).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    let workers = WorkerPool::new("pipeline-test", workers, queue).unwrap();
    let pipeline = Pipeline::new(Arc::new(routes), workers, store.clone(), true, 8);
    Served { pipeline, store, _dir: dir }
}

impl Served {
    async fn predict(&self, request: &str) -> Result<Prediction, PipelineError> {
        self.pipeline.predict("double", Uuid::now_v7(), request.to_owned(), Origin::default(), false).await
    }

    fn version(&self, version: &str) -> Arc<Doubler> {
        self.pipeline.registry().version("double", &version.parse().unwrap()).unwrap()
    }
}

#[tokio::test]
async fn an_answered_prediction_is_already_stored_with_its_input_and_who_asked() {
    let served = serve([Doubler::new("double", "1.0.0")], 1, 4);
    let token = TokenId::try_from("0123456789abcdef".to_owned()).unwrap();
    let request = r#"{"x": 21, "note": "kept as sent"}"#;
    let id = Uuid::now_v7();
    let origin = Origin { token: Some(&token), client_request_id: Some("kiosk-7:1") };
    let answer = served.pipeline.predict("double", id, request.to_owned(), origin, false).await.unwrap();
    assert_eq!((answer.id, answer.version.as_str(), &answer.outputs["y"]), (id, "1.0.0", &json!(42.0)));

    let record = served.store.prediction(id).unwrap().expect("stored before the answer");
    assert_eq!(record.input_sha256, hex::encode(Sha256::digest(request.as_bytes())));
    assert_eq!(record.input.as_ref().map(JsonText::as_str), Some(request));
    assert_eq!(record.outputs, json!({"y": 42.0}));
    assert_eq!((record.plugin_sha256, record.model_sha256), ("ab".repeat(32), "cd".repeat(32)));
    assert_eq!(record.token_id.as_deref(), Some("0123456789abcdef"));
    assert_eq!(record.client_request_id.as_deref(), Some("kiosk-7:1"));
    assert_eq!(served.version("1.0.0").stats().snapshot().requests, 1);
}

#[tokio::test]
async fn a_canary_takes_its_share_of_single_predictions_and_no_batch() {
    let served = serve([Doubler::new("double", "1.0.0"), Doubler::new("double", "2.0.0")], 2, 16);
    served.pipeline.registry().start_canary("double", &"2.0.0".parse().unwrap(), 25.0).unwrap();
    let mut canary = 0;
    for _ in 0..20 {
        if served.predict(r#"{"x": 1}"#).await.unwrap().version == "2.0.0" {
            canary += 1;
        }
    }
    assert_eq!(canary, 5);
    assert_eq!(served.version("2.0.0").stats().snapshot().requests, 5);

    for _ in 0..4 {
        let batch =
            served.pipeline.predict_batch("double", vec![json!({"x": 1}); 3], Origin::default(), false).await.unwrap();
        assert_eq!(batch.version, "1.0.0", "a batch goes to the active version whole");
    }
}

#[tokio::test]
async fn the_client_s_faults_and_the_version_s_are_told_apart_and_nothing_failed_is_stored() {
    let served = serve([Doubler::new("double", "1.0.0")], 1, 4);
    let missing = served.predict(r#"{"y": 1}"#).await.unwrap_err();
    assert_eq!(missing.code(), ErrorCode::MissingField);
    assert!(!missing.is_version_fault());
    assert_eq!(served.predict("{not json").await.unwrap_err().code(), ErrorCode::InvalidJson);
    let crashed = served.predict(r#"{"x": 1, "crash": true}"#).await.unwrap_err();
    assert_eq!(crashed.code(), ErrorCode::ModelFailed);
    assert!(crashed.is_version_fault());

    let stats = served.version("1.0.0").stats().snapshot();
    assert_eq!((stats.requests, stats.failures), (3, 1), "only the crash is the version's fault");
    assert!(served.store.latest_predictions(10).unwrap().is_empty());
}

#[tokio::test]
async fn unknown_bundles_and_versions_and_explanations_a_version_cannot_give_are_refused() {
    let served = serve([Doubler::new("double", "1.0.0")], 1, 4);
    let unknown = served.pipeline.predict("triple", Uuid::now_v7(), "{}".into(), Origin::default(), false).await;
    assert!(matches!(unknown, Err(PipelineError::UnknownBundle { ref name }) if name == "triple"));

    let inputs = vec![Tensor::float32("x", vec![1, 1], vec![1.0])];
    let version = "9.9.9".parse().unwrap();
    let absent = served.pipeline.infer_tensors("double", Some(&version), Uuid::now_v7(), inputs, Origin::default());
    assert!(matches!(absent.await, Err(PipelineError::UnknownVersion { ref version, .. }) if version == "9.9.9"));

    let explained = served.pipeline.predict("double", Uuid::now_v7(), r#"{"x": 1}"#.into(), Origin::default(), true);
    assert_eq!(explained.await.unwrap_err().code(), ErrorCode::ExplanationsUnavailable);
    let batch = served.pipeline.predict_batch("double", vec![json!({"x": 1})], Origin::default(), true).await;
    assert_eq!(batch.unwrap_err().code(), ErrorCode::ExplanationsUnavailable);
    assert!(served.store.latest_predictions(10).unwrap().is_empty());
}

#[tokio::test]
async fn an_explainable_version_s_explanation_is_answered_and_stored() {
    let mut version = Doubler::new("double", "1.0.0");
    version.explainable = true;
    let served = serve([version], 1, 4);
    let id = Uuid::now_v7();
    let answer = served.pipeline.predict("double", id, r#"{"x": 2}"#.into(), Origin::default(), true).await.unwrap();
    let explanation = answer.explanation.expect("asked for");
    let record = served.store.prediction(id).unwrap().unwrap();
    assert_eq!(record.explanation, Some(serde_json::to_value(&explanation).unwrap()));
}

#[tokio::test]
async fn a_batch_answers_each_instance_in_its_place_and_stores_the_answered_ones() {
    let served = serve([Doubler::new("double", "1.0.0")], 1, 4);
    let instances = vec![json!({"x": 1}), json!({"x": "one"}), json!({"x": 3})];
    let batch = served.pipeline.predict_batch("double", instances, Origin::default(), false).await.unwrap();
    let answers: Vec<Option<Value>> =
        batch.results.iter().map(|result| result.as_ref().ok().map(|answer| answer.outputs["y"].clone())).collect();
    assert_eq!(answers, [Some(json!(2.0)), None, Some(json!(6.0))]);
    let stored: Vec<Uuid> = served.store.latest_predictions(10).unwrap().iter().map(|record| record.id).collect();
    assert_eq!(stored.len(), 2);
    for answer in batch.results.iter().flatten() {
        assert!(stored.contains(&answer.id));
    }

    let too_many = served.pipeline.predict_batch("double", vec![json!({"x": 1}); 9], Origin::default(), false).await;
    assert!(matches!(too_many, Err(PipelineError::BatchTooLarge { size: 9, max: 8 })));
}

#[tokio::test]
async fn tensors_go_to_the_model_named_by_version_and_are_stored_as_sent() {
    let served = serve([Doubler::new("double", "1.0.0"), Doubler::new("double", "1.1.0")], 1, 4);
    let inputs = vec![Tensor::float32("x", vec![2, 1], vec![1.5, -4.0])];
    let sent = serde_json::to_string(&inputs).unwrap();
    let version = "1.0.0".parse().unwrap();
    let id = Uuid::now_v7();
    let raw = served.pipeline.infer_tensors("double", Some(&version), id, inputs, Origin::default()).await.unwrap();
    assert_eq!(raw.bundle.version().to_string(), "1.0.0", "not the active 1.1.0");
    assert_eq!(raw.outputs[0].data, TensorData::Float32(vec![3.0, -8.0]));
    let record = served.store.prediction(id).unwrap().unwrap();
    assert_eq!(record.input.as_ref().map(JsonText::as_str), Some(sent.as_str()));
}

/// Meets a gated request at its gate (without holding the runtime's thread).
async fn meet(gate: &Arc<Barrier>) {
    let gate = Arc::clone(gate);
    tokio::task::spawn_blocking(move || gate.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_as_overload_at_once_and_is_no_version_s_fault() {
    // One worker held by the first request, the one queued place taken by the second.
    let gate = Arc::new(Barrier::new(2));
    let served = Arc::new(serve([Doubler::new("double", "1.0.0").gated(&gate)], 1, 1));
    let send = |x: u32| {
        let served = Arc::clone(&served);
        tokio::spawn(async move { served.predict(&format!(r#"{{"x": {x}}}"#)).await })
    };
    let running = send(1);
    meet(&gate).await;
    let queued = send(2);
    while served.pipeline.queued() == 0 {
        tokio::task::yield_now().await;
    }

    let refused = served.predict(r#"{"x": 3}"#).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Overloaded);
    assert!(!refused.is_version_fault());

    // Let both go (the second meets the gate on reaching the worker): both are answered.
    for _ in 0..3 {
        meet(&gate).await;
    }
    assert_eq!(running.await.unwrap().unwrap().outputs["y"], json!(2.0));
    assert_eq!(queued.await.unwrap().unwrap().outputs["y"], json!(4.0));
    let stats = served.version("1.0.0").stats().snapshot();
    assert_eq!((stats.requests, stats.failures), (3, 0));
    assert_eq!(served.store.latest_predictions(10).unwrap().len(), 2);
}
