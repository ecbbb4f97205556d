//! Compiles the .proto files without a system `protoc`: protox parses them into a
//! descriptor set, which tonic-prost-build turns into Rust and which we also write
//! out for gRPC server reflection.

use std::path::PathBuf;

const FILES: &[&str] = &[
    "muster/common/v1/common.proto",
    "muster/policy/v1/policy.proto",
    "muster/membership/v1/membership.proto",
    "muster/directory/v1/directory.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // protox does not tell cargo what it read, so name every input ourselves.
    for file in FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    println!("cargo:rerun-if-changed=muster");

    let descriptors = protox::compile(FILES, ["."])?;
    let descriptor_path = out_dir.join("muster_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&descriptors))?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_fds(descriptors)?;
    Ok(())
}
