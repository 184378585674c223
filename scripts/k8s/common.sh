# Shared by build.sh, up.sh and down.sh: where the build and the running cluster live.
# shellcheck shell=bash
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
K8S_CACHE=${K8S_CACHE:-$HOME/.cache/rayscale-k8s}
key=$(sha256sum "$here/versions.env" | cut -c1-12) # keyed by the versions alone
out=$K8S_CACHE/$key
bin=$out/bin
# Everything a running cluster writes; down removes it whole. The results volumes are
# kept beside it, so results outlive the cluster, as kind's results/kind-rayscale do.
RUN=${K8S_RUN:-$K8S_CACHE/run}
VOLUMES=${K8S_VOLUMES:-$K8S_CACHE/volumes}
NODE=rayscale-k8s
CONTEXT=rayscale-k8s
BRIDGE=rsk8s0
POD_CIDR=10.244.0.0/16
HOST_IP=10.244.0.1 # the bridge's address: the API server listens here, never on a public one
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_IP=10.96.0.10
PAUSE_IMAGE=registry.k8s.io/pause:3.10.2
COREDNS_IMAGE=rayscale.local/coredns:$COREDNS_VERSION
TAG="rayscale-k8s" # the comment on every iptables rule of ours
export KUBECONFIG=$RUN/kubeconfig
kc() { "$bin/kubectl" --kubeconfig "$RUN/kubeconfig" "$@"; }
step() { printf '[%5.1fs] %s\n' "$(echo "$(date +%s.%N) - ${t0:-$(date +%s.%N)}" | bc)" "$*"; }
