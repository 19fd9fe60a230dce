//! Minimal gRPC client for tests: `ipam-client SOCKET allocate|get|release HANDLE`.
//! Prints the addresses, or `error: <code>: <message>` and exits 3.

use std::path::Path;
use std::time::Duration;

use tortie_proto::ipam::v1 as pb;
use tortie_proto::ipam::v1::ipam_client::IpamClient;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, verb, handle] = args.as_slice() else {
        eprintln!("usage: ipam-client SOCKET allocate|get|release HANDLE");
        std::process::exit(2);
    };
    let channel = match tortie_proto::connect_unix(Path::new(socket), Duration::from_secs(5)).await
    {
        Ok(c) => c,
        Err(e) => {
            println!("error: connect: {e}");
            std::process::exit(3);
        }
    };
    let mut client = IpamClient::new(channel);
    let result = match verb.as_str() {
        "allocate" => client
            .allocate(pb::AllocateRequest {
                handle_id: handle.clone(),
                num_ipv4: 1,
                ..Default::default()
            })
            .await
            .map(|r| {
                r.into_inner()
                    .addresses
                    .into_iter()
                    .map(|a| a.address)
                    .collect::<Vec<_>>()
            }),
        "get" => client
            .get(pb::GetRequest {
                handle_id: handle.clone(),
            })
            .await
            .map(|r| {
                r.into_inner()
                    .addresses
                    .into_iter()
                    .map(|a| a.address)
                    .collect()
            }),
        "release" => client
            .release(pb::ReleaseRequest {
                handle_id: handle.clone(),
            })
            .await
            .map(|r| r.into_inner().released),
        _ => {
            eprintln!("unknown verb {verb}");
            std::process::exit(2);
        }
    };
    match result {
        Ok(addrs) => println!("{}", addrs.join(" ")),
        Err(status) => {
            println!("error: {:?}: {}", status.code(), status.message());
            std::process::exit(3);
        }
    }
}
