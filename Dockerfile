# The minimal image: tendril, terraform and CA certificates, nothing else
# (no shell, no package manager, no helm, kubectl or cloud CLIs).
#
#   docker build -t tendril .
#   docker run --rm -v "$PWD:/work" -w /work tendril plan --job job.yaml
#
# tests/minimal_env.rs checks the promise without a container engine: plan,
# deploy without a cluster, render and token eks succeed with an emptied
# environment, no HOME and only terraform on PATH.

ARG RUST_VERSION=1.95
ARG TERRAFORM_VERSION=1.11.4

# 1. build tendril with the shipping profile (fat LTO, one codegen unit)
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# no .git in the build context: the commit comes from the build argument
ARG TENDRIL_GIT_COMMIT=unknown
ENV TENDRIL_GIT_COMMIT=${TENDRIL_GIT_COMMIT}
RUN cargo build --locked --profile dist --bin tendril \
 && cp target/dist/tendril /tendril

# 2. terraform, checked against HashiCorp's published SHA256SUMS
FROM debian:bookworm-slim AS terraform
ARG TERRAFORM_VERSION
ARG TARGETARCH=amd64
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl unzip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /tf
RUN base="https://releases.hashicorp.com/terraform/${TERRAFORM_VERSION}" \
 && zip="terraform_${TERRAFORM_VERSION}_linux_${TARGETARCH}.zip" \
 && curl -fsSLO "${base}/${zip}" \
 && curl -fsSLO "${base}/terraform_${TERRAFORM_VERSION}_SHA256SUMS" \
 && grep " ${zip}\$" "terraform_${TERRAFORM_VERSION}_SHA256SUMS" | sha256sum -c - \
 && unzip "${zip}" terraform

# 3. the runtime: distroless "cc" (glibc, libgcc, CA certificates, a nonroot
#    user; no shell). tendril links glibc dynamically; terraform is static.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /tendril /usr/local/bin/tendril
COPY --from=terraform /tf/terraform /usr/local/bin/terraform
ENV PATH=/usr/local/bin
WORKDIR /work
ENTRYPOINT ["/usr/local/bin/tendril"]
CMD ["--help"]
