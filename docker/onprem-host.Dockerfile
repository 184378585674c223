# A stand-in for an on-prem machine, for `make e2e-onprem`: the kit's image (Python, Ray and
# the job in /opt/rayscale, user `ray` uid 1000) plus an SSH server and rsync, all from
# Debian's packages. Ray's cluster launcher reaches it as it reaches a VM: over SSH.
#
#   make image && make image-onprem-host        # rayscale-onprem-host:<version>
ARG BASE_IMAGE=rayscale:0.1.0
# checkov:skip=CKV_DOCKER_7: the tag comes from BASE_IMAGE, the kit's image built locally
# checkov:skip=CKV_DOCKER_2: a test host; the e2e run waits for its SSH port
# checkov:skip=CKV_DOCKER_3: sshd runs as root, as on a machine; Ray runs as the SSH user `ray` (uid 1000)
FROM ${BASE_IMAGE}
# hadolint ignore=DL3002
USER 0
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-server openssh-client rsync \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /run/sshd /mnt/rayscale \
 && usermod -p '*' ray \
 && printf 'PasswordAuthentication no\nPermitRootLogin no\nAllowUsers ray\n' \
      > /etc/ssh/sshd_config.d/rayscale.conf
WORKDIR /home/ray
# sshd -D: in the foreground, as the container's process; -e: its log on stderr.
CMD ["/usr/sbin/sshd", "-D", "-e"]
