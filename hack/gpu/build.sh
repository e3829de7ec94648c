#!/usr/bin/env bash
# build.sh OUT: builds libleo_cuda.so from runtime/cuda/*.cu with nvcc, for
# Ampere (sm_80) and Hopper (sm_90), plus PTX for newer GPUs. `make cuda`
# and hack/gpu/check.sh call it; the runtime image's CUDA stage too.
set -euo pipefail
out=${1:-bin/libleo_cuda.so}
cd "$(dirname "$0")/../.."
mkdir -p "$(dirname "$out")"
# NVCC_CCBIN names the host compiler where nvcc's default is too new for it
# (Debian 12's nvcc 11.8 wants g++-11; see docs/cuda.md).
nvcc -O3 -std=c++17 --threads 0 -shared -Xcompiler -fPIC ${NVCC_CCBIN:+-ccbin "$NVCC_CCBIN"} \
	-gencode arch=compute_80,code=sm_80 \
	-gencode arch=compute_90,code=sm_90 \
	-gencode arch=compute_90,code=compute_90 \
	-o "$out" runtime/cuda/forward.cu -lcublas
