#!/usr/bin/env bash
# check.sh: leo's GPU checks, in one call on a GPU machine (no Go there).
#
# Prepared here with `make gpu-check-build` (Go test binary and leo-runtime
# in bin/gpu), then run there from the repository root:
#
#   hack/gpu/check.sh            # everything: more than one call's 10 minutes
# so, back to back on one warm machine, in order of value, as far as the
# session's 15 minutes of device time go (estimates, not yet timed; the
# machine's start takes one to two of them):
#   STAGES="build correct switches memcheck" hack/gpu/check.sh   # about 6 minutes
#   STAGES="models bench reference" hack/gpu/check.sh            # about 7 minutes
#   STAGES="models ncu big" hack/gpu/check.sh                    # about 5 minutes
# (TYPES="q4_0 f16" makes and measures fewer models.)
#
# Stages: build (nvcc), correct (GPU logits against the CPU backend's),
# switches (the same with the switches that are off by default turned on),
# memcheck (compute-sanitizer on small models), models (gen-model,
# Llama-2 7B shape in f16, q8_0, q4_0), reference (copy bandwidth, HF
# transformers generate() and a CUDA-graph PyTorch decode loop,
# hack/gpu/reference.py), bench (leo's decode, prompt and engine figures,
# and a decode sweep over the switches), big (the Llama-2-70B shape in
# q4_0: generated, loaded, decoded), ncu (Nsight Compute on a decode step's
# kernels and on mmq: duration, DRAM throughput, occupancy).
# Logs go to $OUT/logs.tar.gz (OUT defaults to
# bin/gpu/out) and a table is printed last.
set -uo pipefail
cd "$(dirname "$0")/../.."
STAGES=${STAGES:-build correct switches memcheck models bench ncu reference big}
OUT=${OUT:-bin/gpu/out}
MODELS=${MODELS:-/tmp/leo-models}
mkdir -p "$OUT" "$MODELS"
# The logs are written to LOGS and packed into $OUT/logs.tar.gz at the end,
# also when a timeout stops the script: the device tool brings back at
# most 8 files.
LOGS=$(mktemp -d)
trap 'tar czf "$OUT/logs.tar.gz" -C "$LOGS" . && rm -rf "$LOGS"' EXIT
trap 'exit 143' TERM INT
# The library lives outside bin/gpu, which each call replaces with the
# copy carried from the build machine: on a warm machine it outlasts a call.
export LEO_CUDA_LIB=${LEO_CUDA_LIB:-/tmp/leo-gpu/libleo_cuda.so}
# The library links cuBLAS dynamically: let the loader find CUDA's own.
cuda_home=$(dirname "$(dirname "$(command -v nvcc)")")
export LD_LIBRARY_PATH=$cuda_home/lib64:$cuda_home/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
has() { [[ " $STAGES " == *" $1 "* ]]; }
say() { echo "[check $(date +%T)] $*"; }
summary=()

gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader)
echo "$gpu"
nvcc --version | tail -1

if has build || [ ! -s "$LEO_CUDA_LIB" ]; then
	say "building libleo_cuda.so"
	t0=$SECONDS
	if hack/gpu/build.sh "$LEO_CUDA_LIB" >"$LOGS/build.log" 2>&1; then
		summary+=("build: ok in $((SECONDS - t0)) s")
		ldd "$LEO_CUDA_LIB" | grep -E "cublas|not found"
	else
		cat "$LOGS/build.log"
		summary+=("build: FAILED")
	fi
fi

if has correct; then
	say "correctness against the CPU backend"
	timeout 240 bin/gpu/cuda.test -test.run 'TestGPUMatchesCPU|TestGPULongContext|TestGPUSomeLogits|TestGPUFusedPrepSameBits' -test.v >"$LOGS/correct.log" 2>&1
	rc=$?
	grep -E "top-1|FAIL|panic|---|differ" "$LOGS/correct.log" | head -100
	summary+=("correctness (TestGPUMatchesCPU): rc=$rc, $(grep -c -- '--- PASS: TestGPUMatchesCPU/' "$LOGS/correct.log") cases passed, $(grep -c -- '--- FAIL: TestGPUMatchesCPU/' "$LOGS/correct.log") failed")
	summary+=("fused prep, same bits (TestGPUFusedPrepSameBits): $(grep -c -- '--- PASS: TestGPUFusedPrepSameBits/' "$LOGS/correct.log") passed, $(grep -c -- '--- FAIL: TestGPUFusedPrepSameBits/' "$LOGS/correct.log") failed")
