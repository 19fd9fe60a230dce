//! Generates the gRPC code with protox (pure Rust), so building our own protos needs no protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/tortie/ipam/v1/ipam.proto",
        "proto/tortie/agent/v1/agent.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
