//! Compiles the `.proto` schema with protox (no system `protoc`) into prost types plus the
//! canonical JSON mapping (pbjson), so a YAML file and the control stream share one schema,
//! and the control-stream service into tonic client and server stubs.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/remora/v1/config.proto",
        "proto/remora/control/v1/control.proto",
        "proto/remora/mesh/v1/mesh.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let bytes = prost::Message::encode_to_vec(&fds);
    let fds_path = out.join("remora_descriptor.bin");
    std::fs::write(&fds_path, &bytes)?;

    let mut config = prost_build::Config::new();
    config
        .file_descriptor_set_path(&fds_path)
        .skip_protoc_run()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds_with_config(fds, config)?;

    pbjson_build::Builder::new()
        .register_descriptors(&bytes)?
        .build(&[".remora"])?;
    Ok(())
}