fi

if has switches; then
	# The switches that are off by default, all on (and the other split):
	# the same bounds as the defaults.
	say "correctness with the switches that are off by default"
	i=0
	for switches in "LEO_CUDA_FUSE_PREP=2 LEO_CUDA_MATVEC_SPLIT=4 LEO_CUDA_MATVEC_SPLIT_QKV=2 LEO_CUDA_L2_AHEAD=16" \
		"LEO_CUDA_MATVEC_SPLIT=2 LEO_CUDA_MATVEC_SPLIT_QKV=4 LEO_CUDA_L2_AHEAD=1"; do
		i=$((i + 1))
		log=$LOGS/correct-switches-$i.log
		env $switches timeout 150 bin/gpu/cuda.test -test.run 'TestGPUMatchesCPU|TestGPULongContext' -test.v >"$log" 2>&1
		rc=$?
		grep -E "over all|FAIL|panic" "$log" | head -20
		summary+=("correctness with $switches: rc=$rc, $(grep -c -- '--- PASS: TestGPUMatchesCPU/' "$log") cases passed, $(grep -c -- '--- FAIL: TestGPUMatchesCPU/' "$log") failed")
	done
fi

if has memcheck; then
	say "compute-sanitizer memcheck"
	timeout 240 compute-sanitizer --tool memcheck --leak-check full bin/gpu/cuda.test -test.run TestGPUSanitizerSmall -test.v >"$LOGS/memcheck.log" 2>&1
	rc=$?
	tail -5 "$LOGS/memcheck.log"
	summary+=("memcheck: rc=$rc, $(grep -E 'ERROR SUMMARY' "$LOGS/memcheck.log" | tail -1)")
	# mmq's shared-memory pipeline: races and barriers.
	for tool in racecheck synccheck; do
		timeout 150 compute-sanitizer --tool $tool bin/gpu/cuda.test -test.run 'TestGPUSanitizerSmall/test-gqa/Q8_0/fuse=0' -test.v >"$LOGS/$tool.log" 2>&1
		rc=$?
		tail -3 "$LOGS/$tool.log"
		summary+=("$tool (mmq): rc=$rc, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$LOGS/$tool.log" | tail -1)")
	done
fi

if has models; then
	for t in ${TYPES:-q4_0 q8_0 f16}; do
		f=$MODELS/llama-2-7b-$t.gguf
		[ -s "$f" ] && continue
		say "gen-model llama-2-7b $t"
		t0=$SECONDS
		bin/gpu/leo-runtime gen-model --shape llama-2-7b --type "$t" -o "$f" 2>/dev/null || summary+=("gen-model $t: FAILED")
		say "  $(du -h "$f" | cut -f1) in $((SECONDS - t0)) s"
	done
fi

