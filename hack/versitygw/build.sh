#!/usr/bin/env bash
# Builds Versity's S3 gateway, versitygw (a real S3 server that serves a
# POSIX directory; used by the weights pipeline's and batch scoring's
# tests), from the Go module proxy into bin/versitygw/<version>/ and prints
# the binary's path.
#
# Why versitygw: it is a production S3 server whose build is small (about
# 2.5 minutes cold on 2 cores). SeaweedFS's weed, used before, took about
# 18 minutes of CPU cold, the largest single item of a cold CI run.
# Cached: a binary already there is reused.
set -euo pipefail

version=v1.8.0
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/bin/versitygw/$version"
if [ -x "$out/versitygw" ]; then
  echo "$out/versitygw"
  exit 0
fi
mkdir -p "$out"
echo "building versitygw $version into $out (cold: about 2.5 minutes; cached afterwards)" >&2
start=$(date +%s)
tmp="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# go install pkg@version builds with the module's own go.mod (it has no
# replace directives), outside leo's dependency graph.
GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "github.com/versity/versitygw/cmd/versitygw@$version"
mv "$tmp/versitygw" "$out/versitygw"
echo "built versitygw in $(( $(date +%s) - start ))s" >&2
echo "$out/versitygw"
