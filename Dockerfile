# syntax=docker/dockerfile:1

# Two images from one file:
#   docker build .                    -> the daemon (the last stage): only what production runs
#   docker build --target zoom-fake . -> the demo's stand-in Zoom (crates/zoom-fake)

# ---- build ------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /app
COPY . .
# The registry and target caches outlive the layer, so a source change
# rebuilds only the workspace's own crates.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/app/target \
    cargo build --release --locked -p zoom-dept-sync --bin zoom-dept-sync \
    && install -m 0755 target/release/zoom-dept-sync /usr/local/bin/zoom-dept-sync

FROM builder AS zoom-fake-builder
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/app/target \
    cargo build --release --locked -p zoom-fake --bin zoom-fake \
    && install -m 0755 target/release/zoom-fake /usr/local/bin/zoom-fake

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 zds \
    && useradd --system --uid 10001 --gid zds --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin zds

# ---- zoom-fake: the demo's stand-in Zoom, never in the daemon's image ----------
FROM runtime AS zoom-fake
COPY --from=zoom-fake-builder /usr/local/bin/zoom-fake /usr/local/bin/
USER 10001:10001
EXPOSE 9080
ENTRYPOINT ["zoom-fake"]

# ---- the daemon (default target) --------------------------------------------
FROM runtime AS zoom-dept-sync
COPY --from=builder /usr/local/bin/zoom-dept-sync /usr/local/bin/

USER 10001:10001
# /healthz, /readyz, /metrics ([http] listen must be 0.0.0.0:9464 in a container)
EXPOSE 9464

ENTRYPOINT ["zoom-dept-sync"]
CMD ["run", "--config", "/etc/zoom-dept-sync/config.toml"]
