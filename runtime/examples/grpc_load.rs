//! A load generator for the gRPC port, for bench/suite.sh (`make load`): the same car-price row the HTTP runs
//! send, as tritonclient.grpc sends it (raw input contents, `price` asked), from N
//! connections each with one call in flight, on one thread as wrk runs with `-t1`. Prints
//! wrk's summary lines (`Requests/sec`, the 50% and 99% latencies, non-OK answers) so the
//! benchmark reads both tools the same way.
//!
//!     cargo run --release --features grpc-client --example grpc_load -- 127.0.0.1:8081 \
//!         --connections 32 --duration 20 [--warmup 5] [--token fct_...]
//!
//! It first prints `price: ...`, one call's answer; `--duration 0` stops there.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use forecourt::grpc::proto::ModelInferRequest;
use forecourt::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use forecourt::grpc::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use tonic::transport::{Channel, Endpoint};

/// README's example car, as the HTTP runs send it.
const FEATURES: [f32; 17] = [20000.0, 4.0, 4.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0];

struct Options {
    address: String,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    token: Option<String>,
}

fn options() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        address: String::new(),
        connections: 32,
        duration: Duration::from_secs(20),
        warmup: Duration::from_secs(5),
        token: None,
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--connections" => options.connections = value()?.parse().context("--connections")?,
            "--duration" => options.duration = Duration::from_secs(value()?.parse().context("--duration")?),
            "--warmup" => options.warmup = Duration::from_secs(value()?.parse().context("--warmup")?),
            "--token" => options.token = Some(value()?),
            address if options.address.is_empty() => options.address = address.to_owned(),
            other => anyhow::bail!("unexpected argument {other}"),
        }
    }
    anyhow::ensure!(
        !options.address.is_empty(),
        "usage: grpc_load HOST:PORT [--connections N] [--duration S] [--warmup S] [--token T]"
    );
    anyhow::ensure!(options.connections > 0, "--connections must be at least 1");
    Ok(options)
}

fn request() -> ModelInferRequest {
    let raw = |values: &[f32]| Bytes::from(values.iter().flat_map(|value| value.to_le_bytes()).collect::<Vec<u8>>());
    let input = |name: &str, width: i64| InferInputTensor {
        name: name.to_owned(),
        datatype: "FP32".to_owned(),
        shape: vec![1, width],
        ..InferInputTensor::default()
    };
    ModelInferRequest {
        model_name: "car-price".to_owned(),
        inputs: vec![input("features", 17), input("years_ahead", 1)],
        outputs: vec![InferRequestedOutputTensor { name: "price".to_owned(), ..Default::default() }],
        raw_input_contents: vec![raw(&FEATURES), raw(&[0.0])],
        ..ModelInferRequest::default()
    }
}

/// A call carrying `token` as its bearer token.
fn authorized(message: ModelInferRequest, token: Option<&str>) -> tonic::Request<ModelInferRequest> {
    let mut call = tonic::Request::new(message);
    if let Some(value) = token.and_then(|token| format!("Bearer {token}").parse().ok()) {
        call.metadata_mut().insert("authorization", value);
    }
    call
}

/// Calls back to back on one connection until `until`; the latency of each (µs) and the
/// count of non-OK answers.
async fn worker(channel: Channel, token: Option<String>, until: Instant) -> (Vec<u32>, u64, Option<String>) {
    let mut client = GrpcInferenceServiceClient::new(channel);
    let template = request();
    let (mut latencies, mut failed, mut first_error) = (Vec::new(), 0, None);
    while Instant::now() < until {
        let call = authorized(template.clone(), token.as_deref());
        let started = Instant::now();
        let answer = client.model_infer(call).await;
        latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
        if let Err(status) = answer {
            failed += 1;
            first_error.get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
        }
    }
    (latencies, failed, first_error)
}

async fn run(options: &Options, channels: &[Channel], length: Duration) -> (Vec<u32>, u64, Option<String>) {
    let until = Instant::now() + length;
    let mut tasks = tokio::task::JoinSet::new();
    for channel in channels {
        tasks.spawn(worker(channel.clone(), options.token.clone(), until));
    }
    let (mut latencies, mut failed, mut first_error) = (Vec::new(), 0, None);
    while let Some(Ok((mut part, part_failed, part_error))) = tasks.join_next().await {
        latencies.append(&mut part);
        failed += part_failed;
        first_error = first_error.or(part_error);
    }
    (latencies, failed, first_error)
}

/// The price one call answers, to check the run measures real answers.
async fn price(channel: &Channel, token: Option<&str>) -> anyhow::Result<f32> {
    let call = authorized(request(), token);
    let response = GrpcInferenceServiceClient::new(channel.clone()).model_infer(call).await?.into_inner();
    let raw = response.raw_output_contents.first().context("no raw output")?;
    let bytes: [u8; 4] = raw.get(..4).and_then(|bytes| bytes.try_into().ok()).context("a price is 4 bytes")?;
    Ok(f32::from_le_bytes(bytes))
}

/// A latency as wrk prints it.
fn wrk_time(micros: u32) -> String {
    if micros >= 1000 { format!("{:.2}ms", f64::from(micros) / 1000.0) } else { format!("{micros}.00us") }
}

fn main() -> anyhow::Result<()> {
    let options = options()?;
    // One thread, as wrk -t1: the generator's cost on the shared cores stays comparable.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let endpoint = Endpoint::from_shared(format!("http://{}", options.address))?.tcp_nodelay(true);
        let mut channels = Vec::with_capacity(options.connections);
        for _ in 0..options.connections {
            channels.push(endpoint.connect().await.with_context(|| format!("cannot connect to {}", options.address))?);
        }
        println!("price: {:.2}", price(&channels[0], options.token.as_deref()).await?);
        if options.duration.is_zero() {
            return Ok(());
        }
        run(&options, &channels, options.warmup).await;
        let started = Instant::now();
        let (mut latencies, failed, first_error) = run(&options, &channels, options.duration).await;
        let elapsed = started.elapsed().as_secs_f64();
        anyhow::ensure!(!latencies.is_empty(), "no call was answered");
        latencies.sort_unstable();
        let at = |quantile: f64| latencies[((latencies.len() - 1) as f64 * quantile).round() as usize];
        println!("Running {}s test @ grpc://{}", options.duration.as_secs(), options.address);
        println!("  {} connections", options.connections);
        println!("  Latency Distribution");
        println!("     50%  {}", wrk_time(at(0.50)));
        println!("     99%  {}", wrk_time(at(0.99)));
        println!("  {} requests in {elapsed:.2}s", latencies.len());
        println!("Requests/sec: {:.2}", latencies.len() as f64 / elapsed);
        println!("non-2xx responses: {failed}");
        if let Some(error) = first_error {
            eprintln!("first failed call: {error}");
        }
        Ok(())
    })
}
