#!/usr/bin/env bash
# Stops the local cluster hack/cluster/up.sh started and undoes what it and
# its components changed on this machine, then checks that nothing is left:
# no process, mount, network namespace, bridge, address, iptables rule or
# kubepods cgroup. Exits 1, listing them, if something is.
#
#   hack/cluster/down.sh      (make cluster-down)
#
# The order matters: the pods go first, through the kubelet and the CRI, so
# that the CNI plugins release their addresses; then the Kubernetes
# components, containerd and the shims it left (by PID).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=hack/cluster/env.sh
source "$here/env.sh"
kube_version="$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$root/hack/kube/go.mod")"
kube_bin="${KUBE_BIN_DIR:-$root/bin/kube/$kube_version}"

[ "$(id -u)" = 0 ] || { echo "cluster-down: run as root" >&2; exit 1; }
[ -d "$state" ] || { echo "cluster-down: no cluster state in $state: nothing to do" >&2; }

pid_of() { [ -f "$pids/$1.pid" ] && cat "$pids/$1.pid"; }
alive() { local p; p="$(pid_of "$1")" && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
stop() { # name: TERM, then KILL after 10 s
  local p; p="$(pid_of "$1")" || return 0
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$p" 2>/dev/null
  sleep 0.2
}
ctr_() { ctr --address "$containerd_sock" -n k8s.io "$@"; }

# 1. The pods, while the kubelet still runs: it stops their sandboxes
# through the CRI, and the CNI plugins free their addresses.
if alive kubelet && alive kube-apiserver; then
  "$kube_bin/kubectl" --kubeconfig "$state/admin.kubeconfig" delete pods --all --all-namespaces \
    --grace-period=0 --force --wait=false >/dev/null 2>&1
  "$kube_bin/kubectl" --kubeconfig "$state/admin.kubeconfig" delete node "$node_name" --wait=false >/dev/null 2>&1
  for _ in $(seq 150); do
    [ -z "$(ctr_ tasks ls -q 2>/dev/null)" ] && break
    sleep 0.2
  done
fi
# 2. The components, then containerd.
for c in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$c"; done
# Tasks the kubelet did not stop (it was not running): killed through
# containerd while it is still up.
if alive containerd; then
  for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
  sleep 0.5
fi
stop containerd
# 3. The shims containerd started (they outlive it) and any process of a
# container still running.
for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $containerd_sock" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
for f in "$state"/containerd/state/io.containerd.runtime.v2.task/*/*/init.pid; do
  [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
done
sleep 0.3

# 4. iptables: kube-proxy's own cleanup, then any KUBE-/CNI- rule or chain
# left (kube-proxy --cleanup leaves a jump behind).
[ -x "$kube_bin/kube-proxy" ] && "$kube_bin/kube-proxy" --cleanup >/dev/null 2>&1
for table in filter nat mangle raw; do
  iptables-save -t "$table" 2>/dev/null | grep -E '^-A ' | grep -E 'KUBE-|CNI-' | sed 's/^-A /-D /' | while read -r rule; do
    eval "iptables -t $table $rule" 2>/dev/null
  done
  for chain in $(iptables-save -t "$table" 2>/dev/null | grep -oE '^:(KUBE|CNI)-[^ ]+' | cut -c2-); do
    iptables -t "$table" -F "$chain" 2>/dev/null
  done
  for chain in $(iptables-save -t "$table" 2>/dev/null | grep -oE '^:(KUBE|CNI)-[^ ]+' | cut -c2-); do
    iptables -t "$table" -X "$chain" 2>/dev/null
  done
done

# 5. Mounts under the state directory (pod volumes, the containers'
# rootfs, shm), deepest first; network namespaces of pods.
awk -v s="$state" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
for ns in /run/netns/cni-*; do
  [ -e "$ns" ] || continue
  umount -l "$ns" 2>/dev/null
  rm -f "$ns"
done

# 6. The bridge, the node's address, the CNI plugins' and the kubelet's
# files outside the state directory (kept if they were there before).
ip link del "$bridge" 2>/dev/null
ip addr del "$node_ip/32" dev lo 2>/dev/null
before="$state/host.before"
existed() { [ -f "$before" ] && grep -qx "existed $1" "$before"; }
rm -rf /var/lib/cni/networks/leo /var/lib/cni/results/leo-* 2>/dev/null
existed /var/lib/cni || rm -rf /var/lib/cni
existed /var/log/containers || rm -rf /var/log/containers
existed /var/log/pods || rm -rf /var/log/pods
existed /var/lib/kubelet || rm -rf /var/lib/kubelet
existed /run/netns || rmdir /run/netns 2>/dev/null

# 7. The kubelet's cgroups, deepest first.
for d in /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/kubepods*; do
  [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
done

# 8. Sysctls the kubelet and the bridge plugin changed.
if [ -f "$before" ]; then
  grep '^sysctl ' "$before" | cut -d' ' -f2 | while read -r kv; do sysctl -qw "$kv" >/dev/null 2>&1; done
fi

# 9. The state itself (etcd's data, certificates, logs): the next up.sh
# starts a fresh cluster.
rm -rf "$state"

# 10. Check that nothing is left.
left=()
procs="$(pgrep -af "$state|containerd-shim-runc-v2 .*$containerd_sock" 2>/dev/null | grep -v "$$" || true)"
[ -n "$procs" ] && left+=("processes: $procs")
mounts="$(awk -v s="$state" 'index($2, s) == 1' /proc/mounts)"
[ -n "$mounts" ] && left+=("mounts: $mounts")
ip link show "$bridge" >/dev/null 2>&1 && left+=("bridge $bridge")
ip -4 addr show dev lo | grep -q " $node_ip/32" && left+=("address $node_ip on lo")
rules="$(iptables-save 2>/dev/null | grep -E 'KUBE-|CNI-' || true)"
[ -n "$rules" ] && left+=("iptables: $rules")
ls /run/netns/cni-* >/dev/null 2>&1 && left+=("network namespaces: $(ls /run/netns/cni-*)")
cg="$(ls -d /sys/fs/cgroup/*/kubepods* 2>/dev/null || true)"
[ -n "$cg" ] && left+=("cgroups: $cg")
if [ ${#left[@]} -gt 0 ]; then
  echo "cluster-down: left behind:" >&2
  printf '  %s\n' "${left[@]}" >&2
  exit 1
fi
echo "cluster down: no process, mount, bridge, address, iptables rule or cgroup left" >&2
