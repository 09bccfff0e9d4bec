//! Generated protobuf and gRPC code for package `sai.v1`, and the descriptor set that server
//! reflection serves. Only `api`, `server` and `cli` use it; the domain never sees these types.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("sai.v1");

/// The encoded `FileDescriptorSet` of `proto/`, with doc comments, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sai_descriptor.bin"));