if has bench; then
	say "leo benchmarks"
	models=$(ls "$MODELS"/llama-2-7b-*.gguf 2>/dev/null | sort -r | paste -sd, -)
	LEO_GPU_MODELS=$models timeout 300 bin/gpu/cuda.test -test.run '^$' -test.bench 'BenchmarkGPU' -test.benchtime 1x >"$LOGS/bench.log" 2>&1
	summary+=("bench: rc=$?")
	grep -E "RESULT|FAIL|panic|Error|error" "$LOGS/bench.log" | head -20
	# Where a decode step's time goes (kernel to kernel, without graphs;
	# programmatic dependent launch, LEO_CUDA_PDL=1, measured slower on
	# 2026-11-27 and is no longer run here).
	# variant LABEL MODEL [VAR=VALUE...]: BenchmarkGPU on MODEL with those
	# settings, its RESULT line labelled, into profile.log.
	variant() {
		local label=$1 model=$2
		shift 2
		env "$@" LEO_GPU_MODELS="$model" timeout 120 bin/gpu/cuda.test -test.run '^$' -test.bench 'BenchmarkGPU' -test.benchtime 1x 2>&1 |
			sed "s/^RESULT /RESULT ($label) /" >>"$LOGS/profile.log"
	}
	q4=$MODELS/llama-2-7b-q4_0.gguf
	if [ -s "$q4" ]; then
		for m in "$q4" "$MODELS/llama-2-7b-f16.gguf"; do
			variant "profiled, no graphs" "$m" LEO_CUDA_PROFILE=1 LEO_GPU_QUICK=1
		done
		# Decode at batch 1 under the switches that are off by default, each
		# against the defaults, on one loaded model (LEO_GPU_SWEEP, two
		# rounds): attention and SwiGLU making the next activations
		# (LEO_CUDA_FUSE_PREP=1: 7 kernels a layer instead of 9; the same
		# tokens digest as the defaults), and O's and down's making the
		# normalized ones too (=2: 5 kernels), O's and down's columns split
		# over 2 or 4 warps (LEO_CUDA_MATVEC_SPLIT; QKV's:
		# LEO_CUDA_MATVEC_SPLIT_QKV), the next product's first
		# MiB fetched into L2 by the kernels before it (LEO_CUDA_L2_AHEAD;
		# the same digest as the defaults), programmatic dependent launch
		# (LEO_CUDA_PDL=1, which lets the next kernel's fetches start before
		# the previous kernel ends), and combinations.
		sweep="; LEO_CUDA_FUSE_PREP=1; LEO_CUDA_FUSE_PREP=2; LEO_CUDA_MATVEC_SPLIT=2; LEO_CUDA_MATVEC_SPLIT=4"
		sweep+="; LEO_CUDA_MATVEC_SPLIT_QKV=2; LEO_CUDA_MATVEC_SPLIT_QKV=4"
		sweep+="; LEO_CUDA_L2_AHEAD=8; LEO_CUDA_L2_AHEAD=24; LEO_CUDA_PDL=1; LEO_CUDA_PDL=1 LEO_CUDA_L2_AHEAD=16"
		sweep+="; LEO_CUDA_FUSE_PREP=2 LEO_CUDA_MATVEC_SPLIT=4 LEO_CUDA_L2_AHEAD=16"
		sweep+="; LEO_CUDA_FUSE_PREP=2 LEO_CUDA_MATVEC_SPLIT=4 LEO_CUDA_L2_AHEAD=16 LEO_CUDA_PDL=1"
		for t in q4_0 q8_0 f16; do
			m=$MODELS/llama-2-7b-$t.gguf
			[ -s "$m" ] || continue
			variant "sweep" "$m" LEO_GPU_SWEEP="$sweep"
		done
		# (its control: the LEO_CUDA_MMQ_TOKENS=64 run of q4_0 below)
		variant "LEO_CUDA_FUSE_PREP=1 LEO_CUDA_MMQ_TOKENS=64" "$q4" LEO_CUDA_FUSE_PREP=1 LEO_CUDA_MMQ_TOKENS=64 LEO_GPU_ENGINE32=1
		# mmq (tensor cores, 9 to 64 tokens) against the matvec kernels 8
		# tokens a pass for quantized weights, cuBLAS for F16
		# (LEO_CUDA_MMQ_TOKENS=0); and for prompts against (dequantization
		# and) cuBLAS (512: mmq).
		for t in q8_0 q4_0 f16; do
			m=$MODELS/llama-2-7b-$t.gguf
			[ -s "$m" ] || continue
			for v in 0 64; do
				variant "LEO_CUDA_MMQ_TOKENS=$v" "$m" LEO_CUDA_MMQ_TOKENS=$v LEO_GPU_ENGINE32=1
			done
			variant "LEO_CUDA_MMQ_TOKENS=512" "$m" LEO_CUDA_MMQ_TOKENS=512 LEO_GPU_PREFILL=1
		done
		variant "profiled engine, mmq, no graphs" "$q4" LEO_CUDA_MMQ_TOKENS=64 LEO_CUDA_PROFILE=1 LEO_GPU_ENGINE32=1
		grep -E "RESULT|leo_cuda profile|^  " "$LOGS/profile.log" | head -120
	fi
