//! Generates the Open Inference Protocol's gRPC messages and service (tonic, prost) from
//! runtime/proto/grpc_predict_v2.proto. The .proto is parsed by protox, in Rust, so no
//! protoc is needed on the build machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "proto/grpc_predict_v2.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(true)
        // The client is for the load generator (examples/grpc_load.rs) alone: the appliance
        // does not carry tonic's client side unless asked.
        .client_mod_attribute("inference", "#[cfg(feature = \"grpc-client\")]")
        // Raw tensor contents stay `Bytes`: slices of the received buffer, not copies.
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;
    Ok(())
}
