//! Compiles the control-plane protocol. protoc comes from protoc-bin-vendored so a fresh machine
//! needs no system protobuf compiler.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        .build_transport(true)
        .compile_protos(&["proto/spillway/v1/discovery.proto", "proto/spillway/v1/telemetry.proto"], &["proto"])?;
    Ok(())
}
