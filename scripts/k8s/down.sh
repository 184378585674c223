#!/usr/bin/env bash
# make k8s-down: stop what up.sh started and leave none of it: processes (by the PIDs up
# recorded, and the runtime's shims), mounts under $RUN, the bridge and the pods' veths,
# kube-proxy's and our iptables rules, $RUN itself. The results volumes ($VOLUMES) stay.
# Ends by checking against the snapshot up took, and fails naming whatever is left.
set -uo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
t0=$(date +%s.%N)
[ -d "$RUN" ] || { echo "k8s-down: nothing is up ($RUN does not exist)"; exit 0; }
pid_of() { awk -v n="$1" '$1 == n {print $2}' "$RUN/pids" 2>/dev/null; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
stop() { # name...: SIGTERM, then SIGKILL after 15 s
  for n in "$@"; do
    local p; p=$(pid_of "$n")
    alive "$p" || continue
    kill "$p" 2>/dev/null
    for _ in $(seq 1 30); do alive "$p" || break; sleep 0.5; done
    alive "$p" && kill -9 "$p" 2>/dev/null
  done
}

# The operator and the control loops first, so nothing re-creates what goes next.
stop kube-controller-manager kube-scheduler
sock=$RUN/containerd/containerd.sock
if [ -S "$sock" ]; then
  step "pods: every sandbox stopped and removed through the CRI (the CNI deletes their veths)"
  stop kubelet
  export CONTAINER_RUNTIME_ENDPOINT=unix://$sock
  if [ -x "$bin/crictl" ]; then
    timeout 120 "$bin/crictl" --timeout 60s rmp --all --force >/dev/null 2>&1 || true
  fi
fi
stop kubelet kube-proxy containerd kube-apiserver etcd
# A shim outlives containerd when a sandbox could not be removed: its PID is under $RUN.
for f in "$RUN"/containerd/state/io.containerd.runtime.v2.task/*/*/init.pid "$RUN"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
  [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
done

step "mounts under $RUN"
for _ in 1 2 3; do
  mapfile -t ms < <(awk -v r="$RUN" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r)
  ((${#ms[@]})) || break
  for m in "${ms[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
done

step "network: kube-proxy's rules, ours, the bridge"
[ -x "$bin/kube-proxy" ] && "$bin/kube-proxy" --cleanup >/dev/null 2>&1
while iptables -D FORWARD -i "$BRIDGE" -m comment --comment "$TAG" -j ACCEPT 2>/dev/null; do :; done
while iptables -D FORWARD -o "$BRIDGE" -m comment --comment "$TAG" -j ACCEPT 2>/dev/null; do :; done
# The kubelet's own chains (KUBE-FIREWALL, its canaries), which kube-proxy --cleanup
# leaves, and CNI's portmap chains where the runtime died before removing its pods: every
# KUBE-/CNI- chain that was not there before up, and the rules that jump to it.
purge_chains() { # iptables | ip6tables
  local ipt=$1 table chains c
  for table in filter nat mangle; do
    chains=$("$ipt" -t "$table" -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/ {print $2}')
    for c in $chains; do
      grep -qx ":$c - " "$RUN/before/$ipt.$table" 2>/dev/null && continue
      "$ipt" -t "$table" -S | grep -- "^-A .* -j $c\( \|$\)" | sed 's/^-A/-D/' |
        while read -r rule; do eval "$ipt" -t "$table" "$rule" 2>/dev/null; done
      "$ipt" -t "$table" -F "$c" 2>/dev/null
    done
    for c in $chains; do "$ipt" -t "$table" -X "$c" 2>/dev/null; done
  done
}
purge_chains iptables
purge_chains ip6tables
for v in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
  ip link del "$v" 2>/dev/null
done
ip link del "$BRIDGE" 2>/dev/null
[ -f "$RUN/before/ip_forward" ] && cat "$RUN/before/ip_forward" >/proc/sys/net/ipv4/ip_forward
# The kubelet's QoS cgroups (cgroupfs driver), innermost first.
for c in /sys/fs/cgroup/*/kubepods; do
  [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
done

step "check: nothing of ours left"
left=()
for n in $(awk '{print $1}' "$RUN/pids" 2>/dev/null); do
  alive "$(pid_of "$n")" && left+=("process $n (pid $(pid_of "$n"))")
done
for p in /proc/[0-9]*; do
  exe=$(readlink "$p/exe" 2>/dev/null) || continue
  case $exe in "$bin"/*) left+=("process ${exe##*/} (pid ${p#/proc/})") ;; esac
done
while read -r m; do left+=("mount $m"); done < <(awk -v r="$RUN" 'index($2, r) == 1 {print $2}' /proc/self/mounts)
ip link show "$BRIDGE" >/dev/null 2>&1 && left+=("link $BRIDGE")
if [ -f "$RUN/before/links" ]; then
  now=$(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort)
  for l in $(comm -13 "$RUN/before/links" <(echo "$now") | grep '^veth'); do left+=("link $l"); done
fi
for ipt in iptables ip6tables; do
  while read -r r; do left+=("$ipt $r"); done < <("$ipt-save" | grep -E -- "KUBE-|CNI-|$TAG" | grep -v '^#')
done
if ((${#left[@]})); then
  printf 'k8s-down: left behind: %s\n' "${left[@]}" >&2
  echo "k8s-down: kept $RUN (logs in $RUN/logs); run make k8s-down again" >&2
  exit 1
fi
rm -rf "$K8S_CACHE/last-logs" && cp -r "$RUN/logs" "$K8S_CACHE/last-logs" 2>/dev/null && cp -r "$RUN/pod-logs" "$K8S_CACHE/last-logs/pods" 2>/dev/null
rm -rf "$RUN"
step "k8s down: no process, mount, link or iptables rule of the cluster's left (logs: $K8S_CACHE/last-logs; results volumes kept in $VOLUMES)"
