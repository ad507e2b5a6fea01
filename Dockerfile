# syntax=docker/dockerfile:1

# ---- build ------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /app

# Dependency-caching layer: build the dependencies against placeholder sources,
# so that this layer is reused until Cargo.toml or Cargo.lock changes.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && mkdir -p benches/bench && echo 'fn main() {}' > benches/bench/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src benches

# The real sources. COPY keeps the files' own mtimes, which may be older than
# the placeholders, so touch them to make cargo rebuild the crate itself.
COPY . .
RUN find src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --bins \
    && install -m 0755 target/release/zoom-dept-sync /usr/local/bin/zoom-dept-sync \
    && install -m 0755 target/release/zoom-fake /usr/local/bin/zoom-fake

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 zds \
    && useradd --system --uid 10001 --gid zds --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin zds

# zoom-fake, the stand-in Zoom of the demo, is small and rides along.
COPY --from=builder /usr/local/bin/zoom-dept-sync /usr/local/bin/zoom-fake /usr/local/bin/

USER 10001:10001
# /healthz, /readyz, /metrics ([http] listen must be 0.0.0.0:9464 in a container);
# 9080: zoom-fake in the demo
EXPOSE 9464 9080

ENTRYPOINT ["zoom-dept-sync"]
CMD ["run", "--config", "/etc/zoom-dept-sync/config.toml"]
