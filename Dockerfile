# The two images the helm chart runs:
#   docker build --target control -t ghcr.io/spillway/spillway-control:0.1.0 .
#   docker build --target proxy   -t ghcr.io/spillway/spillway-proxy:0.1.0 .
# Both are distroless and run as the nonroot user (65532), matching the chart's and the
# injector's securityContext (read-only root filesystem, no capabilities). The injected
# sidecar's exec probes run `spillway-proxy --probe-ready`, so the binary is on PATH.
FROM rust:1-bookworm AS build
WORKDIR /src
# protoc and its well-known types, for etcd-client's generated code (scripts/build-deps.sh).
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked -p spillway-controlplane -p spillway-dataplane \
 && cp target/release/spillway-control target/release/spillway-proxy /usr/local/bin/

FROM gcr.io/distroless/cc-debian12:nonroot AS control
COPY --from=build /usr/local/bin/spillway-control /usr/local/bin/spillway-control
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/spillway-control"]

FROM gcr.io/distroless/cc-debian12:nonroot AS proxy
COPY --from=build /usr/local/bin/spillway-proxy /usr/local/bin/spillway-proxy
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/spillway-proxy"]
