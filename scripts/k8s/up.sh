#!/usr/bin/env bash
# make k8s-up: a real one-node Kubernetes on this machine, each component a host process
# as Kubernetes' hack/local-up-cluster.sh runs them: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, a kubelet on containerd + runc, CNI bridge
# networking, kube-proxy, CoreDNS (a pod), and KubeRay's operator (its Helm chart, a pod).
# Binaries from build.sh's cache (a later up needs no network); state under $RUN, which
# `make k8s-down` removes.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
t0=$(date +%s.%N)

if [ -f "$RUN/pids" ]; then
  echo "k8s-up: a cluster is already up (KUBECONFIG=$RUN/kubeconfig); make k8s-down first" >&2
  exit 1
fi
need=()
for t in openssl:openssl iptables:iptables ip:iproute2 conntrack:conntrack curl:curl bc:bc; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if ((${#need[@]})); then
  echo "k8s-up: installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
"$here/build.sh"
mkdir -p "$RUN"/{pki,logs,before} "$VOLUMES"
chmod 0700 "$RUN"
# If anything below fails, take down what was started.
trap 'echo "k8s-up: failed; logs in $RUN/logs; taking down what started" >&2; "$here/down.sh" || true' ERR

# What this machine had before: down compares against it (no link or rule of ours left).
for ipt in iptables ip6tables; do
  for table in filter nat mangle; do
    "$ipt" -t "$table" -S 2>/dev/null | awk '/^-N/ {print ":" $2 " - "}' >"$RUN/before/$ipt.$table"
  done
done
ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort >"$RUN/before/links"
cat /proc/sys/net/ipv4/ip_forward >"$RUN/before/ip_forward"

started() { echo "$1 $2" >>"$RUN/pids"; } # name pid
launch() {                                # name cmd...: a host process, its log in logs/
  local name=$1; shift
  "$@" >"$RUN/logs/$name.log" 2>&1 &
  started "$name" $!
}
wait_for() { # what seconds log cmd...: the log named when it does not come up
  local what=$1 secs=$2 log=$RUN/logs/$3.log; shift 3
  for _ in $(seq 1 "$secs"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "k8s-up: $what did not come up in $secs s; its log: $log" >&2
  tail -5 "$log" >&2
  return 1
}

step "network: bridge $BRIDGE $HOST_IP, forwarding for $POD_CIDR"
ip link add "$BRIDGE" type bridge
ip addr add "$HOST_IP/16" dev "$BRIDGE"
ip link set "$BRIDGE" up
echo 1 >/proc/sys/net/ipv4/ip_forward
# Docker sets FORWARD's policy to DROP; the pods' own traffic is let through first.
iptables -I FORWARD 1 -i "$BRIDGE" -m comment --comment "$TAG" -j ACCEPT
iptables -I FORWARD 1 -o "$BRIDGE" -m comment --comment "$TAG" -j ACCEPT

step "certificates (a CA of this cluster's own, openssl)"
pki=$RUN/pki
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=rayscale-k8s-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
cert() { # name CN O [sans]
  local n=$1 cn=$2 o=$3 sans=${4:-}
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn${o:+/O=$o}" -keyout "$pki/$n.key" -out "$pki/$n.csr" 2>/dev/null
  local ext=$pki/$n.ext
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n' \
    "$([ -n "$sans" ] && echo serverAuth || echo clientAuth)" >"$ext"
  [ -n "$sans" ] && echo "subjectAltName=$sans" >>"$ext"
  openssl x509 -req -in "$pki/$n.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 30 -extfile "$ext" -out "$pki/$n.crt" 2>/dev/null
}
cert apiserver kube-apiserver "" \
  "IP:$HOST_IP,IP:127.0.0.1,IP:$API_SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
cert admin kubernetes-admin system:masters
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
cert controller-manager system:kube-controller-manager ""
cert scheduler system:kube-scheduler ""
cert kubelet "system:node:$NODE" system:nodes
cert kube-proxy system:kube-proxy ""
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
kubeconfig() { # file user
  local f=$1 u=$2
  "$bin/kubectl" config --kubeconfig "$f" set-cluster "$CONTEXT" --server "https://$HOST_IP:6443" \
    --certificate-authority "$pki/ca.crt" --embed-certs >/dev/null
  "$bin/kubectl" config --kubeconfig "$f" set-credentials "$u" --client-certificate "$pki/$u.crt" \
    --client-key "$pki/$u.key" --embed-certs >/dev/null
  "$bin/kubectl" config --kubeconfig "$f" set-context "$CONTEXT" --cluster "$CONTEXT" --user "$u" >/dev/null
  "$bin/kubectl" config --kubeconfig "$f" use-context "$CONTEXT" >/dev/null
  chmod 0600 "$f"
}
for u in admin controller-manager scheduler kubelet kube-proxy; do
  kubeconfig "$pki/$u.kubeconfig" "$u"
done
cp "$pki/admin.kubeconfig" "$RUN/kubeconfig"

step "etcd $ETCD_VERSION (loopback only)"
launch etcd "$bin/etcd" --name "$NODE" --data-dir "$RUN/etcd" \
  --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
  --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
  --initial-cluster "$NODE=http://127.0.0.1:23800" --listen-metrics-urls http://127.0.0.1:23810
wait_for etcd 30 etcd curl -fsS http://127.0.0.1:23810/health

step "kube-apiserver $K8S_VERSION on $HOST_IP:6443"
launch kube-apiserver "$bin/kube-apiserver" --etcd-servers http://127.0.0.1:23790 \
  --bind-address "$HOST_IP" --advertise-address "$HOST_IP" --secure-port 6443 \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" --authorization-mode Node,RBAC \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types InternalIP,Hostname \
  --enable-admission-plugins NodeRestriction --profiling=false
wait_for kube-apiserver 90 kube-apiserver kc get --raw /readyz

step "kube-controller-manager, kube-scheduler"
launch kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig "$pki/controller-manager.kubeconfig" --bind-address 127.0.0.1 --leader-elect=false \
  --authentication-kubeconfig "$pki/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$pki/controller-manager.kubeconfig" \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --use-service-account-credentials --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false
launch kube-scheduler "$bin/kube-scheduler" --kubeconfig "$pki/scheduler.kubeconfig" \
  --authentication-kubeconfig "$pki/scheduler.kubeconfig" \
  --authorization-kubeconfig "$pki/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false --profiling=false

step "containerd $CONTAINERD_VERSION + runc $RUNC_VERSION"
mkdir -p "$RUN/containerd" "$RUN/cni/net.d" "$RUN/cni/ipam"
cat >"$RUN/containerd/config.toml" <<EOF
version = 3
root = "$RUN/containerd/root"
state = "$RUN/containerd/state"
[grpc]
  address = "$RUN/containerd/containerd.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '$PAUSE_IMAGE'
[plugins.'io.containerd.cri.v1.runtime']
  # Where the host withholds CAP_SYS_RESOURCE (a container, as here), no pod may lower its
  # OOM score below containerd's: runc's write would fail with EACCES.
  restrict_oom_score_adj = $([ "$(($(awk '/CapEff/ {print "0x" $2}' /proc/self/status) >> 24 & 1))" = 1 ] && echo false || echo true)
  # the pods' network namespaces under the state dir, which down unmounts and removes
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '$bin/runc'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['$bin/cni']
    conf_dir = '$RUN/cni/net.d'
EOF
cat >"$RUN/cni/net.d/10-rayscale.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "rayscale-k8s", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$RUN/cni/ipam",
            "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "10.244.1.1", "gateway": "$HOST_IP"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
PATH="$bin:$PATH" launch containerd "$bin/containerd" --config "$RUN/containerd/config.toml"
ctr() { "$bin/ctr" --address "$RUN/containerd/containerd.sock" --namespace k8s.io "$@"; }
wait_for containerd 30 containerd ctr version
step "images: pause, CoreDNS and KubeRay's operator, from the build cache"
for t in "$out"/images/*.tar; do ctr images import --local "$t" >/dev/null; done

step "kubelet $K8S_VERSION (cgroupfs; this host has cgroup v1, which kubelet 1.35+ refuses unless told)"
mkdir -p "$RUN/kubelet" "$RUN/pod-logs" "$RUN/kubelet-plugins"
cat >"$RUN/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $HOST_IP
containerRuntimeEndpoint: unix://$RUN/containerd/containerd.sock
cgroupDriver: cgroupfs
failCgroupV1: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$DNS_IP]
podLogsDir: $RUN/pod-logs
volumePluginDir: $RUN/kubelet-plugins
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
serializeImagePulls: false
# a shared test host: the disk is other people's too
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%}
imageGCHighThresholdPercent: 100
EOF
launch kubelet "$bin/kubelet" --config "$RUN/kubelet.yaml" --kubeconfig "$pki/kubelet.kubeconfig" \
  --root-dir "$RUN/kubelet" --hostname-override "$NODE" --node-ip "$HOST_IP"
wait_for "the node" 90 kubelet kc wait --for=condition=Ready "node/$NODE" --timeout=1s

step "kube-proxy (iptables)"
cat >"$RUN/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $pki/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $NODE
clusterCIDR: $POD_CIDR
bindAddress: $HOST_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# a pod reaching a Service on its own bridge comes back through the host
iptables: {masqueradeAll: true, localhostNodePorts: false}
conntrack: {maxPerCore: 0}
EOF
launch kube-proxy "$bin/kube-proxy" --config "$RUN/kube-proxy.yaml"

step "cluster DNS (CoreDNS $COREDNS_VERSION), storage, KubeRay's CRDs (v1.7.0, shared/)"
sed -e "s|@DNS_IP@|$DNS_IP|g; s|@COREDNS_IMAGE@|$COREDNS_IMAGE|g" "$here/addons.yaml" | kc apply -f - >/dev/null
crds=${KUBERAY_CRDS:-$repo/../shared/kuberay-crds}
kc apply --server-side -f "$crds/ray.io_rayclusters.yaml" -f "$crds/ray.io_rayjobs.yaml" \
  -f "$crds/ray.io_rayservices.yaml" >/dev/null
# Static volumes for the results claims (no provisioner runs here): directories that the
# pods' uid may write, as local-path makes them (0777).
for i in $(seq 1 8); do
  mkdir -p "$VOLUMES/pv$i" && chmod 0777 "$VOLUMES/pv$i"
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: rayscale-local-$i, labels: {app.kubernetes.io/name: rayscale-k8s}}
spec:
  capacity: {storage: 20Gi}
  accessModes: [ReadWriteOnce, ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: rayscale-local
  hostPath: {path: $VOLUMES/pv$i, type: Directory}
EOF
done

wait_for "CoreDNS" 120 kubelet kc -n kube-system wait --for=condition=Available deploy/coredns --timeout=1s
step "KubeRay operator $KUBERAY_VERSION: its Helm chart with the kit's values, as the kind provider installs it"
"$bin/helm" --kube-context "$CONTEXT" upgrade --install kuberay-operator "$out/chart/kuberay-operator" \
  --skip-crds --values "$repo/k8s/operator-values.yaml" --wait --timeout 5m >"$RUN/logs/helm.log" 2>&1 \
  || { tail -5 "$RUN/logs/helm.log" >&2; false; }

trap - ERR
step "k8s up: $("$bin/kubectl" version 2>/dev/null | tr '\n' ' ')"
echo "KUBECONFIG=$RUN/kubeconfig (context $CONTEXT); storage class rayscale-local; make k8s-down stops it"
