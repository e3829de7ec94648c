#!/usr/bin/env bash
# Brings up a single-node Kubernetes cluster on this machine from the real
# components: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet and kube-proxy (built from the Go module proxy by hack/kube), with
# containerd, runc and the CNI plugins from Debian packages (installed when
# missing), and leo's images (hack/images) imported into containerd.
#
#   hack/cluster/up.sh        (make cluster-up; hack/cluster/down.sh undoes it)
#
# Idempotent: a component already running is left alone. Everything it
# starts runs as root from $LEO_CLUSTER_DIR (default bin/cluster): state,
# certificates, kubeconfigs, logs (logs/<component>.log) and PIDs. It prints
# the admin kubeconfig's path last.
#
# Why each odd setting (seen on these machines): the node IP is a private /32
# on lo (pods cannot reach an apiserver on 127.0.0.1, and the kubelet refuses
# a loopback node IP); cgroup v1 with the cgroupfs driver, allowed
# explicitly (failCgroupV1: false); root lacks CAP_SYS_RESOURCE, so runc may
# not lower oom_score_adj (containerd restrict_oom_score_adj, kubelet
# oomScoreAdj 0); no cluster DNS (pods use dnsPolicy Default with an empty
# resolv.conf and reach Services by IP or environment variables).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=hack/cluster/env.sh
source "$here/env.sh"

[ "$(id -u)" = 0 ] || { echo "cluster-up: run as root (it starts containerd and the kubelet)" >&2; exit 1; }
mkdir -p "$state" "$logs" "$pids" "$pki"
start_time=$(date +%s)

# --- binaries and packages ----------------------------------------------
kube_bin="$("$root/hack/kube/build.sh" kube-apiserver etcd kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)"
missing=()
for p in containerd runc containernetworking-plugins iptables iproute2 openssl conntrack curl procps util-linux; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (apt-get)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >"$logs/apt.log" 2>&1 \
    || { echo "apt-get install failed, see $logs/apt.log" >&2; exit 1; }
fi

# --- host state the cluster changes, recorded once for down.sh ----------
if [ ! -f "$state/host.before" ]; then
  {
    for s in kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables; do
      v="$(sysctl -n "$s" 2>/dev/null || true)"; [ -n "$v" ] && echo "sysctl $s=$v"
    done
    [ -e /var/log/containers ] && echo "existed /var/log/containers"
    [ -e /var/log/pods ] && echo "existed /var/log/pods"
    [ -e /var/lib/kubelet ] && echo "existed /var/lib/kubelet"
    [ -e /var/lib/cni ] && echo "existed /var/lib/cni"
    [ -e /run/netns ] && echo "existed /run/netns"
  } >"$state/host.before"
fi

# --- the node's address ---------------------------------------------------
if ! ip -4 addr show dev lo | grep -q " $node_ip/32"; then
  ip addr add "$node_ip/32" dev lo
fi

# --- certificates and kubeconfigs -----------------------------------------
cert() { # name CN O [SANs]
  local n="$1" cn="$2" o="$3" sans="${4:-}"
  [ -f "$pki/$n.crt" ] && return
  openssl genrsa -out "$pki/$n.key" 2048 2>/dev/null
  local subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o/CN=$cn"
  openssl req -new -key "$pki/$n.key" -subj "$subj" -out "$pki/$n.csr" 2>/dev/null
  local ext="$pki/$n.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } >"$ext"
  openssl x509 -req -in "$pki/$n.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$ext" -out "$pki/$n.crt" 2>/dev/null
}
if [ ! -f "$pki/ca.crt" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 3650 \
    -subj "/CN=leo-cluster-ca" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
fi
cert apiserver kube-apiserver "" "IP:$node_ip,IP:127.0.0.1,IP:$service_ip,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
cert admin admin system:masters
cert controller-manager system:kube-controller-manager ""
cert scheduler system:kube-scheduler ""
cert kubelet "system:node:$node_name" system:nodes "IP:$node_ip,DNS:$node_name"
cert kube-proxy system:kube-proxy ""

kubeconfig() { # name cert
  local f="$state/$1.kubeconfig"
  [ -f "$f" ] && return
  cat >"$f" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: leo
  cluster:
    server: https://$node_ip:6443
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 <"$pki/$2.crt")
    client-key-data: $(base64 -w0 <"$pki/$2.key")
contexts:
- name: leo
  context: {cluster: leo, user: $2}
current-context: leo
EOF
}
kubeconfig admin admin
kubeconfig controller-manager controller-manager
kubeconfig scheduler scheduler
kubeconfig kubelet kubelet
kubeconfig kube-proxy kube-proxy

