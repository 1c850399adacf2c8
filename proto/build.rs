//! Compiles the control-plane protocol. protoc comes from protoc-bin-vendored so a fresh machine
//! needs no system protobuf compiler; it is handed to prost-build directly, not through the
//! environment.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().build_transport(true).compile_with_config(
        config,
        &["proto/spillway/v1/discovery.proto", "proto/spillway/v1/telemetry.proto"],
        &["proto"],
    )?;
    Ok(())
}
