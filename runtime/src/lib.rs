//! # Forecourt
//!
//! The edge inference appliance: every prediction runs a client's JSON through a
//! sandboxed WebAssembly preprocessing plugin and an ONNX model.
//!
//! This crate is the appliance's library; the `forecourt` binary (runtime/cli) wires its
//! command line to it, and the fleet manager's commands live in their own crate
//! (runtime/fleet-manager), so nothing here is operator code.
//!
//! One module per concern; dependencies flow one way (app -> http, grpc -> pipeline ->
//! bundle -> plugin, model; plugin and model share only [`tensor`]):
//!
//! - [`auth`]: API tokens and roles: who may call which route.
//! - [`config`]: configuration errors and checks shared by every concern's settings.
//! - [`error_code`]: the one vocabulary of error codes every refusal names (a leaf).
//! - [`explain`]: exact TreeSHAP explanations of tree models from a bundle's `trees.json`.
//! - [`grpc`]: the Open Inference Protocol over gRPC (tonic), on its own port.
//! - [`oip`]: the Open Inference Protocol's tensors and model metadata, shared by HTTP's /v2
//!   and gRPC.
//! - [`text`]: outside text quoted into messages, cut to a bound (a leaf).
//! - [`fleet`]: the MQTT fleet link: status, signed deployments with rollback and canaries,
//!   store-and-forward telemetry; and the wire contract the fleet manager speaks.
//! - [`model`]: the ONNX model host (ONNX Runtime through `ort`): library, sessions, runs.
//! - [`plugin`]: the WebAssembly plugin host (wasmtime): sandbox, limits, artifact cache.
//! - [`quality`]: outcomes of predictions and the live accuracy they give each bundle version.
//! - [`store`]: the durable store (sled): predictions and the audit chain, group-committed.
//! - [`tensor`]: the tensors plugins produce and models consume.
//! - [`workers`]: the thread pool that keeps synchronous plugin and model calls off the
//!   async runtime.
//! - [`systemd`]: readiness, watchdog and stopping notifications to the service manager.

pub mod app;
pub mod auth;
pub mod bundle;
pub mod config;
pub mod error_code;
pub mod explain;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod http;
pub mod idle;
pub mod listener;
pub mod model;
pub mod oip;
pub mod pipeline;
pub mod plugin;
pub mod quality;
pub mod settings;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod tensor;
pub mod text;
pub mod workers;
