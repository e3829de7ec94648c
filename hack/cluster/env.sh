# Settings shared by hack/cluster/up.sh and down.sh (sourced; $root set).
state="${LEO_CLUSTER_DIR:-$root/bin/cluster}"
logs="$state/logs"
pids="$state/pids"
pki="$state/pki"
# A private address on lo: the apiserver's and the node's (see up.sh).
node_ip="${LEO_NODE_IP:-10.77.0.1}"
node_name="leo-node"
etcd_port=23791
etcd_peer_port=23801
service_cidr="10.96.0.0/16"
service_ip="10.96.0.1"
cluster_cidr="10.244.0.0/16"
pod_cidr="10.244.0.0/24"
bridge="leo0"
containerd_sock="$state/containerd/containerd.sock"
