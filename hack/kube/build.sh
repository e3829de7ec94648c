#!/usr/bin/env bash
# Builds Kubernetes and etcd binaries from the Go module proxy into
# bin/kube/<kubernetes version>/ and prints that directory.
#
#   hack/kube/build.sh [component ...]    (default: kube-apiserver etcd)
#
# Why: setup-envtest downloads prebuilt archives from a bucket that cannot be
# reached here (and not offline by users either); every component is a Go
# program, so we build it from the module proxy instead. Binaries already in
# the cache directory are reused; only missing ones are built.
#
# The build flags are go test's defaults on purpose (cgo as the environment
# has it, no -trimpath; -ldflags only matter at link): with the module
# versions hack/kube/go.mod shares with leo's go.mod kept equal (checked by
# test/kube_module_test.go), the Kubernetes libraries the tests use are
# compiled once for both, which saves several minutes of a cold CI run.
# Changing the flags invalidates Go's build cache for all of Kubernetes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

kube_version="$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$here/go.mod")"
etcd_version="$(awk '$1=="go.etcd.io/etcd/server/v3" {print $2}' "$here/go.mod")"
out="${KUBE_BIN_DIR:-$root/bin/kube/$kube_version}"

# Component name -> Go package (each also a `tool` line in hack/kube/go.mod).
# envtest needs the first two; the local cluster (hack/cluster) all of them.
declare -A pkg=(
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [etcd]=go.etcd.io/etcd/server/v3
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
  [kubelet]=k8s.io/kubernetes/cmd/kubelet
  [kube-proxy]=k8s.io/kubernetes/cmd/kube-proxy
  [kubectl]=k8s.io/kubernetes/cmd/kubectl
)

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(kube-apiserver etcd)

minor="${kube_version#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $v.gitVersion=$kube_version -X $v.gitMajor=1 -X $v.gitMinor=$minor"
  ldflags+=" -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z"
done

mkdir -p "$out"
# The missing ones, built by one `go build`: the packages they share are
# compiled once, and one binary's link (single-threaded) overlaps the
# others' compiling.
missing=()
for c in "${components[@]}"; do
  if [ -z "${pkg[$c]:-}" ]; then
    echo "hack/kube/build.sh: unknown component \"$c\" (known: ${!pkg[*]})" >&2
    exit 2
  fi
  [ -x "$out/$c" ] || missing+=("$c")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "building ${missing[*]} ($kube_version, etcd $etcd_version) into $out (cold: 15-25 minutes on 2 cores; cached afterwards)" >&2
  start=$(date +%s)
  tmp="$(mktemp -d "$out/.build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  pkgs=()
  for c in "${missing[@]}"; do pkgs+=("${pkg[$c]}"); done
  (cd "$here" && go build -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
  for c in "${missing[@]}"; do
    # go build names a binary after its package's last element (before a
    # /vN major version): etcd's is "server".
    b="$(basename "${pkg[$c]}")"
    [[ "$b" =~ ^v[0-9]+$ ]] && b="$(basename "$(dirname "${pkg[$c]}")")"
    mv "$tmp/$b" "$out/$c"
  done
  echo "built ${missing[*]} in $(( $(date +%s) - start ))s" >&2
fi
echo "$out"
