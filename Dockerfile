# Switchyard in a container: one static-ish binary that carries its model, router and cache rule.
# Not exercised by CI (there is no Docker on the CI machine); see README "Containers".
#
#   docker build -t switchyard .
#   docker run --rm -p 8080:8080 switchyard serve --demo --listen 0.0.0.0:8080

FROM rust:1.89-slim-bookworm AS build
WORKDIR /src
# dependencies first, so source edits do not refetch the registry
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY models ./models
RUN cargo build --release --locked --bin switchyard \
    && strip target/release/switchyard

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/switchyard --create-home switchyard
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
USER switchyard
WORKDIR /var/lib/switchyard
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/switchyard"]
# with no --config, serve reads its settings from SWITCHYARD_* environment variables
CMD ["serve", "--listen", "0.0.0.0:8080"]