fi

if has ncu; then
	q4=$MODELS/llama-2-7b-q4_0.gguf
	if command -v ncu >/dev/null && [ -s "$q4" ]; then
		# One layer of a decode step (7B q4_0, batch 1, without graphs):
		# after the prompt and some steps (about 290 kernels each), 10
		# kernels in a row. Then mmq and mmq_finish at 32 sequences.
		say "ncu: a decode step's kernels, and mmq"
		n="--clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats"
		LEO_CUDA_PROFILE=1 LEO_GPU_QUICK=1 LEO_GPU_MODELS=$q4 timeout 150 ncu $n --launch-skip 2000 --launch-count 10 \
			bin/gpu/cuda.test -test.run '^$' -test.bench BenchmarkGPU -test.benchtime 1x >"$LOGS/ncu.log" 2>&1
		LEO_CUDA_MMQ_TOKENS=64 LEO_CUDA_PROFILE=1 LEO_GPU_ENGINE32=1 LEO_GPU_MODELS=$q4 timeout 150 ncu $n -k regex:mmq \
			--launch-skip 400 --launch-count 8 \
			bin/gpu/cuda.test -test.run '^$' -test.bench BenchmarkGPU -test.benchtime 1x >>"$LOGS/ncu.log" 2>&1
		grep -E "^  [a-z_]+<|^  void |Duration|DRAM Throughput|Achieved Occupancy|Registers Per|==ERROR|==WARNING" "$LOGS/ncu.log" | head -120
		summary+=("ncu: $(grep -c 'Duration' "$LOGS/ncu.log") kernels profiled (ncu.log)")
	else
		summary+=("ncu: skipped (no ncu, or no 7B q4_0 model)")
	fi
fi

if has reference; then
	say "PyTorch references"
	PYTHONUNBUFFERED=1 timeout 180 python3 hack/gpu/reference.py --json "$LOGS/reference.json" 2>&1 | tee "$LOGS/reference.log" | grep -v "^\[reference\] hf" | tail -25
fi

if has big; then
	f=$MODELS/llama-2-70b-q4_0.gguf
	rm -f "$MODELS"/llama-2-7b-*.gguf # 64 GB of disk hold the 7B files or this one
	if [ ! -s "$f" ]; then
		say "gen-model llama-2-70b q4_0"
		t0=$SECONDS
		bin/gpu/leo-runtime gen-model --shape llama-2-70b --type q4_0 -o "$f" 2>/dev/null
		say "  $(du -h "$f" | cut -f1) in $((SECONDS - t0)) s"
	fi
	LEO_GPU_MODELS=$f LEO_GPU_QUICK=1 timeout 400 bin/gpu/cuda.test -test.run '^$' -test.bench 'BenchmarkGPU' -test.benchtime 1x >"$LOGS/big.log" 2>&1
	summary+=("70b: rc=$?")
	grep -E "RESULT|FAIL|panic|rror" "$LOGS/big.log" | head -10
fi

echo
echo "=== summary ($gpu)"
printf '%s\n' "${summary[@]}"
grep -h RESULT "$LOGS"/bench.log "$LOGS"/profile.log "$LOGS"/big.log 2>/dev/null
if grep -q '^SWEEP ' "$LOGS/profile.log" 2>/dev/null; then
	echo "=== decode at batch 1 under the switches (mean of the rounds; against the defaults, same process)"
	awk -f hack/gpu/sweep-table.awk "$LOGS/profile.log"
fi
[ -f "$LOGS/reference.log" ] && sed -n '/^reference /,$p' "$LOGS/reference.log"
