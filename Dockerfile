# burnwatch next to Prometheus: `docker build -t burnwatch .` then
#   docker run -v ./my-config:/etc/burnwatch -v burnwatch-state:/var/lib/burnwatch -p 9099:9099 burnwatch
# ENTRYPOINT is the program and CMD its arguments, so `docker run burnwatch check ...` and a
# Kubernetes container's `args:` (which replace CMD) run other subcommands or flags; without
# arguments it serves /etc/burnwatch/burnwatch.yaml with its state under /var/lib/burnwatch.
# Everything the baked config loads lives under /etc/burnwatch (the demo SLO in
# /etc/burnwatch/rules), so a config directory mounted there replaces all of it: a mounted
# config loads only the specs it names inside the mount. A mounted config must listen on
# 0.0.0.0 inside the container and should set web.reload_token_file (without it /-/reload and
# the silences API refuse every caller but loopback, and burnwatch says so in a warning at
# start). The HEALTHCHECK asks the port the config's web.listen names.
# tests/it/deploy.rs builds the container's command lines from this file and runs them.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY rules ./rules
COPY benches ./benches
RUN cargo build --release --locked --bin burnwatch

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/burnwatch burnwatch \
    && mkdir -p /etc/burnwatch /var/lib/burnwatch \
    && chown burnwatch /var/lib/burnwatch
COPY --from=build /src/target/release/burnwatch /usr/local/bin/burnwatch
# The example config, listening on all interfaces (reload stays refused to non-loopback callers
# until web.reload_token_file is set), its `rules: [../rules]` made `rules: [rules]`: the demo
# SLO at /etc/burnwatch/rules, inside the directory a mounted config replaces.
COPY config/burnwatch.yaml /etc/burnwatch/burnwatch.yaml
RUN sed -i -e 's/listen: 127.0.0.1:9099/listen: 0.0.0.0:9099/' -e 's|- ../rules |- rules |' /etc/burnwatch/burnwatch.yaml
COPY rules /etc/burnwatch/rules
USER burnwatch
VOLUME ["/etc/burnwatch", "/var/lib/burnwatch"]
EXPOSE 9099
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["burnwatch", "healthcheck", "--config", "/etc/burnwatch/burnwatch.yaml"]
ENTRYPOINT ["burnwatch"]
CMD ["serve", "--config", "/etc/burnwatch/burnwatch.yaml", "--state-dir", "/var/lib/burnwatch"]
