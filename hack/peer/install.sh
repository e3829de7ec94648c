#!/usr/bin/env bash
# Installs the llama.cpp peer (node-llama-cpp with its prebuilt CPU build for
# linux-x64) into bin/peer/node-llama-cpp-<version>/ and prints that directory.
# Logs go to stderr, so `dir="$(hack/peer/install.sh)"` works.
#
#   hack/peer/install.sh      (LEO_PEER_ROOT=dir installs under dir instead of bin/peer)
#
# Why this way: the install is pinned by hack/peer/package-lock.json and done
# with `npm ci`, so every machine gets the same bytes (integrity hashes) or a
# failure. --omit=optional skips node-llama-cpp's ~730 MB of GPU builds for
# other platforms (linux-x64 is a direct dependency, so it stays);
# --ignore-scripts stops its postinstall from trying to build or download
# llama.cpp. peer.mjs loads it with build: "never" and skipDownload.
#
# Idempotent and cheap when done: the directory holds a stamp with the
# lock file's sha256, and a matching stamp means there is nothing to do.
# Concurrent callers (go test runs packages in parallel) are serialized
# with flock, and a new install is built aside and moved into place, so a
# reader never sees half an install.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

version="$(sed -n 's/^ *"node-llama-cpp": "\([^"]*\)".*/\1/p' "$here/package.json")"
if [ -z "$version" ]; then
  echo "hack/peer/install.sh: no exact \"node-llama-cpp\" version in $here/package.json" >&2
  exit 2
fi
parent="${LEO_PEER_ROOT:-$root/bin/peer}"
out="$parent/node-llama-cpp-$version"
stamp="$out/.leo-peer-installed"

want="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)"
installed() { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }

if installed; then
  echo "$out"
  exit 0
fi

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "hack/peer/install.sh: the peer is pinned to node-llama-cpp's linux-x64 CPU build; this machine is $(uname -s)-$(uname -m)" >&2
  exit 2
fi
for tool in node npm flock; do
  if ! command -v "$tool" >/dev/null; then
    echo "hack/peer/install.sh: $tool is not on PATH; install Node.js 20 or later (with npm) and util-linux" >&2
    exit 2
  fi
done
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "hack/peer/install.sh: node-llama-cpp $version needs Node.js 20 or later; node is $(node --version)" >&2
  exit 2
fi

mkdir -p "$parent"
exec 9>"$parent/.install.lock"
flock 9
# Someone else may have installed it while we waited for the lock.
if installed; then
  echo "$out"
  exit 0
fi

tmp="$(mktemp -d "$parent/.install.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$tmp/"
echo "installing node-llama-cpp $version (CPU build, ~83 MB) into $out" >&2
start=$(date +%s)
(cd "$tmp" && npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error) >&2
# The prebuilt binaries must be there: without them node-llama-cpp would try to
# build llama.cpp from source, which peer.mjs forbids.
if [ ! -f "$tmp/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/llama-addon.node" ]; then
  echo "hack/peer/install.sh: npm ci finished but @node-llama-cpp/linux-x64 has no bins/linux-x64/llama-addon.node" >&2
  exit 1
fi
echo "$want" >"$tmp/.leo-peer-installed"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "installed in $(( $(date +%s) - start ))s" >&2
echo "$out"
