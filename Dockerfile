# syntax=docker/dockerfile:1
#
# The tortie image: tortie-agent, the CNI plugins (tortie, tortie-ipam) and tortiectl, on Debian
# 12. manifests/tortie.yaml runs it (placeholder name ghcr.io/tortie/tortie:v0.1.0).
#
#   docker build -t ghcr.io/tortie/tortie:v0.1.0 .
#   docker build --build-arg CARGO_PROFILE=dist -t ... .   # what we ship: fat LTO, stripped
#
# NOT BUILT YET: the workplace this was written in has no Docker engine and no access to
# container registries, so this file has never been built or run. The build steps mirror
# scripts/install-deps and CI (same toolchain, --locked), which do build here.

# The toolchain rust-toolchain.toml pins (1.95.0). The image's own toolchain is used as is
# (RUSTUP_TOOLCHAIN), so rustup does not fetch the rustfmt/clippy components the file lists.
FROM rust:1.95.0-bookworm AS builder
ENV RUSTUP_TOOLCHAIN=1.95.0
# protoc and its well-known types for etcd-client's build script (the image's gcc builds the C
# of bundled SQLite and ring).
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# `release` here is exactly `cargo build --release`.
ARG CARGO_PROFILE=release
RUN cargo build --locked --profile "$CARGO_PROFILE" -p tortie-agent -p tortie-cni -p tortie-ctl \
 && mkdir /out \
 && for b in tortie-agent tortie tortie-ipam tortiectl; do \
      cp "target/$CARGO_PROFILE/$b" /out/; \
    done

FROM debian:bookworm-slim
# iproute2 (ip, for people debugging on the node), nftables (the agent runs `nft` for
# natOutgoing), ca-certificates (TLS to the Kubernetes API and etcd).
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 nftables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/tortie-agent /out/tortie /out/tortie-ipam /out/tortiectl /usr/local/bin/
LABEL org.opencontainers.image.title="tortie" \
      org.opencontainers.image.description="BGP-routed Kubernetes pod network: agent, CNI plugins, tortiectl" \
      org.opencontainers.image.licenses="Apache-2.0"
CMD ["tortie-agent", "--help"]
