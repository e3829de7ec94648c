#!/usr/bin/env bash
# leo's main job for a newcomer (make demo; root): brings up the local
# single-node cluster (hack/cluster), installs leo with its Helm chart and
# the images built here, applies a model, an endpoint and a batch run
# (hack/demo/*.yaml), sends the model card's sample request through the
# gateway with the endpoint's key, and prints the answer and the objects'
# status. The cluster stays up for you to explore; `make cluster-down`
# removes it.
#
# The model has RANDOM weights (a stories15M-shaped Llama with the real
# Llama 2 vocabulary, written by `leo-runtime gen-model`): no real model can
# be downloaded here, so its answers are gibberish. Everything else is real:
# the operator's prepare Job quantizes it to q8_0, leo-runtime pods serve it,
# the gateway routes and checks keys, an Indexed Job scores the CSV files.
#
# Idempotent: a second run reuses the cluster, the images and what the first
# run made, and only sends the request again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=hack/cluster/env.sh
source "$root/hack/cluster/env.sh"
helm="${HELM:-$root/bin/helm-v4.3.1}"
ns=leo-demo
gateway_port=30080 # the gateway's NodePort on the node's address
volumes="$state/demo-volumes"
t0=$(date +%s)

step() { printf '\n==> %s\n' "$*"; }
# wait_phase OBJECT PHASE SECONDS: until the object's status.phase is PHASE;
# a Failed phase ends the demo at once with the object's reason.
wait_phase() {
  local phase
  for _ in $(seq "$3"); do
    phase="$("$kubectl" -n "$ns" get "$1" -o jsonpath='{.status.phase}')"
    [ "$phase" = "$2" ] && return 0
    if [ "$phase" = Failed ]; then
      fail "$1 failed: $("$kubectl" -n "$ns" get "$1" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}')"
    fi
    sleep 1
  done
  fail "$1 is not $2 after $3 s (phase \"$phase\")"
}
# wait_job JOB SECONDS: until the Job is Complete; Failed ends the demo at
# once with its condition and the end of its pod's log.
wait_job() {
  local conds
  for _ in $(seq "$2"); do
    # A failed get (the API server busy) is retried, as no condition yet.
    conds="$("$kubectl" -n "$ns" get job "$1" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type} {end}' || true)"
    case " $conds" in
    *" Complete "*) return 0 ;;
    *" Failed "*)
      "$kubectl" -n "$ns" logs "job/$1" --tail=20 >&2 || true
      fail "the Job $1 failed: $("$kubectl" -n "$ns" get job "$1" -o jsonpath='{range .status.conditions[?(@.type=="Failed")]}{.reason}: {.message}{end}')"
      ;;
    esac
    sleep 1
  done
  fail "the Job $1 did not complete in $2 s"
}
since() { echo "$(( $(date +%s) - $1 ))s"; }
fail() {
  echo "demo: $*" >&2
  echo "demo: what leo says: KUBECONFIG=${KUBECONFIG:-} ${kubectl:-kubectl} -n $ns describe lm,oe,bd; logs under $logs" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || { echo "demo: run as root (the cluster starts containerd and the kubelet)" >&2; exit 1; }
[ -x "$helm" ] || { echo "demo: no helm at $helm: run \`make demo\`, which builds it" >&2; exit 1; }

step "bringing up the cluster (hack/cluster/up.sh; the first time it builds Kubernetes from the Go module proxy: about 25 minutes on 2 cores)"
t=$(date +%s)
export KUBECONFIG
KUBECONFIG="$("$root/hack/cluster/up.sh")"
kubectl="$("$root/hack/kube/build.sh" kubectl)/kubectl"
echo "cluster ready in $(since "$t")"

step "installing leo with its Helm chart (charts/leo) into leo-system, with the images built for this cluster"
t=$(date +%s)
tag() { cat "$state/images/$1.tag"; }
"$helm" upgrade --install leo "$root/charts/leo" --namespace leo-system --create-namespace --wait --timeout 5m \
  --set "manager.image.repository=leo.local/leo-manager,manager.image.tag=$(tag leo-manager),manager.image.pullPolicy=Never" \
  --set "runtime.image.repository=leo.local/leo-runtime,runtime.image.tag=$(tag leo-runtime),runtime.image.pullPolicy=Never" \
  --set "gateway.image.repository=leo.local/leo-gateway,gateway.image.tag=$(tag leo-gateway),gateway.image.pullPolicy=Never" \
  --set "gateway.replicas=1,gateway.service.type=NodePort,gateway.service.nodePort=$gateway_port" \
  --set "gateway.externalURL=http://$node_ip:$gateway_port" >/dev/null
"$kubectl" -n leo-system get deploy
echo "installed in $(since "$t")"

step "the weights: volumes on the node, and a Job that writes a random-weight stories15M model (hack/demo/volumes.yaml)"
t=$(date +%s)
# Writable by leo's non-root pods (hostPath volumes get no fsGroup).
mkdir -p "$volumes"/{weights,cache,batch/in,batch/out}
chmod 0777 "$volumes"/{weights,cache,batch,batch/in,batch/out}
sed -e "s|@VOLUMES@|$volumes|g" -e "s|@RUNTIME_IMAGE@|leo.local/leo-runtime:$(tag leo-runtime)|g" "$here/volumes.yaml" |
  "$kubectl" apply -f -
wait_job write-weights 300
ls -l "$volumes/weights"
echo "weights written in $(since "$t")"

# Two small CSV files for the batch run (Azure ML's folder input).
for f in 1 2; do
  {
    echo "id,input_string"
    for r in 1 2 3; do echo "$r,\"Tale $f.$r: once upon a time, there was\""; done
  } >"$volumes/batch/in/tales-$f.csv"
done

step "applying a LlamaModel, an OnlineEndpoint and a BatchDeployment (hack/demo/leo.yaml)"
"$kubectl" apply -f "$here/leo.yaml"

t=$(date +%s)
wait_phase lm/stories Ready 300
echo "LlamaModel stories Ready in $(since "$t") (downloaded from the claim, quantized to q8_0, inspected):"
"$kubectl" -n "$ns" get lm stories -o jsonpath='  artifact {.status.artifact.path} on claim {.status.artifact.claimName}, {.status.artifact.sizeBytes} bytes{"\n"}'
t=$(date +%s)
"$kubectl" -n "$ns" wait --for=condition=Ready oe/chat --timeout=5m >/dev/null ||
  fail "OnlineEndpoint chat is not Ready"
echo "OnlineEndpoint chat Ready in $(since "$t")"

step "the model card's sample request, through the gateway, with the endpoint's key"
uri="$("$kubectl" -n "$ns" get oe chat -o jsonpath='{.status.scoringURI}')"
secret="$("$kubectl" -n "$ns" get oe chat -o jsonpath='{.status.keysSecretName}')"
key="$("$kubectl" -n "$ns" get secret "$secret" -o jsonpath='{.data.primaryKey}' | base64 -d)"
sample='{"input_data": {"input_string": ["I believe the meaning of life is"], "parameters": {"top_p": 0.9, "temperature": 0.6, "max_new_tokens": 32, "do_sample": true}}}'
echo "POST $uri"
echo "$sample"
answer="$(curl -sS --fail-with-body -m 60 -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d "$sample" "$uri")" ||
  fail "the request failed: $answer"
echo "answer (random weights, so gibberish):"
echo "$answer"
code="$(curl -sS -o /dev/null -w '%{http_code}' -m 60 -H 'Content-Type: application/json' -d "$sample" "$uri")"
echo "the same request without the key: HTTP $code"

step "the batch run over the CSV files"
t=$(date +%s)
wait_phase bd/stories-batch Succeeded 300
echo "BatchDeployment stories-batch Succeeded (waited $(since "$t")); predictions.csv (row, prediction, file):"
cat "$volumes/batch/out/predictions.csv"

step "status"
"$kubectl" -n "$ns" get lm,oe,bd
echo
"$kubectl" -n "$ns" get pods

cat <<EOF

demo done in $(since "$t0"). The cluster stays up:
  export KUBECONFIG=$KUBECONFIG
  $kubectl -n $ns get lm,oe,bd
  curl -H "Authorization: Bearer \$KEY" -H 'Content-Type: application/json' -d '...' $uri
  OpenAI API: $("$kubectl" -n "$ns" get oe chat -o jsonpath='{.status.openAIBaseURL}')
Remove it all: make cluster-down
EOF
