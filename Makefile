# leo: the Kubernetes operator for managed Llama endpoints.
#
#   make demo       set everything up and run the main job (see README.md)
#   make test       everything CI checks: generated files, API validation
#                   against a real kube-apiserver, controllers, the manager
#                   binary, the Helm chart, the demo
#   make lint       go vet and golangci-lint
#
# Nothing is installed by hand: Kubernetes test binaries are built from the Go
# module proxy into bin/ (hack/kube/build.sh) and reused on later runs.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

GO ?= go
CONTROLLER_GEN := $(GO) tool controller-gen
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := bin/golangci-lint-$(GOLANGCI_LINT_VERSION)
HELM_VERSION := v4.3.1
HELM := bin/helm-$(HELM_VERSION)
# The kube-apiserver and etcd that envtest starts, built from source.
KUBE_BIN_DIR = $(shell hack/kube/build.sh)
VERSITYGW = $(shell hack/versitygw/build.sh)

.PHONY: all
all: generate manifests build

##@ Generated files (committed; test/generated_test.go fails when stale)

.PHONY: generate
generate: ## deepcopy functions of the API types
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: ## CRDs and RBAC from the +kubebuilder markers, copied into the Helm chart too
	$(CONTROLLER_GEN) crd:allowDangerousTypes=true rbac:roleName=leo-manager paths=./api/... paths=./controllers/... paths=./cmd/... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	mkdir -p charts/leo/crds charts/leo/files && cp config/crd/bases/*.yaml charts/leo/crds/
	sed -n '/^rules:/,$$p' config/rbac/role.yaml > charts/leo/files/manager-rules.yaml

##@ Build

.PHONY: build
build: ## the manager, leo-runtime and leo-gateway binaries
	$(GO) build -trimpath -o bin/manager ./cmd/manager
	$(GO) build -trimpath -o bin/leo-runtime ./cmd/leo-runtime
	$(GO) build -trimpath -o bin/leo-gateway ./cmd/leo-gateway

.PHONY: cluster-up
cluster-up: ## a single-node Kubernetes on this machine (root): control plane, containerd, kubelet, kube-proxy, leo's images (hack/cluster)
	hack/cluster/up.sh

.PHONY: test-e2e
test-e2e: $(HELM) ## end-to-end tests on the local cluster (root; brings it up, leaves it up: make cluster-down)
	hack/cluster/up.sh
	LEO_E2E_KUBECONFIG="$(CURDIR)/bin/cluster/admin.kubeconfig" HELM="$(CURDIR)/$(HELM)" $(GO) test -tags e2e -count=1 -timeout 30m -v ./test/e2e

.PHONY: cluster-down
cluster-down: ## stop it and undo its changes to the host; fails listing anything left behind
	hack/cluster/down.sh

.PHONY: kube-bins
kube-bins: ## build kube-apiserver and etcd for envtest into bin/kube/<version> (cached)
	hack/kube/build.sh

.PHONY: s3-bins
s3-bins: ## build versitygw (the real S3 server of the weights and batch tests) into bin/versitygw/<version> (cached)
	hack/versitygw/build.sh

.PHONY: cuda
cuda: ## build the CUDA kernels into bin/libleo_cuda.so (needs nvcc; leo-runtime finds it beside itself or through $$LEO_CUDA_LIB)
	hack/gpu/build.sh bin/libleo_cuda.so

.PHONY: gpu-check-build
gpu-check-build: ## build what hack/gpu/check.sh runs on a GPU machine (which has no Go): bin/gpu/cuda.test and bin/gpu/leo-runtime
	CGO_ENABLED=1 $(GO) test -c -tags cuda -ldflags="-s -w" -o bin/gpu/cuda.test ./runtime/cuda
	CGO_ENABLED=1 $(GO) build -ldflags="-s -w" -o bin/gpu/leo-runtime ./cmd/leo-runtime

##@ Run

.PHONY: demo
demo: $(HELM) ## the main job (root): the local cluster, leo installed by its chart, a model, an endpoint and a batch run applied, the sample request through the gateway; the cluster stays up (make cluster-down)
	HELM="$(CURDIR)/$(HELM)" hack/demo/demo.sh

.PHONY: demo-api
demo-api: kube-bins ## no root, no node: a bare control plane and the controllers, the samples applied, their status
	$(GO) run ./hack/demo-api

##@ Test

.PHONY: test
test: kube-bins s3-bins $(HELM) ## all tests, against a real kube-apiserver and etcd (and S3 server); the serving packages again under the race detector with the controllers; then the fuzzers briefly
	@# g++: the CUDA kernels' CPU emulation (runtime/cuda/emu) is built by go test
	command -v $${CXX:-g++} >/dev/null || (apt-get update -qq && apt-get install -y -qq g++)
	KUBEBUILDER_ASSETS="$(KUBE_BIN_DIR)" VERSITYGW="$(VERSITYGW)" HELM="$(CURDIR)/$(HELM)" $(GO) test -count=1 -timeout 30m ./...
	$(GO) test -race -count=1 ./runtime/model ./runtime/engine ./runtime/server ./runtime/cpu ./controllers/... ./gateway
	$(MAKE) fuzz

# Fuzz targets of parsers of untrusted input: package:target:executions.
# Budgets are execution counts, not durations: with a duration, Go 1.26's
# fuzz coordinator can fail a clean run with "context deadline exceeded"
# when the time runs out under CPU load (go.dev/issue/75804, fixed in 1.27).
# Each count is about 5-10 s on a 2-core machine.
FUZZ_TARGETS := ./runtime/gguf:FuzzParse:300000 ./runtime/llama2c:FuzzParse:300000 \
	./runtime/tokenizer:FuzzEncode:40000 ./runtime/tokenizer:FuzzParseSentencePiece:60000 \
	./runtime/quant:FuzzDequantize:100000 ./runtime/sample:FuzzStopMatcher:300000 \
	./runtime/server:FuzzDecodeScore:30000 ./runtime/server:FuzzDecodeCompletion:30000 \
	./runtime/server:FuzzDecodeChat:30000 ./runtime/chat:FuzzEncode:40000 ./gateway/route:FuzzParse:50000 \
	./runtime/fetch:FuzzSourceAndRanges:100000 ./runtime/safetensors:FuzzParseHeader:50000 \
	./runtime/batchio:FuzzParseCSV:80000 ./runtime/batchio:FuzzParseJSONL:40000 \
	./runtime/batchio:FuzzAppendPrediction:150000 ./runtime/batchio:FuzzAppendOpenAIResult:80000 \
	./runtime/tokenizer:FuzzParseHFTokenizerJSON:30000
FUZZ_SCALE ?= 1

.PHONY: fuzz
fuzz: ## run each fuzz target from its seed corpus for its execution budget (times FUZZ_SCALE)
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; rest=$${t#*:}; name=$${rest%%:*}; n=$$(( $${rest##*:} * $(FUZZ_SCALE) )); \
		echo "fuzz $$pkg $$name for $$n executions"; \
		$(GO) test -run='^$$' -fuzz="^$$name$$" -fuzztime=$${n}x "$$pkg" || exit 1; \
	done

.PHONY: bench-serve
bench-serve: ## the HTTP server under load: 1 vs 16 streams, 64 clients (429s), time to first token, on a stories110M-shaped Q8_0 model
	mkdir -p bin/models
	test -f bin/models/stories110M-q8_0.gguf || $(GO) run ./cmd/leo-runtime gen-model --shape stories110M --type q8_0 -o bin/models/stories110M-q8_0.gguf
	$(GO) run ./cmd/leo-runtime bench-serve --model bin/models/stories110M-q8_0.gguf $(BENCH_SERVE_FLAGS)

.PHONY: bench-batch
bench-batch: ## leo-runtime batch on 1,000 short prompts, stories15M-shaped Q8_0: continuous batching (16) vs one at a time, alternating
	mkdir -p bin/models
	test -f bin/models/stories15M-q8_0.gguf || $(GO) run ./cmd/leo-runtime gen-model --shape stories15M --type q8_0 -o bin/models/stories15M-q8_0.gguf
	LEO_BENCH_MODEL=$(CURDIR)/bin/models/stories15M-q8_0.gguf $(GO) test -run '^$$' -bench BatchThroughput -benchtime 1x ./cmd/leo-runtime

.PHONY: bench-gateway
bench-gateway: ## what leo-gateway adds to a request on loopback: /score straight to a runtime server vs through the gateway, alternating, medians
	$(GO) test -run '^$$' -bench GatewayOverhead -benchtime 1x -count 3 ./gateway

.PHONY: bench-operator
bench-operator: kube-bins ## the operator against a real API server: 200 OnlineEndpoints from scratch (time to settle, API writes), then a restarted manager's writes (0)
	KUBEBUILDER_ASSETS="$(KUBE_BIN_DIR)" $(GO) test -run '^$$' -bench Settle -benchtime 1x -count 3 ./controllers/scale

.PHONY: bench-pull
bench-pull: ## leo-runtime pull vs curl: one 1 GiB file from a loopback HTTP server, alternating
	command -v curl >/dev/null || (apt-get update -qq && apt-get install -y -qq curl)
	$(GO) run ./hack/benchpull

.PHONY: bench
bench: ## leo-runtime vs llama.cpp on TinyLlama-1.1B-shaped Q4_0 and Q8_0 files, 1 and 2 threads (installs the peer)
	$(GO) run ./hack/bench

.PHONY: lint
lint: $(GOLANGCI_LINT) ## go vet and golangci-lint
	$(GO) vet -tags e2e,cuda ./...
	$(GOLANGCI_LINT) run --build-tags e2e,cuda ./...

$(GOLANGCI_LINT):
	GOBIN="$(CURDIR)/bin/tmp-golangci" $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv bin/tmp-golangci/golangci-lint $@ && rmdir bin/tmp-golangci

# Helm renders and lints the chart in test/chart_test.go.
$(HELM):
	GOBIN="$(CURDIR)/bin/tmp-helm" $(GO) install -trimpath helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)
	mv bin/tmp-helm/helm $@ && rmdir bin/tmp-helm

.PHONY: clean
clean: ## remove build outputs (keeps the Kubernetes binary cache; `rm -rf bin` drops it)
	rm -f bin/manager bin/leo-runtime

.PHONY: help
help:
	@awk 'BEGIN{FS=":.*##"} /^[a-z-]+:.*##/ {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
