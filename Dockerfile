# Build: docker build -t crowsnest .   Run: docker run --rm crowsnest replay
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p crowsnest

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 crowsnest
COPY --from=build /src/target/release/crowsnest /usr/local/bin/crowsnest
USER crowsnest
WORKDIR /data
ENTRYPOINT ["crowsnest"]
CMD ["replay"]
