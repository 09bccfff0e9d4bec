//! Compiles `proto/sai/v1/*.proto` with protox (pure Rust, so no system `protoc` is needed),
//! generates the tonic/prost code, and writes the descriptor set that server reflection serves
//! (with source info, so `grpcurl describe` shows the doc comments).

use std::path::PathBuf;

use prost::Message;

const PROTO_FILES: &[&str] = &[
    "proto/sai/v1/invocation.proto",
    "proto/sai/v1/async_invoke_config.proto",
    "proto/sai/v1/invocation_service.proto",
    "proto/sai/v1/worker_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto");
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }

    let descriptors = protox::compile(PROTO_FILES, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("sai_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // The dashboard's JSON API answers with these messages as they are.
        .message_attribute(".sai.v1", "#[derive(serde::Serialize)]")
        .enum_attribute(".sai.v1", "#[derive(serde::Serialize)]")
        .compile_fds(descriptors)?;
    Ok(())
}
