#!/usr/bin/env bash
# Build a one-node Kubernetes, its runtime and KubeRay's operator from their Go modules
# into $K8S_CACHE/<key>/bin (outside the repo), keyed by versions.env. A second run with
# the same versions does nothing and needs no network.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
assets() { # the images no registry serves here, and the operator's ClusterRole
  mkdir -p "$out/images"
  [ -f "$out/images/pause.tar" ] || python3 "$here/oci_image.py" "$out/images/pause.tar" \
    "$PAUSE_IMAGE" /pause "$bin/pause:/pause"
  [ -f "$out/images/coredns.tar" ] || python3 "$here/oci_image.py" "$out/images/coredns.tar" \
    "$COREDNS_IMAGE" /coredns "$bin/coredns:/coredns"
  # KubeRay's operator image as its chart names it, holding the operator built below
  [ -f "$out/images/kuberay-operator.tar" ] || python3 "$here/oci_image.py" \
    "$out/images/kuberay-operator.tar" "quay.io/kuberay/operator:$KUBERAY_VERSION" /manager \
    "$bin/ray-operator:/manager"
}
if [ -f "$out/.complete" ]; then
  assets
  echo "k8s build: cached in $out"
  exit 0
fi
mkdir -p "$bin" "$out/src"
start=$(date +%s)
log=$out/build.log
: >"$log"
step() { printf '[%4ds] %s\n' $(($(date +%s) - start)) "$*"; }
# A wrapper module per component: its own go.mod, so no module's pins move another's.
gomod() { # dir module... : a module that requires the given module@version pairs
  local dir=$out/src/$1; shift
  mkdir -p "$dir"
  (cd "$dir" && { [ -f go.mod ] || go mod init "rayscale.local/$(basename "$dir")" >>"$log" 2>&1; } \
    && for m in "$@"; do go mod edit -require="$m"; done)
  echo "$dir"
}
build() { # dir outname package [flags...]
  local dir=$1 name=$2 pkg=$3; shift 3
  [ -x "$bin/$name" ] && return 0 # built earlier into this version's dir
  step "building $name"
  (cd "$dir" && go build -trimpath -o "$bin/$name" "$@" "$pkg") >>"$log" 2>&1 \
    || { tail -30 "$log"; echo "k8s build: $name failed (whole log: $log)"; exit 1; }
}

echo "k8s build: Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, containerd $CONTAINERD_VERSION," \
  "runc $RUNC_VERSION, CNI plugins $CNI_PLUGINS_VERSION, CoreDNS $COREDNS_VERSION, KubeRay $KUBERAY_VERSION," \
  "kind $KIND_VERSION, helm $HELM_VERSION"
echo "k8s build: the first build takes about 17 min on 2 cores (it downloads about 1 GB of modules); cache: $out"