# --- processes ---------------------------------------------------------
# write_file path: stdin into path, only when different (kube-proxy exits
# when its configuration file changes under it).
write_file() {
  local tmp="$1.new"
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}
running() { [ -f "$pids/$1.pid" ] && kill -0 "$(cat "$pids/$1.pid")" 2>/dev/null; }
launch() { # name command...
  local n="$1"; shift
  running "$n" && return
  setsid "$@" >>"$logs/$n.log" 2>&1 </dev/null &
  echo $! >"$pids/$n.pid"
}
wait_for() { # what seconds command...
  local what="$1" secs="$2"; shift 2
  for _ in $(seq $((secs * 5))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "cluster-up: $what not up after ${secs}s; logs in $logs" >&2
  exit 1
}
kubectl() { "$kube_bin/kubectl" --kubeconfig "$state/admin.kubeconfig" "$@"; }

launch etcd "$kube_bin/etcd" --data-dir "$state/etcd" --name leo \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "leo=http://127.0.0.1:$etcd_peer_port" --unsafe-no-fsync
wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health"

launch kube-apiserver "$kube_bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" --bind-address "$node_ip" --advertise-address "$node_ip" --secure-port 6443 \
  --service-cluster-ip-range "$service_cidr" --allow-privileged \
  --client-ca-file "$pki/ca.crt" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local --service-account-key-file "$pki/sa.pub" \
  --service-account-signing-key-file "$pki/sa.key" --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction --kubelet-preferred-address-types InternalIP
wait_for kube-apiserver 60 kubectl get --raw /readyz

launch kube-controller-manager "$kube_bin/kube-controller-manager" --kubeconfig "$state/controller-manager.kubeconfig" \
  --leader-elect=false --use-service-account-credentials --service-account-private-key-file "$pki/sa.key" \
  --root-ca-file "$pki/ca.crt" --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --cluster-cidr "$cluster_cidr" --service-cluster-ip-range "$service_cidr" --bind-address 127.0.0.1
launch kube-scheduler "$kube_bin/kube-scheduler" --kubeconfig "$state/scheduler.kubeconfig" --leader-elect=false --bind-address 127.0.0.1

# containerd with the CRI plugin, its own root, state and socket.
mkdir -p "$state/containerd" "$state/cni/net.d"
write_file "$state/containerd/config.toml" <<EOF
version = 2
root = "$state/containerd/root"
state = "$state/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$containerd_sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$state/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "leo.local/pause:dev"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni/net.d"
EOF
write_file "$state/cni/net.d/10-leo.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "leo",
  "plugins": [
    {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_cidr"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
launch containerd containerd --config "$state/containerd/config.toml"
wait_for containerd 30 ctr --address "$containerd_sock" version

# Images: the pod sandbox's and leo's, built here, imported into k8s.io.
(cd "$root" && go run ./hack/images -out "$state/images" >>"$logs/images.log" 2>&1) \
  || { echo "cluster-up: building images failed, see $logs/images.log" >&2; exit 1; }
for t in "$state"/images/*.tar; do
  ctr --address "$containerd_sock" -n k8s.io images import "$t" >>"$logs/images.log" 2>&1
done

: >"$state/resolv.conf"
write_file "$state/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
oomScoreAdj: 0
containerRuntimeEndpoint: unix://$containerd_sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
resolvConf: $state/resolv.conf
failSwapOn: false
protectKernelDefaults: false
serializeImagePulls: false
# A small disk must not evict leo's pods, nor GC the imported images.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageMinimumGCAge: 87600h
podPidsLimit: -1
EOF
launch kubelet "$kube_bin/kubelet" --config "$state/kubelet.yaml" --kubeconfig "$state/kubelet.kubeconfig" \
  --node-ip "$node_ip" --hostname-override "$node_name" --root-dir "$state/kubelet"
write_file "$state/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $cluster_cidr
hostnameOverride: $node_name
clientConnection: {kubeconfig: $state/kube-proxy.kubeconfig}
conntrack: {maxPerCore: 0}
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
EOF
launch kube-proxy "$kube_bin/kube-proxy" --config "$state/kube-proxy.yaml"

wait_for "node $node_name Ready" 90 bash -c "'$kube_bin/kubectl' --kubeconfig '$state/admin.kubeconfig' get node '$node_name' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
echo "cluster up in $(( $(date +%s) - start_time ))s: node $node_name ($node_ip), logs in $logs" >&2
echo "$state/admin.kubeconfig"
