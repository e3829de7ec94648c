#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (a real S3-compatible object store, used by the
# weights pipeline's tests) from the Go module proxy into
# bin/seaweedfs/<version>/ and prints the binary's path.
#
# Why not `go install pkg@version`: SeaweedFS's go.mod has a replace
# directive, which go install refuses; building inside the downloaded
# module (read-only, as its own main module) honours it. Cached: a binary
# already there is reused (cold: several minutes on 2 cores).
set -euo pipefail

version=v0.0.0-20261109003541-7506e5f91cd6
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/bin/seaweedfs/$version"
if [ -x "$out/weed" ]; then
  echo "$out/weed"
  exit 0
fi
mkdir -p "$out"
dir="$(cd "$root" && go mod download -json "github.com/seaweedfs/seaweedfs@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
if [ -z "$dir" ] || [ ! -d "$dir" ]; then
  echo "hack/seaweedfs/build.sh: could not download github.com/seaweedfs/seaweedfs@$version" >&2
  exit 1
fi
echo "building weed $version into $out (cold: several minutes; cached afterwards)" >&2
start=$(date +%s)
(cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/weed.tmp" ./weed)
mv "$out/weed.tmp" "$out/weed"
echo "built weed in $(( $(date +%s) - start ))s" >&2
echo "$out/weed"
