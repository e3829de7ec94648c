# leo-runtime for GPU nodes: the Go binary, and beside it libleo_cuda.so
# (runtime/cuda's kernels), on NVIDIA's CUDA runtime image (which carries
# cuBLAS). leo-runtime finds the library in its own directory and uses the
# GPU when the pod has one (nvidia.com/gpu), else the CPU, saying which
# once at start. Build from the repository root:
#
#   docker build -f build/leo-runtime.Dockerfile -t <registry>/leo-runtime:<tag> .
#
# The local cluster (hack/cluster) does not use this file: its images are
# CPU-only and built without Docker by hack/images.
ARG CUDA_VERSION=12.8.1
ARG UBUNTU=ubuntu24.04

# The kernels, for Ampere (sm_80) and Hopper (sm_90) plus PTX for newer.
FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU} AS kernels
WORKDIR /src
COPY runtime/cuda/ runtime/cuda/
COPY hack/gpu/build.sh hack/gpu/build.sh
RUN hack/gpu/build.sh /out/libleo_cuda.so

# The Go binary, with cgo: the library is loaded with dlopen at run time,
# so nothing of CUDA is linked in and the same binary runs on CPU nodes.
FROM golang:1.26-bookworm AS runtime
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build -trimpath -ldflags="-s -w" -o /out/leo-runtime ./cmd/leo-runtime

FROM nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU}
COPY --from=kernels /out/libleo_cuda.so /opt/leo/libleo_cuda.so
COPY --from=runtime /out/leo-runtime /opt/leo/leo-runtime
RUN ln -s /opt/leo/leo-runtime /usr/local/bin/leo-runtime
USER 65532:65532
ENTRYPOINT ["/opt/leo/leo-runtime"]