need=()
command -v gcc >/dev/null || need+=(gcc)
[ -f /usr/include/seccomp.h ] || need+=(libseccomp-dev)  # runc with seccomp: pods ask for RuntimeDefault
command -v pkg-config >/dev/null || need+=(pkg-config)
if ((${#need[@]})); then
  step "apt: ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >>"$log"
fi

# Kubernetes: k8s.io/kubernetes points its staging modules at ./staging; a module that
# uses it replaces each with the published k8s.io/<name> at the matching v0.x version.
step "kubernetes: resolving modules"
kdir=$(gomod kube "k8s.io/kubernetes@$K8S_VERSION")
kmod=$(cd "$kdir" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
for m in $(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$kmod"); do
  (cd "$kdir" && go mod edit -replace="$m=$m@$K8S_STAGING_VERSION")
done
mkdir -p "$kdir/cmd/etcd"
cat >"$kdir/cmd/etcd/main.go" <<'EOF'
// etcd at the version k8s.io/kubernetes pins, from its server module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
cat >"$kdir/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
EOF
(cd "$kdir" && go mod tidy) >>"$log" 2>&1 || { tail -30 "$log"; exit 1; }
step "kubernetes: downloading modules"
(cd "$kdir" && go mod download all) >>"$log" 2>&1 || true
minor=$(echo "$K8S_VERSION" | cut -d. -f2)
vflags=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  vflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
  build "$kdir" "$c" "k8s.io/kubernetes/cmd/$c" -ldflags "-s -w $vflags"
done
build "$kdir" etcd ./cmd/etcd -ldflags "-s -w"

# The pause container, from Kubernetes' own source in the module.
step "building pause"
gcc -Os -static -o "$bin/pause" \
  -DVERSION="$K8S_VERSION" "$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c" >>"$log" 2>&1

# The container runtime.
cdir=$(gomod containerd "github.com/containerd/containerd/v2@$CONTAINERD_VERSION")
cat >"$cdir/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
EOF
(cd "$cdir" && go mod tidy) >>"$log" 2>&1 || { tail -30 "$log"; exit 1; }
cver="-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
for c in containerd containerd-shim-runc-v2 ctr; do
  build "$cdir" "$c" "github.com/containerd/containerd/v2/cmd/$c" -tags no_btrfs -ldflags "-s -w $cver"
done
rdir=$(gomod runc "github.com/opencontainers/runc@$RUNC_VERSION")
printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/opencontainers/runc"\n' >"$rdir/tools.go"
(cd "$rdir" && go mod tidy) >>"$log" 2>&1 || { tail -30 "$log"; exit 1; }
build "$rdir" runc github.com/opencontainers/runc -tags seccomp \
  -ldflags "-s -w -X main.version=${RUNC_VERSION#v}"

ndir=$(gomod cni "github.com/containernetworking/plugins@$CNI_PLUGINS_VERSION")
printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "github.com/containernetworking/plugins/plugins/main/bridge"\n\t_ "github.com/containernetworking/plugins/plugins/main/loopback"\n\t_ "github.com/containernetworking/plugins/plugins/ipam/host-local"\n\t_ "github.com/containernetworking/plugins/plugins/meta/portmap"\n)\n' >"$ndir/tools.go"
(cd "$ndir" && go mod tidy) >>"$log" 2>&1 || { tail -30 "$log"; exit 1; }
mkdir -p "$bin/cni"
for p in main/bridge main/loopback ipam/host-local meta/portmap; do
  build "$ndir" "cni/$(basename $p)" "github.com/containernetworking/plugins/plugins/$p" -ldflags "-s -w"
done

# crictl, with which k8s-down removes every pod sandbox through the CRI.
tdir=$(gomod critools "sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION")
printf '//go:build tools\n\npackage tools\n\nimport _ "sigs.k8s.io/cri-tools/cmd/crictl"\n' >"$tdir/tools.go"
(cd "$tdir" && go mod tidy) >>"$log" 2>&1 || { tail -30 "$log"; exit 1; }
build "$tdir" crictl sigs.k8s.io/cri-tools/cmd/crictl -ldflags "-s -w"

# Cluster DNS: CoreDNS with the plugins kind's Corefile uses, as CoreDNS documents for
# a build of one's own (dnsserver.Directives in plugin.cfg's order).
ddir=$(gomod coredns "github.com/coredns/coredns@$COREDNS_VERSION")
mkdir -p "$ddir/cmd/coredns"
cat >"$ddir/cmd/coredns/main.go" <<'EOF'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func init() {
	dnsserver.Directives = []string{"reload", "ready", "health", "errors", "log",
		"loadbalance", "cache", "kubernetes", "loop", "forward"}
}

func main() { coremain.Run() }
EOF
(cd "$ddir" && go mod tidy) >>"$log" 2>&1 || { tail -30 "$log"; exit 1; }
# static: its image holds the binary alone, no libc
CGO_ENABLED=0 build "$ddir" coredns ./cmd/coredns -ldflags "-s -w"

# KubeRay's operator, static: its image holds the binary alone, as KubeRay's own does.
odir=$(gomod kuberay "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION")
printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/ray-project/kuberay/ray-operator"\n' >"$odir/tools.go"
(cd "$odir" && go mod tidy) >>"$log" 2>&1 || { tail -30 "$log"; exit 1; }
CGO_ENABLED=0 build "$odir" ray-operator github.com/ray-project/kuberay/ray-operator -ldflags "-s -w"
# Its Helm chart, from the repository's root module at the same version: what
# `helm pull kuberay/kuberay-operator` gives where the chart repository can be reached.
step "KubeRay's Helm chart"
chart=$(cd "$odir" && go mod download -json "github.com/ray-project/kuberay@$KUBERAY_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
rm -rf "$out/chart" && mkdir -p "$out/chart" && cp -r "$chart/helm-chart/kuberay-operator" "$out/chart/" \
  && chmod -R u+w "$out/chart"

# kind and helm: the kit's kind provider runs them (make e2e-k8s runs its lines on these).
kidir=$(gomod kind "sigs.k8s.io/kind@$KIND_VERSION")
printf '//go:build tools\n\npackage tools\n\nimport _ "sigs.k8s.io/kind"\n' >"$kidir/tools.go"
(cd "$kidir" && go mod tidy) >>"$log" 2>&1 || { tail -30 "$log"; exit 1; }
build "$kidir" kind sigs.k8s.io/kind -ldflags "-s -w"
hdir=$(gomod helm "helm.sh/helm/v4@$HELM_VERSION")
printf '//go:build tools\n\npackage tools\n\nimport _ "helm.sh/helm/v4/cmd/helm"\n' >"$hdir/tools.go"
(cd "$hdir" && go mod tidy) >>"$log" 2>&1 || { tail -30 "$log"; exit 1; }
build "$hdir" helm helm.sh/helm/v4/cmd/helm \
  -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"

cp "$here/versions.env" "$out/versions.env"
assets
touch "$out/.complete"
step "k8s build: done, $(du -sh "$bin" | cut -f1) in $bin"
