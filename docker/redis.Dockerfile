# A Redis for `cluster up --gcs-ft redis --redis-image ...` where no registry serves the
# official redis image: Debian's redis-server on the kit's air-gapped base.
#
#   make image-base && make image-redis       # rayscale-redis:bookworm
ARG BASE_IMAGE=rayscale-base:bookworm
# checkov:skip=CKV_DOCKER_7: the tag comes from BASE_IMAGE, built locally by make image-base
# checkov:skip=CKV_DOCKER_2: Kubernetes probes the Redis (the Deployment's tcpSocket readiness probe)
FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
# The official image's redis user: the Deployment runs as uid 999 on either image.
USER 999:999
CMD ["redis-server"]
