# syntax=docker/dockerfile:1
# pulsewatch container image: a release build with the default features (Prophet through
# augurs' wasmstan optimizer) on distroless, running as a non-root user. See deploy/README.md.
#
#   docker build -t pulsewatch:0.1.0 .
#   docker run --rm --network host -v /etc/pulsewatch:/etc/pulsewatch:ro pulsewatch:0.1.0
#
# The builder and the runtime must be the same Debian release (bookworm = Debian 12): the binary
# links against the builder's glibc.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Only what `cargo build` reads (the [[bench]] target must exist for the manifest to load).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# Cache mounts keep the crate registry and the target directory from one build to the next (a
# cold release build takes about 25 minutes on 2 cores). Their contents are not part of the
# image, so the binaries are copied out of the target directory: pulsewatch, and
# pulsewatch-healthcheck (src/bin/healthcheck.rs, std only) as the HEALTHCHECK binary, since
# distroless has no shell and no curl; `install -s` strips its symbols.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bins \
    && install -D -m 0755 target/release/pulsewatch /out/pulsewatch \
    && install -D -m 0755 -s target/release/pulsewatch-healthcheck /out/healthcheck \
    && /out/pulsewatch --version

# distroless/cc: glibc and libgcc_s (all the binary links against), CA certificates, tzdata; no
# shell, no package manager. The nonroot variant runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="pulsewatch" \
      org.opencontainers.image.description="Forecasting and anomaly-detection sidecar for Prometheus" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/pulsewatch /out/healthcheck /usr/local/bin/
# A default config (Prometheus on localhost:9090) and rule; mount a directory with your own
# config and rules over /etc/pulsewatch (a directory, so that edits reload).
COPY deploy/docker/pulsewatch.yml /etc/pulsewatch/pulsewatch.yml
COPY deploy/docker/rules/ /etc/pulsewatch/rules/
WORKDIR /etc/pulsewatch
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 9464
# GET /-/healthy on 127.0.0.1:9464 (or $PULSEWATCH_HEALTHCHECK_ADDRESS). Plain HTTP: with TLS or
# basic auth (--web.config.file), run with --no-healthcheck.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/healthcheck"]
ENTRYPOINT ["/usr/local/bin/pulsewatch"]
# Default flags; arguments given to `docker run` (or a pod's `args`) replace all of them.
CMD ["--config.file=/etc/pulsewatch/pulsewatch.yml", "--web.listen-address=:9464"]
