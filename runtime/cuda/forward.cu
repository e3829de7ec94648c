// forward.cu: the C ABI of leo_cuda.h: devices, weights on the device, and
// the forward pass, which reads top to bottom like model.State.Forward:
//
//   for each layer:
//     q, k, v = rope(QKV · norm(x)), k and v into the cache   (one product)
//     x += O · attention(q, cache)
//     x += Down · (silu(Gate · norm(x)) ⊙ Up · norm(x))      (two products)
//   logits = Output · norm(x) for the tokens that want them
//
// Batches of up to kMaxCols tokens (decode) run on the matvec kernels,
// which read each weight once for all tokens. Larger ones (prompts) run on
// cuBLAS, quantized weights dequantized to halves a slice at a time; but
// quantized weights take the matvec kernels, kMaxCols tokens a pass, up to
// kQuantMatvecTokens (batched decode): cheaper than dequantizing the whole
// model for a batch of decodes, and with int8 activations rounded as the
// CPU backend rounds them, so that both give the same logits. Where
// LEO_CUDA_MMQ_TOKENS says, mmq takes such batches instead, on the tensor
// cores (int8, or halves for F16 weights). Steps of
// up to kGraphTokens tokens are captured in a CUDA graph per shape and
// replayed, so that a decode step is one launch.
#if defined(LEO_CUDA_EMU)
// The CUDA runtime and cuBLAS on the host, for tests without a GPU
// (emu/cuda_runtime_emu.h; docs/cuda.md, "Checks without a GPU").
#include "emu/cuda_runtime_emu.h"
#else
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "kernels.cuh"
#include "leo_cuda.h"

using namespace leo;

namespace {

constexpr int kGraphTokens = 64;
// At most this many step shapes are captured per state (graphs take device
// memory, and serving mixes many shapes); later shapes run without one.
constexpr size_t kMaxGraphs = 128;
constexpr int kQuantMatvecTokens = 64;
// mmq takes batches of kMaxCols+1 to LEO_CUDA_MMQ_TOKENS tokens (64:
// batched decode; 512: prompts too, instead of cuBLAS), of any weight
// type. By default, kMMQTokens = 0, it is off: it has not run on a GPU yet
// (docs/cuda.md), and hack/gpu/check.sh measures it against the matvec
// kernels and cuBLAS. Its K slices' partial sums take at most
// kMMQPartElems floats (16 MiB).
constexpr int kMMQTokens = 0;
constexpr size_t kMMQPartElems = size_t(4) << 20;
constexpr int kMMQMaxSplits = 16;
// Quantized weights go to cuBLAS through a scratch of at most this many
// halves (128 MiB), a slice of rows at a time.
constexpr size_t kDequantElems = size_t(64) << 20;
constexpr size_t kBlasWorkspace = size_t(32) << 20;

int fail(char *err, const char *fmt, ...) {
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, LEO_ERR_LEN, fmt, ap);
		va_end(ap);
	}
	return 1;
}

#define CUDA_TRY(call)                                                                  \
	do {                                                                            \
		cudaError_t e_ = (call);                                                \
		if (e_ != cudaSuccess) return fail(err, "%s: %s", #call, cudaGetErrorString(e_)); \
	} while (0)

#define BLAS_TRY(call)                                                                  \
	do {                                                                            \
		cublasStatus_t e_ = (call);                                             \
		if (e_ != CUBLAS_STATUS_SUCCESS) return fail(err, "%s: cuBLAS status %d", #call, (int)e_); \
	} while (0)

double gib(size_t b) { return (double)b / (1 << 30); }

// launch starts a kernel on stream st; with pdl (Hopper and newer), by
// programmatic dependent launch: its blocks are scheduled while the
// previous kernel drains, and wait (wait_previous) for its results, which
// hides most of the gap between the hundreds of small kernels of a step.
template <typename... Params, typename... Args>
cudaError_t launch_smem(bool pdl, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                        Args... args) {
	cudaLaunchConfig_t cfg = {};
	cfg.gridDim = grid;
	cfg.blockDim = block;
	cfg.dynamicSmemBytes = smem;
	cfg.stream = st;
	cudaLaunchAttribute attr[1];
	attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
	attr[0].val.programmaticStreamSerializationAllowed = 1;
	cfg.attrs = attr;
	cfg.numAttrs = pdl ? 1 : 0;
	return cudaLaunchKernelEx(&cfg, kernel, args...);
}

template <typename... Params, typename... Args>
cudaError_t launch(bool pdl, void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t st, Args... args) {
	return launch_smem(pdl, kernel, grid, block, 0, st, args...);
}

// mmq_kernel is mmq<T, mt, E>.
template <int T, int E>
auto mmq_kernel(int mt) {
	switch (mt) {
	case 1: return mmq<T, 1, E>;
	case 2: return mmq<T, 2, E>;
	case 3: return mmq<T, 3, E>;
	default: return mmq<T, 4, E>;
	}
}

template <int T>
auto mmq_kernel_e(Epilogue e, int mt) {
	switch (e) {
	case kStore: return mmq_kernel<T, kStore>(mt);
	case kAdd: return mmq_kernel<T, kAdd>(mt);
	case kQKV: return mmq_kernel<T, kQKV>(mt);
	default: return mmq_kernel<T, kSwiGLU>(mt);
	}
}

// mmq_kernel_t is mmq for weights of type t (LEO_TYPE_*).
auto mmq_kernel_t(int t, Epilogue e, int mt) {
	switch (t) {
	case LEO_TYPE_Q8_0: return mmq_kernel_e<8>(e, mt);
	case LEO_TYPE_Q4_0: return mmq_kernel_e<2>(e, mt);
	default: return mmq_kernel_e<1>(e, mt);
	}
}

// type_index indexes leo_state's per-type fields (mmq's, matvec's).
int type_index(int type) { return type == LEO_TYPE_Q8_0 ? 0 : type == LEO_TYPE_Q4_0 ? 1 : 2; }

// mmq_tokens_setting is LEO_CUDA_MMQ_TOKENS (kMMQTokens when unset), or 0
// where the GPU lacks the int8 mma (compute capability below 8.0).
int mmq_tokens_setting(int device) {
	int major = 0;
	cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
	cudaGetLastError();
	if (major < 8) return 0;
	const char *v = getenv("LEO_CUDA_MMQ_TOKENS");
	if (!v || !*v) return kMMQTokens;
	char *end = nullptr;
	const long n = strtol(v, &end, 10);
	if (*end || n < 0) {
		fprintf(stderr, "leo_cuda: LEO_CUDA_MMQ_TOKENS=%s is not a number of tokens: mmq stays off\n", v);
		return 0;
	}
	return (int)std::min<long>(n, 1 << 20);
}

cudaError_t launch_mmq_finish(bool pdl, cudaStream_t st, Epilogue e, int splits, int n, const Mat &w, float *part,
                              const Out &o) {
	const dim3 grid((w.rows / 2 + kMMQFinishThreads - 1) / kMMQFinishThreads, n), block(kMMQFinishThreads);
	const float *p = part;
	switch (e) {
	case kStore: return launch(pdl, mmq_finish<kStore>, grid, block, st, p, splits, n, w.rows, o);
	case kAdd: return launch(pdl, mmq_finish<kAdd>, grid, block, st, p, splits, n, w.rows, o);
	case kQKV: return launch(pdl, mmq_finish<kQKV>, grid, block, st, p, splits, n, w.rows, o);
	default: return launch(pdl, mmq_finish<kSwiGLU>, grid, block, st, p, splits, n, w.rows, o);
	}
}

// matvec_cols is the tokens a matvec pass takes for a batch of n: 1, 2, 4
// or kMaxCols. Tokens past n in the last pass compute on stale rows of the
// activation buffers (which hold whole groups of kMaxCols tokens) and store
// nothing; each token's sums are the same bits whatever the pass's width.
// Four widths instead of eight halve the matvec kernels nvcc builds.
int matvec_cols(int n) { return n <= 2 ? n : n <= 4 ? 4 : kMaxCols; }

// launch_matvec starts matvec<T, nc, E, S>, nc one of matvec_cols's widths.
template <int T, int E, int S>
cudaError_t launch_matvec(bool pdl, cudaStream_t st, int nc, dim3 grid, const Mat &w, const Act &a, const Out &o,
                          int n, const Ahead &ah) {
	static_assert(kMaxCols == 8, "matvec_cols's widths");
	const dim3 block(kMatvecWarps * kWarp);
	switch (nc) {
	case 1: return launch(pdl, matvec<T, 1, E, S>, grid, block, st, w, a, o, n, ah);
	case 2: return launch(pdl, matvec<T, 2, E, S>, grid, block, st, w, a, o, n, ah);
	case 4: return launch(pdl, matvec<T, 4, E, S>, grid, block, st, w, a, o, n, ah);
	default: return launch(pdl, matvec<T, 8, E, S>, grid, block, st, w, a, o, n, ah);
	}
}

// launch_matvec_e starts matvec for epilogue e, with the column split (1,
// 2 or 4) for kAdd and kQKV, where it is built.
template <int T>
cudaError_t launch_matvec_e(bool pdl, cudaStream_t st, Epilogue e, int nc, dim3 grid, const Mat &w, const Act &a,
                            const Out &o, int n, int split, const Ahead &ah) {
	switch (e) {
	case kStore: return launch_matvec<T, kStore, 1>(pdl, st, nc, grid, w, a, o, n, ah);
	case kAdd:
		if (split == 4) return launch_matvec<T, kAdd, 4>(pdl, st, nc, grid, w, a, o, n, ah);
		if (split == 2) return launch_matvec<T, kAdd, 2>(pdl, st, nc, grid, w, a, o, n, ah);
		return launch_matvec<T, kAdd, 1>(pdl, st, nc, grid, w, a, o, n, ah);
	case kQKV:
		if (split == 4) return launch_matvec<T, kQKV, 4>(pdl, st, nc, grid, w, a, o, n, ah);
		if (split == 2) return launch_matvec<T, kQKV, 2>(pdl, st, nc, grid, w, a, o, n, ah);
		return launch_matvec<T, kQKV, 1>(pdl, st, nc, grid, w, a, o, n, ah);
	default: return launch_matvec<T, kSwiGLU, 1>(pdl, st, nc, grid, w, a, o, n, ah);
	}
}

size_t quant_bytes(int type, size_t rows, size_t cols) {
	switch (type) {
	case LEO_TYPE_F16: return rows * cols * 2;
	case LEO_TYPE_Q8_0: return rows * cols;
	default: return rows * cols / 2;
	}
}

size_t scale_bytes(int type, size_t rows, size_t cols) {
	return type == LEO_TYPE_F16 ? 0 : rows * scale_stride((int)cols) * 2;
}

size_t ggml_bytes(int type, size_t rows, size_t cols) {
	switch (type) {
	case LEO_TYPE_F16: return rows * cols * 2;
	case LEO_TYPE_Q8_0: return rows * cols / 32 * 34;
	default: return rows * cols / 32 * 18;
	}
}

struct DevMat {
	Mat m{};
	int act = LEO_ACT_DEFAULT;  // how its activations are rounded
	uint8_t *buf = nullptr;
	int parts = 0;  // parts uploaded (Q, K, V: 3; gate, up: 2)
};

struct Layer {
	DevMat qkv, o, gu, down;
	float *attn_norm = nullptr, *ffn_norm = nullptr;
};

}  // namespace

struct leo_model {
	int device;
	leo_config c;
	std::vector<Layer> layers;
	DevMat output;
	float *output_norm = nullptr, *cos = nullptr, *sin = nullptr;
	size_t bytes = 0;
};

// Profile: with LEO_CUDA_PROFILE set, steps run without graphs, with an
// event before each kernel; the time to the next event is charged to the
// kernel's label, and leo_state_free prints the totals on stderr. The
// figures include the gaps between kernels, which is the point.
struct Profile {
	bool on = false;
	std::vector<cudaEvent_t> events;
	std::vector<const char *> labels;
	size_t used = 0;
	std::map<std::string, std::pair<double, long>> total;  // ms, calls
	long steps = 0;
	double step_ms = 0;
};

// ActBufs are the buffers of a matrix product's activations (see Act).
struct ActBufs {
	__half *h = nullptr;
	int8_t *q = nullptr;
	float *d = nullptr;
	int *s = nullptr;
};

struct leo_state {
	leo_model *m;
	Profile prof;
	int device, slots, len, max_batch, chunks;
	bool pdl;  // programmatic dependent launch (compute capability 9.0+)
	int mmq_tokens;  // mmq takes batches of kMaxCols+1 to this many tokens
	int sms;         // streaming multiprocessors
	// Per weight type (type_index): the most token tiles of mmq whose shared
	// memory this GPU allows (0: none), and the thread blocks per SM of each.
	int mmq_mt[3];
	int mmq_occ[3][kMMQTokenTiles + 1];
	int split;           // LEO_CUDA_MATVEC_SPLIT: matvec's warps per row pair of O and down
	int split_qkv;       // LEO_CUDA_MATVEC_SPLIT_QKV: the same for QKV
	size_t l2_ahead;     // LEO_CUDA_L2_AHEAD: bytes of the next product's weights fetched into L2 (0: off)
	int matvec_occ[3];   // per weight type: one-token matvec thread blocks an SM holds
	cudaStream_t stream = nullptr;
	cublasHandle_t blas = nullptr;
	void *blas_ws = nullptr;
	__half *kv = nullptr;  // per layer: keys, then values
	float *x, *q, *att, *hb, *y, *part, *logits;
	__half *wtmp;
	// The activations of the product being computed: in set 0, but down's
	// in set 1 when the SwiGLU epilogue makes them (fuse_prep), because
	// matvec<kSwiGLU> writes them while other blocks of it still read
	// gate/up's in set 0; with norm_fuse, a decode step alternates (QKV 1,
	// O 0, gate/up 1, down 0), each product writing the next one's. Without
	// fuse_prep, set 1 is set 0.
	ActBufs act[2];
	int32_t *pos, *seq, *rows;
	float *mmq_part;  // mmq's partial sums, per K slice
	bool fuse_prep;        // attention and the SwiGLU epilogues make the next product's activations
	bool norm_fuse;        // and in decode steps, O's and down's make the normalized ones (norm_next)
	int *fuse_counters;    // see Out.counters
	float *ssq;            // norm_fuse: sums of squares of x's blocks of 32 (see Act)
	int *counters;  // attention chunks done, per token and head (zero between steps)
	// Page-locked host buffers, shared with Go.
	float *hx = nullptr, *hlogits = nullptr;
	int32_t *hpos = nullptr, *hseq = nullptr, *hrows = nullptr;
	std::map<std::tuple<int, int, int>, cudaGraphExec_t> graphs;
	std::vector<void *> allocs;
};

namespace {

void mark(leo_state *s, const char *label) {
	Profile &p = s->prof;
	if (!p.on) return;
	if (p.used == p.events.size()) {
		cudaEvent_t e;
		cudaEventCreate(&e);
		p.events.push_back(e);
		p.labels.push_back(nullptr);
	}
	p.labels[p.used] = label;
	cudaEventRecord(p.events[p.used++], s->stream);
}

// charge adds a profiled step's marks to the totals.
void charge(leo_state *s) {
	Profile &p = s->prof;
	for (size_t i = 0; i + 1 < p.used; i++) {
		float ms = 0;
		cudaEventElapsedTime(&ms, p.events[i], p.events[i + 1]);
		auto &t = p.total[p.labels[i]];
		t.first += ms;
		t.second++;
	}
	float all = 0;
	if (p.used > 1) cudaEventElapsedTime(&all, p.events[0], p.events[p.used - 1]);
	p.step_ms += all;
	p.steps++;
	p.used = 0;
}

void print_profile(leo_state *s) {
	Profile &p = s->prof;
	if (!p.on || p.steps == 0) return;
	std::vector<std::pair<double, std::string>> rows;
	for (auto &t : p.total) rows.push_back({t.second.first, t.first});
	std::sort(rows.rbegin(), rows.rend());
	fprintf(stderr, "leo_cuda profile: %ld steps, %.3f ms a step (GPU time, kernel to kernel)\n", p.steps, p.step_ms / p.steps);
	for (auto &r : rows) {
		auto &t = p.total[r.second];
		fprintf(stderr, "  %-16s %6.1f%%  %8.1f us a step  %6.1f us a call  %ld calls\n", r.second.c_str(),
		        100 * t.first / p.step_ms, 1000 * t.first / p.steps, 1000 * t.first / t.second, t.second);
	}
	for (cudaEvent_t e : p.events) cudaEventDestroy(e);
}

int alloc(leo_state *s, void **p, size_t bytes, char *err) {
	*p = nullptr;
	if (bytes == 0) return 0;
	CUDA_TRY(cudaMalloc(p, bytes));
	s->allocs.push_back(*p);
	return 0;
}

// Sizes of a state's buffers, in the order leo_state_new allocates them.
struct StateSizes {
	size_t kv, x, q, att, hb, y, part, logits, xh, xq, xd, xs, meta, wtmp, blas, counters, mmq, fuse_counters, ssq;
	int act_sets;  // of xh, xq, xd, xs: 2 with fuse_prep (see leo_state.act)
	size_t total() const {
		return kv + x + q + att + hb + y + part + logits + act_sets * (xh + xq + xd + xs) + 3 * meta + wtmp + blas +
		       counters + mmq + fuse_counters + ssq;
	}
};

bool any_quantized(const leo_model *m) {
	if (m->output.m.type != LEO_TYPE_F16) return true;
	for (const Layer &l : m->layers)
		for (const DevMat *d : {&l.qkv, &l.o, &l.gu, &l.down})
			if (d->m.type != LEO_TYPE_F16) return true;
	return false;
}

StateSizes sizes(const leo_model *m, int slots, int len, int max_batch, int mmq_tokens, int fuse) {
	const leo_config &c = m->c;
	// Activations are kept for whole groups of kMaxCols tokens (see matvec).
	const size_t hd = c.dim / c.heads, kv_dim = hd * c.kv_heads, b = (max_batch + kMaxCols - 1) / kMaxCols * kMaxCols;
	const size_t widest = std::max(c.dim, c.hidden_dim);
	const size_t chunks = (len + kAttnChunk - 1) / kAttnChunk;
	const bool blas = max_batch > kMaxCols;
	StateSizes z{};
	z.kv = (size_t)c.layers * 2 * slots * len * kv_dim * 2;
	z.x = b * c.dim * 4;
	z.q = b * c.dim * 4;
	z.att = b * c.dim * 4;
	z.hb = b * c.hidden_dim * 4;
	z.y = blas ? b * std::max(c.dim + 2 * kv_dim, 2 * (size_t)c.hidden_dim) * 4 : 0;
	z.part = b * c.heads * chunks * (hd + 2) * 4;
	z.logits = b * c.vocab * 4;
	z.xh = b * widest * 2;
	z.xq = b * widest;
	z.xd = b * widest / 32 * 4;
	z.xs = b * widest / 32 * 4;
	z.act_sets = fuse ? 2 : 1;
	z.meta = b * 4;
	// Quantized weights go to cuBLAS past both kQuantMatvecTokens and mmq's tokens.
	z.wtmp = max_batch > std::max(kQuantMatvecTokens, mmq_tokens) && any_quantized(m) ? kDequantElems * 2 : 0;
	z.blas = blas ? kBlasWorkspace : 0;
	z.counters = b * c.heads * 4;
	z.mmq = max_batch > kMaxCols && mmq_tokens > kMaxCols ? kMMQPartElems * 4 : 0;
	// matvec's token groups (kMaxCols tokens, up to kQuantMatvecTokens) by
	// blocks of 32 of the hidden layer (swiglu_next) or of x (norm_next).
	z.fuse_counters = fuse ? (size_t)(kQuantMatvecTokens / kMaxCols) * (widest / 32) * 4 : 0;
	z.ssq = fuse >= 2 ? (size_t)kMaxCols * (c.dim / 32) * 4 : 0;
	return z;
}

// fuse_prep_setting is LEO_CUDA_FUSE_PREP: 1, attention and the SwiGLU
// epilogues make the next product's activations, the same bits prep would
// make, saving two of a layer's nine kernels; 2, also, in decode steps, O's
// and down's matvec make the normalized activations of gate/up and of the
// next layer's QKV (norm_next; not the same bits as prep), leaving five
// kernels a layer. 0, off, by default until a GPU run has measured them
// (docs/cuda.md).
int fuse_prep_setting() {
	const char *v = getenv("LEO_CUDA_FUSE_PREP");
	if (!v || !*v || strcmp(v, "0") == 0) return 0;
	if (strcmp(v, "1") == 0) return 1;
	if (strcmp(v, "2") == 0) return 2;
	fprintf(stderr, "leo_cuda: LEO_CUDA_FUSE_PREP=%s is not 0, 1 or 2: off\n", v);
	return 0;
}

// matvec_split_setting is LEO_CUDA_MATVEC_SPLIT (O and down) or
// LEO_CUDA_MATVEC_SPLIT_QKV (QKV): how many warps share each row pair of
// those products (1, 2 or 4; see matvec). 1 by default until a GPU run has
// measured the others (docs/cuda.md).
int matvec_split_setting(const char *name) {
	const char *v = getenv(name);
	if (!v || !*v) return 1;
	if (strcmp(v, "1") && strcmp(v, "2") && strcmp(v, "4")) {
		fprintf(stderr, "leo_cuda: %s=%s is not 1, 2 or 4: no split\n", name, v);
		return 1;
	}
	return atoi(v);
}

// l2_ahead_setting is LEO_CUDA_L2_AHEAD, in MiB (at most 256): how much of
// the next product's weights the kernels of a decode step fetch into L2
// ahead of it (see Ahead). 0, off, by default until a GPU run has measured
// it (docs/cuda.md).
size_t l2_ahead_setting() {
	const char *v = getenv("LEO_CUDA_L2_AHEAD");
	if (!v || !*v) return 0;
	char *end = nullptr;
	const long mib = strtol(v, &end, 10);
	if (*end || mib < 0 || mib > 256) {
		fprintf(stderr, "leo_cuda: LEO_CUDA_L2_AHEAD=%s is not a number of MiB from 0 to 256: off\n", v);
		return 0;
	}
	return (size_t)mib << 20;
}

// ahead_of is the start of dm's weights, l2_ahead bytes of whole rows and
// their scales, for the kernels before dm's product to fetch into L2,
// issued by their blocks [first, grid). Only for decode (the matvec
// kernels' batches): bigger batches are not bound by weight reads.
Ahead ahead_of(const leo_state *s, const DevMat *dm, int n, int first = 0) {
	Ahead a{};
	if (!dm || s->l2_ahead == 0 || n > kMaxCols) return a;
	const Mat &w = dm->m;
	const size_t row = quant_bytes(w.type, 1, w.cols);
	const size_t rows = std::min<size_t>(w.rows, (s->l2_ahead + row - 1) / row);
	a.p[0] = w.q;
	a.bytes[0] = (unsigned)(rows * row);
	if (w.type != LEO_TYPE_F16) {
		a.p[1] = (const uint8_t *)w.d;
		a.bytes[1] = (unsigned)(rows * w.ds * 2);
	}
	a.first = first;
	return a;
}

// matvec_setup records how many one-token matvec thread blocks an SM holds,
// per weight type: a product's last wave, which fetches ahead, is its
// last sms × that blocks.
int matvec_setup(leo_state *s, char *err) {
	const dim3 block(kMatvecWarps * kWarp);
	CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&s->matvec_occ[0], matvec<8, 1, kAdd, 1>, block.x, 0));
	CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&s->matvec_occ[1], matvec<2, 1, kAdd, 1>, block.x, 0));
	CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&s->matvec_occ[2], matvec<1, 1, kAdd, 1>, block.x, 0));
	for (int &o : s->matvec_occ) o = std::max(o, 1);
	return 0;
}

// mmq_setup lets each mmq kernel have the shared memory it takes, where
// this GPU allows it (GPUs of compute capability 8.6 and 8.9 allow 99 KB a
// block, too little for the most token tiles: those take fewer), and
// records what fits and how many thread blocks of each an SM holds.
int mmq_setup(leo_state *s, char *err) {
	int optin = 0;
	CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, s->device));
	for (int t : {LEO_TYPE_Q8_0, LEO_TYPE_Q4_0, LEO_TYPE_F16}) {
		const int ti = type_index(t);
		s->mmq_mt[ti] = 0;
		for (int mt = 1; mt <= kMMQTokenTiles; mt++) {
			const int bytes = mmq_smem_bytes(t, mt);
			if (bytes > optin) break;
			for (int e : {kStore, kAdd, kQKV, kSwiGLU}) {
				CUDA_TRY(cudaFuncSetAttribute(mmq_kernel_t(t, (Epilogue)e, mt), cudaFuncAttributeMaxDynamicSharedMemorySize,
				                              bytes));
			}
			int blocks = 1;
			auto k = mmq_kernel_t(t, kAdd, mt);
			CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, k, kMMQWarps * kWarp, bytes));
			s->mmq_occ[ti][mt] = std::max(blocks, 1);
			s->mmq_mt[ti] = mt;
		}
	}
	if (s->mmq_mt[0] == 0 && s->mmq_mt[1] == 0 && s->mmq_mt[2] == 0)
		return fail(err, "mmq takes at least %d bytes of shared memory a block, and this GPU allows %d",
		            std::min({mmq_smem_bytes(LEO_TYPE_Q8_0, 1), mmq_smem_bytes(LEO_TYPE_Q4_0, 1),
		                      mmq_smem_bytes(LEO_TYPE_F16, 1)}),
		            optin);
	return 0;
}

// mmq_per says how many blocks of K each of mmq's slices takes for n
// tokens, mt token tiles a pass: few enough that the thread blocks fill
// every SM (as many as one holds), and as many as a stage holds (kc) at
// least, a multiple of it, with the partial sums within the scratch.
int mmq_per(const leo_state *s, const Mat &w, int n, int mt) {
	const int kc = kMMQChunk / (w.type == LEO_TYPE_Q8_0 ? 32 : w.type == LEO_TYPE_Q4_0 ? 16 : 64), blocks = w.cols / 32;
	const long groups = (long)((w.rows + kMMQRows - 1) / kMMQRows) * ((n + 16 * mt - 1) / (16 * mt));
	const long want = (long)s->sms * s->mmq_occ[type_index(w.type)][mt];
	int splits = (int)std::min<long>((want + groups - 1) / groups, kMMQMaxSplits);
	while (splits > 1 && (size_t)splits * n * w.rows > kMMQPartElems) splits--;
	const int per = ((blocks + splits - 1) / splits + kc - 1) / kc * kc;
	return std::max(per, kc);
}

// Path is the kernel a product of n tokens takes.
enum Path { kMatvec, kMMQ, kBlas };

Path path(const leo_state *s, const Mat &w, int n) {
	const bool quantized = w.type != LEO_TYPE_F16;
	if (n > kMaxCols && n <= s->mmq_tokens && s->mmq_mt[type_index(w.type)] > 0) return kMMQ;
	if (n <= kMaxCols || (quantized && n <= kQuantMatvecTokens)) return kMatvec;
	return kBlas;
}

// act_out is where (set) and how prep writes the activations of W for n
// tokens: halves for F16 weights and cuBLAS, int8 blocks for the quantized
// kernels, rounded to agree with the CPU backend.
ActOut act_out(const leo_state *s, const DevMat &dw, int n, int set) {
	const Path p = path(s, dw.m, n);
	const bool quantized = dw.m.type != LEO_TYPE_F16;
	const bool half = p == kBlas || !quantized;
	int round = kRoundNone;
	if (dw.act == LEO_ACT_Q8_K) {
		round = kRoundQ8K;
	} else if (quantized && p == kBlas) {
		round = kRoundQ8_0;
	}
	const ActBufs &b = s->act[set];
	return ActOut{half ? b.h : nullptr, half ? nullptr : b.q, b.d, b.s, round, dw.m.cols, false};
}

// fusable says whether a kernel other than prep can write a as act_store
// does (not the 256-element blocks of kRoundQ8K).
bool fusable(const leo_state *s, const ActOut &a) { return s->fuse_prep && a.round != kRoundQ8K; }

// Choices of a product beyond its inputs and epilogue (see product).
struct ProductOpts {
	int set = 0;             // the activation buffer set (leo_state.act)
	bool prepped = false;    // the previous kernel made the activations: no prep
	const ActOut *next = nullptr;  // with kSwiGLU, or kAdd and next_gain: make the next product's activations
	bool *made_next = nullptr;     // where the kernel can, and say here whether it did
	const float *next_gain = nullptr;  // kAdd: the next product's norm gain (norm_next; matvec only)
	bool normed = false;     // prepped by norm_next: the activations await the norm's scale (Act.ssq)
	const DevMat *after = nullptr; // the next product, the start of whose weights the kernels fetch into L2
	int split = 1;           // matvec's warps per row pair, each a slice of the columns (kAdd, kQKV: see matvec)
};

// product computes W · act(x) for n tokens and applies epilogue e: act(x)
// is x's rows (rows[t] of them when rows is set), normalized by gain when
// set, in the form W's kernel reads (act_out), made by prep unless
// opt.prepped says the previous kernel made it (opt.normed: without the
// norm's scale, which matvec applies). With opt.next set (e is kSwiGLU, or
// kAdd with opt.next_gain), the epilogue also makes the next product's
// activations where its kernel can, and *opt.made_next says whether it
// did.
int product(leo_state *s, const char *what, const DevMat &dw, const float *x, int n, const int32_t *rows,
            const float *gain, Epilogue e, Out o, char *err, const ProductOpts &opt = ProductOpts()) {
	const Mat &w = dw.m;
	const leo_model *m = s->m;
	const Path p = path(s, w, n);
	const bool tc = p == kMMQ, mv = p == kMatvec;
	const int set = opt.set;
	const ActOut *next = opt.next;
	bool *made_next = opt.made_next;
	const ActOut act = act_out(s, dw, n, set);
	const ActBufs &ab = s->act[set];
	if (made_next) *made_next = false;
	if (opt.normed && (!mv || n > kMaxCols))  // (ssq holds kMaxCols tokens)
		return fail(err, "%s: activations without the norm's scale reach only matvec, 1 to %d tokens", what, kMaxCols);
	if (!opt.prepped) {
		mark(s, "prep");
		CUDA_TRY(launch(s->pdl, prep, dim3((w.cols + 255) / 256, n), dim3(kPrepThreads), s->stream, x, w.cols, rows, gain,
		                m->c.norm_eps, act.h, act.q, act.d, act.s, act.round, ahead_of(s, &dw, n)));
	}
	mark(s, what);
	if (tc) {
		Act a{ab.h, ab.q, ab.d, ab.s};
		const int mt = std::min((n + 15) / 16, s->mmq_mt[type_index(w.type)]);
		const int per = mmq_per(s, w, n, mt), splits = (w.cols / 32 + per - 1) / per;
		const dim3 grid((w.rows + kMMQRows - 1) / kMMQRows, splits, (n + 16 * mt - 1) / (16 * mt));
		auto k = mmq_kernel_t(w.type, e, mt);
		CUDA_TRY(launch_smem(s->pdl, k, grid, dim3(kMMQWarps * kWarp), mmq_smem_bytes(w.type, mt), s->stream, w, a, o, n,
		                     per, s->mmq_part));
		if (splits > 1 && e == kSwiGLU) {
			// Only the finishing pass makes whole blocks of outputs.
			if (next) o.next = *next;
			if (made_next) *made_next = next != nullptr;
		}
		if (splits > 1) {
			mark(s, "mmq finish");
			CUDA_TRY(launch_mmq_finish(s->pdl, s->stream, e, splits, n, w, s->mmq_part, o));
		}
		return 0;
	}
	if (mv) {
		if (next && (e == kSwiGLU || (e == kAdd && opt.next_gain && n <= kMaxCols))) {
			o.next = *next;
			o.counters = s->fuse_counters;
			o.gain = opt.next_gain;
			o.ssq = s->ssq;
			if (made_next) *made_next = true;
		}
		Act a{ab.h, ab.q, ab.d, ab.s, opt.normed ? s->ssq : nullptr, m->c.norm_eps};
		const int split = e == kAdd || e == kQKV ? opt.split : 1;  // built for these (launch_matvec_e)
		const int per_block = kMatvecWarps / split * kRowsPerWarp, nc = matvec_cols(n);
		dim3 grid((w.rows + per_block - 1) / per_block, (n + nc - 1) / nc);
		const int blocks = (int)(grid.x * grid.y);
		const Ahead ah = ahead_of(s, opt.after, n, std::max(0, blocks - s->sms * s->matvec_occ[type_index(w.type)]));
		switch (w.type) {
		case LEO_TYPE_F16:
			CUDA_TRY(launch_matvec_e<1>(s->pdl, s->stream, e, nc, grid, w, a, o, n, split, ah));
			break;
		case LEO_TYPE_Q8_0:
			CUDA_TRY(launch_matvec_e<8>(s->pdl, s->stream, e, nc, grid, w, a, o, n, split, ah));
			break;
		default:
			CUDA_TRY(launch_matvec_e<2>(s->pdl, s->stream, e, nc, grid, w, a, o, n, split, ah));
			break;
		}
		return 0;
	}
	// cuBLAS, column-major: C (rows × n) = Wᵀ(as cols × rows) · X (cols × n).
	float *c = (e == kStore || e == kAdd) ? o.y : s->y;
	const int ldc = (e == kStore || e == kAdd) ? o.ld : w.rows;
	const float one = 1, beta = e == kAdd ? 1 : 0;
	int slice = w.rows;
	if (w.type != LEO_TYPE_F16) slice = std::max(2, (int)std::min<size_t>(w.rows, kDequantElems / w.cols) & ~1);
	for (int r0 = 0; r0 < w.rows; r0 += slice) {
		const int nr = std::min(slice, w.rows - r0);
		const void *a = w.q + (size_t)r0 * w.cols * 2;
		if (w.type != LEO_TYPE_F16) {
			CUDA_TRY(launch(s->pdl, dequant, dim3(1024), dim3(256), s->stream, w, r0, nr, s->wtmp));
			a = s->wtmp;
		}
		BLAS_TRY(cublasGemmEx(s->blas, CUBLAS_OP_T, CUBLAS_OP_N, nr, n, w.cols, &one, a, CUDA_R_16F, w.cols, ab.h,
		                      CUDA_R_16F, w.cols, &beta, c + r0, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
		                      CUBLAS_GEMM_DEFAULT));
	}
	mark(s, "epilogue");
	if (e == kQKV) {
		CUDA_TRY(launch(s->pdl, qkv_epilogue, dim3((w.rows / 2 + 127) / 128, n), dim3(128), s->stream, (const float *)s->y,
		                w.rows, o));
	} else if (e == kSwiGLU) {
		const int hidden = w.rows / 2;
		CUDA_TRY(launch(s->pdl, swiglu_epilogue, dim3((hidden + 127) / 128, n), dim3(128), s->stream, (const float *)s->y,
		                hidden, o.y, next ? *next : ActOut{}));
		if (made_next) *made_next = next != nullptr;
	}
	CUDA_TRY(cudaGetLastError());
	return 0;
}

int run(leo_state *s, int n, int nout, int chunks, char *err);

// step enqueues one forward pass of n tokens on the state's stream,
// attending over chunks chunks of the cache.
int step(leo_state *s, int n, int nout, int chunks, char *err) {
	const leo_model *m = s->m;
	const leo_config &c = m->c;
	const int hd = c.dim / c.heads, kv_dim = hd * c.kv_heads;
	const size_t layer_kv = (size_t)s->slots * s->len * kv_dim;
	mark(s, "copy in");
	CUDA_TRY(cudaMemcpyAsync(s->x, s->hx, (size_t)n * c.dim * 4, cudaMemcpyHostToDevice, s->stream));
	CUDA_TRY(cudaMemcpyAsync(s->pos, s->hpos, n * 4, cudaMemcpyHostToDevice, s->stream));
	CUDA_TRY(cudaMemcpyAsync(s->seq, s->hseq, n * 4, cudaMemcpyHostToDevice, s->stream));
	if (nout > 0) CUDA_TRY(cudaMemcpyAsync(s->rows, s->hrows, nout * 4, cudaMemcpyHostToDevice, s->stream));
	// With norm_fuse, in decode steps (the matvec kernels), O's and down's
	// matvec make gate/up's and the next layer's QKV's activations
	// (norm_next), and the activation sets alternate so that no kernel
	// writes the set it reads: QKV 1, O 0, gate/up 1, down 0.
	const bool nf = s->norm_fuse && n <= kMaxCols;
	const int qkv_set = nf ? 1 : 0, gu_set = nf ? 1 : 0, down_set = nf ? 0 : 1;
	bool qkv_normed = false;  // the previous layer's down made this layer's QKV activations
	for (int l = 0; l < c.layers; l++) {
		const Layer &L = m->layers[l];
		Out qkv{};
		qkv.y = s->q;
		qkv.dim = c.dim;
		qkv.kv_dim = kv_dim;
		qkv.head_dim = hd;
		qkv.rope_half = c.rope_dim / 2;
		qkv.len = s->len;
		qkv.pos = s->pos;
		qkv.seq = s->seq;
		qkv.cos = m->cos;
		qkv.sin = m->sin;
		qkv.kc = s->kv + 2 * l * layer_kv;
		qkv.vc = qkv.kc + layer_kv;
		// The next product's weights, whose start the kernels before it
		// fetch into L2 (LEO_CUDA_L2_AHEAD).
		const Layer *next_layer = l + 1 < c.layers ? &m->layers[l + 1] : nullptr;
		const DevMat *after_down = next_layer ? &next_layer->qkv : nout > 0 ? &m->output : nullptr;
		ProductOpts qkv_opt;
		qkv_opt.set = qkv_set;
		qkv_opt.prepped = qkv_opt.normed = qkv_normed;
		qkv_opt.after = &L.o;
		qkv_opt.split = s->split_qkv;
		if (product(s, "qkv", L.qkv, s->x, n, nullptr, L.attn_norm, kQKV, qkv, err, qkv_opt)) return 1;
		mark(s, "attention");

		// Attention makes O's activations itself (no prep) where a block
		// of 32 lies within a head.
		const ActOut oa = act_out(s, L.o, n, 0);
		const bool o_prepped = fusable(s, oa) && hd % 32 == 0;
		CUDA_TRY(launch(s->pdl, attn_chunk, dim3(chunks, c.heads, n), dim3(kAttnThreads), s->stream, (const float *)s->q,
		                (const __half *)qkv.kc, (const __half *)qkv.vc, (const int *)s->pos, (const int *)s->seq, s->len,
		                c.heads, c.kv_heads, hd, 1.0f / sqrtf((float)hd), chunks, s->part, s->counters, s->att,
		                o_prepped ? oa : ActOut{}, ahead_of(s, &L.o, n)));
		Out res{};
		res.y = s->x;
		res.ld = c.dim;
		// O's matvec makes gate/up's activations where it can (norm_fuse).
		const ActOut gua = act_out(s, L.gu, n, gu_set);
		bool gu_normed = false;
		ProductOpts o_opt;
		o_opt.prepped = o_prepped;
		o_opt.after = &L.gu;
		o_opt.split = s->split;
		if (nf && fusable(s, gua)) {
			o_opt.next = &gua;
			o_opt.next_gain = L.ffn_norm;
			o_opt.made_next = &gu_normed;
		}
		if (product(s, "o", L.o, s->att, n, nullptr, nullptr, kAdd, res, err, o_opt)) return 1;

		// The SwiGLU epilogue makes down's activations where it can.
		Out glu{};
		glu.y = s->hb;
		glu.ld = c.hidden_dim;
		const ActOut da = act_out(s, L.down, n, down_set);
		bool down_prepped = false;
		ProductOpts gu_opt;
		gu_opt.set = gu_set;
		gu_opt.prepped = gu_opt.normed = gu_normed;
		gu_opt.next = fusable(s, da) ? &da : nullptr;
		gu_opt.made_next = &down_prepped;
		gu_opt.after = &L.down;
		if (product(s, "gate up", L.gu, s->x, n, nullptr, L.ffn_norm, kSwiGLU, glu, err, gu_opt)) return 1;

		// Down's matvec makes the next layer's QKV activations where it can
		// (norm_fuse).
		ProductOpts down_opt;
		down_opt.set = down_set;
		down_opt.prepped = down_prepped;
		down_opt.after = after_down;
		down_opt.split = s->split;
		ActOut qa{};
		qkv_normed = false;
		if (nf && next_layer) {
			qa = act_out(s, next_layer->qkv, n, qkv_set);
			if (fusable(s, qa)) {
				down_opt.next = &qa;
				down_opt.next_gain = next_layer->attn_norm;
				down_opt.made_next = &qkv_normed;
			}
		}
		if (product(s, "down", L.down, s->hb, n, nullptr, nullptr, kAdd, res, err, down_opt)) return 1;
	}
	if (nout > 0) {
		Out lo{};
		lo.y = s->logits;
		lo.ld = c.vocab;
		if (product(s, "output", m->output, s->x, nout, s->rows, m->output_norm, kStore, lo, err)) return 1;
		mark(s, "copy out");
		CUDA_TRY(cudaMemcpyAsync(s->hlogits, s->logits, (size_t)nout * c.vocab * 4, cudaMemcpyDeviceToHost, s->stream));
	}
	mark(s, "end");
	return 0;
}

}  // namespace

extern "C" {

int leo_abi_version(void) { return LEO_CUDA_ABI_VERSION; }

int leo_device_count(int *count, char *err) {
	*count = 0;
	cudaError_t e = cudaGetDeviceCount(count);
	if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) {
		*count = 0;
		return fail(err, "%s", cudaGetErrorString(e));
	}
	CUDA_TRY(e);
	return 0;
}

int leo_device_info(int device, char *name, int name_len, size_t *free_bytes, size_t *total_bytes, int *cc_major,
                    int *cc_minor, char *err) {
	cudaDeviceProp p;
	CUDA_TRY(cudaGetDeviceProperties(&p, device));
	CUDA_TRY(cudaSetDevice(device));
	CUDA_TRY(cudaMemGetInfo(free_bytes, total_bytes));
	snprintf(name, name_len, "%s", p.name);
	*cc_major = p.major;
	*cc_minor = p.minor;
	return 0;
}

int leo_copy_bandwidth(int device, size_t bytes, int iters, double *gbps, char *err) {
	if (iters < 1 || bytes == 0) return fail(err, "copy bandwidth needs at least one copy of at least one byte");
	CUDA_TRY(cudaSetDevice(device));
	void *a = nullptr, *b = nullptr;
	CUDA_TRY(cudaMalloc(&a, bytes));
	if (cudaMalloc(&b, bytes) != cudaSuccess) {
		cudaFree(a);
		return fail(err, "cannot allocate 2 × %.2f GiB to measure bandwidth", gib(bytes));
	}
	cudaEvent_t e0, e1;
	cudaEventCreate(&e0);
	cudaEventCreate(&e1);
	cudaMemset(a, 1, bytes);
	std::vector<float> ms;
	for (int i = 0; i < iters + 2; i++) {
		cudaEventRecord(e0);
		cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
		cudaEventRecord(e1);
		cudaEventSynchronize(e1);
		float t = 0;
		cudaEventElapsedTime(&t, e0, e1);
		if (i >= 2) ms.push_back(t);  // the first two warm up
	}
	cudaError_t e = cudaGetLastError();
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
	cudaFree(a);
	cudaFree(b);
	CUDA_TRY(e);
	std::sort(ms.begin(), ms.end());
	*gbps = 2.0 * bytes / (ms[ms.size() / 2] * 1e-3) / 1e9;
	return 0;
}

int leo_model_new(int device, const leo_config *c, leo_model **out, char *err) {
	*out = nullptr;
	const int hd = c->heads > 0 ? c->dim / c->heads : 0;
	if (c->dim <= 0 || c->heads <= 0 || c->kv_heads <= 0 || c->layers <= 0 || c->vocab <= 0 || c->context <= 0)
		return fail(err, "shape has a non-positive size");
	if (c->dim % 32 || c->hidden_dim % 32)
		return fail(err, "the CUDA kernels need widths that are multiples of 32 (dim %d, ffn %d)", c->dim, c->hidden_dim);
	if (hd % 8 || hd > 256 || c->heads % c->kv_heads || c->rope_dim % 2 || c->rope_dim > hd)
		return fail(err, "the CUDA kernels need a head size that is a multiple of 8 and at most 256 (got %d), and heads a multiple of kv heads", hd);
	CUDA_TRY(cudaSetDevice(device));
	leo_model *m = new leo_model();
	m->device = device;
	m->c = *c;
	m->layers.resize(c->layers);
	*out = m;
	return 0;
}

int leo_model_matrix(leo_model *m, int layer, int which, int type, int act, int rows, int cols, const void *data,
                     size_t bytes, char *err) {
	const leo_config &c = m->c;
	const int kv_dim = c.dim / c.heads * c.kv_heads;
	if (type != LEO_TYPE_F16 && type != LEO_TYPE_Q8_0 && type != LEO_TYPE_Q4_0)
		return fail(err, "matrix type %d is not one the CUDA kernels compute with (F16, Q8_0, Q4_0)", type);
	if ((which == LEO_W_OUTPUT) != (layer == -1) || layer < -1 || layer >= c.layers)
		return fail(err, "matrix %d of layer %d does not exist", which, layer);
	DevMat *dm;
	int total, row0 = 0, stride = 1, want_rows, want_cols = c.dim;
	Layer *L = layer >= 0 ? &m->layers[layer] : nullptr;
	switch (which) {
	case LEO_W_Q: dm = &L->qkv, total = c.dim + 2 * kv_dim, want_rows = c.dim; break;
	case LEO_W_K: dm = &L->qkv, total = c.dim + 2 * kv_dim, want_rows = kv_dim, row0 = c.dim; break;
	case LEO_W_V: dm = &L->qkv, total = c.dim + 2 * kv_dim, want_rows = kv_dim, row0 = c.dim + kv_dim; break;
	case LEO_W_O: dm = &L->o, total = want_rows = c.dim; break;
	case LEO_W_GATE: dm = &L->gu, total = 2 * c.hidden_dim, want_rows = c.hidden_dim, stride = 2; break;
	case LEO_W_UP: dm = &L->gu, total = 2 * c.hidden_dim, want_rows = c.hidden_dim, row0 = 1, stride = 2; break;
	case LEO_W_DOWN: dm = &L->down, total = want_rows = c.dim, want_cols = c.hidden_dim; break;
	case LEO_W_OUTPUT: dm = &m->output, total = want_rows = c.vocab; break;
	default: return fail(err, "unknown matrix %d", which);
	}
	if (rows != want_rows || cols != want_cols)
		return fail(err, "matrix %d of layer %d is %d×%d, want %d×%d", which, layer, rows, cols, want_rows, want_cols);
	if (bytes != ggml_bytes(type, rows, cols))
		return fail(err, "matrix %d of layer %d holds %zu bytes, want %zu", which, layer, bytes, ggml_bytes(type, rows, cols));
	if (total % 2) return fail(err, "matrix %d of layer %d has an odd number of rows (%d)", which, layer, total);
	if (act != LEO_ACT_DEFAULT && (act != LEO_ACT_Q8_K || type != LEO_TYPE_F16 || cols % 256))
		return fail(err, "matrix %d of layer %d: activation rounding %d needs F16 weights of rows of 256s", which, layer, act);
	CUDA_TRY(cudaSetDevice(m->device));
	if (dm->buf == nullptr) {
		size_t qb = quant_bytes(type, total, cols), all = qb + scale_bytes(type, total, cols);
		CUDA_TRY(cudaMalloc(&dm->buf, all));
		m->bytes += all;
		dm->m.type = type;
		dm->m.rows = total;
		dm->m.cols = cols;
		dm->m.q = dm->buf;
		dm->m.d = type == LEO_TYPE_F16 ? nullptr : (const __half *)(dm->buf + qb);
		dm->m.ds = scale_stride(cols);
		dm->act = act;
		// Zero the scales' row padding, which no kernel reads: no garbage
		// on the device.
		if (all > qb) CUDA_TRY(cudaMemset(dm->buf + qb, 0, all - qb));
	} else if (dm->m.type != type) {
		return fail(err, "layer %d: the matrices computed together (Q, K, V; gate, up) must share a type", layer);
	}
	void *staging = nullptr;
	CUDA_TRY(cudaMalloc(&staging, bytes));
	cudaError_t e = cudaMemcpy(staging, data, bytes, cudaMemcpyHostToDevice);
	if (e == cudaSuccess) {
		const size_t blocks = (size_t)rows * cols / 32;
		const int grid = (int)std::min<size_t>((blocks + 255) / 256, 65535);
		e = launch(false, repack, dim3(grid), dim3(256), (cudaStream_t)0, (const uint8_t *)staging, type, rows, cols,
		           dm->buf, (__half *)dm->m.d, row0, stride);
		if (e == cudaSuccess) e = cudaDeviceSynchronize();
	}
	cudaFree(staging);
	CUDA_TRY(e);
	dm->parts++;
	return 0;
}

int leo_model_vector(leo_model *m, int layer, int which, const float *data, int n, char *err) {
	float **dst;
	if (which == LEO_V_OUTPUT_NORM && layer == -1) {
		dst = &m->output_norm;
	} else if (layer >= 0 && layer < m->c.layers && (which == LEO_V_ATTN_NORM || which == LEO_V_FFN_NORM)) {
		dst = which == LEO_V_ATTN_NORM ? &m->layers[layer].attn_norm : &m->layers[layer].ffn_norm;
	} else {
		return fail(err, "vector %d of layer %d does not exist", which, layer);
	}
	if (n != m->c.dim) return fail(err, "vector %d of layer %d has %d elements, want %d", which, layer, n, m->c.dim);
	CUDA_TRY(cudaSetDevice(m->device));
	if (*dst == nullptr) {
		CUDA_TRY(cudaMalloc((void **)dst, n * 4));
		m->bytes += n * 4;
	}
	CUDA_TRY(cudaMemcpy(*dst, data, n * 4, cudaMemcpyHostToDevice));
	return 0;
}

int leo_model_rope(leo_model *m, const float *cos, const float *sin, int n, char *err) {
	if (n != m->c.context * (m->c.rope_dim / 2))
		return fail(err, "RoPE tables have %d entries, want %d", n, m->c.context * (m->c.rope_dim / 2));
	CUDA_TRY(cudaSetDevice(m->device));
	if (m->cos == nullptr) {
		CUDA_TRY(cudaMalloc((void **)&m->cos, n * 4));
		CUDA_TRY(cudaMalloc((void **)&m->sin, n * 4));
		m->bytes += 2 * n * 4;
	}
	CUDA_TRY(cudaMemcpy(m->cos, cos, n * 4, cudaMemcpyHostToDevice));
	CUDA_TRY(cudaMemcpy(m->sin, sin, n * 4, cudaMemcpyHostToDevice));
	return 0;
}

size_t leo_model_bytes(const leo_model *m) { return m->bytes; }

void leo_model_free(leo_model *m) {
	if (!m) return;
	cudaSetDevice(m->device);
	for (Layer &l : m->layers) {
		for (DevMat *d : {&l.qkv, &l.o, &l.gu, &l.down}) cudaFree(d->buf);
		cudaFree(l.attn_norm);
		cudaFree(l.ffn_norm);
	}
	cudaFree(m->output.buf);
	cudaFree(m->output_norm);
	cudaFree(m->cos);
	cudaFree(m->sin);
	delete m;
}

int leo_state_bytes(const leo_model *m, int slots, int len, int max_batch, size_t *bytes, char *err) {
	if (slots <= 0 || len <= 0 || len > m->c.context || max_batch <= 0)
		return fail(err, "bad state size: %d slots of %d positions (context %d), batches of %d", slots, len,
		            m->c.context, max_batch);
	*bytes = sizes(m, slots, len, max_batch, mmq_tokens_setting(m->device), fuse_prep_setting()).total();
	return 0;
}

int leo_state_new(leo_model *m, int slots, int len, int max_batch, leo_state **out, char *err) {
	*out = nullptr;
	for (const Layer &l : m->layers)
		if (l.qkv.parts != 3 || l.gu.parts != 2 || !l.o.buf || !l.down.buf || !l.attn_norm || !l.ffn_norm)
			return fail(err, "a layer's weights were not all uploaded");
	if (!m->output.buf || !m->output_norm || !m->cos) return fail(err, "the classifier, final norm or RoPE tables were not uploaded");
	size_t need = 0;
	if (leo_state_bytes(m, slots, len, max_batch, &need, err)) return 1;
	CUDA_TRY(cudaSetDevice(m->device));
	leo_state *s = new leo_state();
	s->m = m;
	s->device = m->device;
	s->slots = slots;
	s->len = len;
	s->max_batch = max_batch;
	s->chunks = (len + kAttnChunk - 1) / kAttnChunk;
	int major = 0;
	cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, m->device);
	// Programmatic dependent launch measured no faster (a little slower)
	// on an H200 (docs/perf.md): off unless LEO_CUDA_PDL=1.
	const char *pdl = getenv("LEO_CUDA_PDL");
	s->pdl = major >= 9 && pdl && strcmp(pdl, "1") == 0;
	s->prof.on = getenv("LEO_CUDA_PROFILE") != nullptr;
	const int fuse = fuse_prep_setting();
	s->fuse_prep = fuse >= 1;
	s->norm_fuse = fuse >= 2;
	s->split = matvec_split_setting("LEO_CUDA_MATVEC_SPLIT");
	s->split_qkv = matvec_split_setting("LEO_CUDA_MATVEC_SPLIT_QKV");
	s->l2_ahead = l2_ahead_setting();
	s->sms = 1;
	cudaDeviceGetAttribute(&s->sms, cudaDevAttrMultiProcessorCount, m->device);
	if (matvec_setup(s, err)) {
		delete s;
		return 1;
	}
	s->mmq_tokens = mmq_tokens_setting(m->device);
	if (s->mmq_tokens > kMaxCols) {
		char why[LEO_ERR_LEN] = "";
		if (mmq_setup(s, why)) {
			fprintf(stderr, "leo_cuda: mmq is off (batches take the matvec kernels and cuBLAS): %s\n", why);
			cudaGetLastError();  // not the first step's error
			s->mmq_tokens = 0;
		}
	}
	StateSizes z = sizes(m, slots, len, max_batch, s->mmq_tokens, fuse);
	size_t free_b = 0, total_b = 0;
	cudaError_t me = cudaMemGetInfo(&free_b, &total_b);
	if (me != cudaSuccess || z.total() > free_b) {
		if (me != cudaSuccess)
			fail(err, "cudaMemGetInfo: %s", cudaGetErrorString(me));
		else
			fail(err, "the KV cache (%d sequences × %d positions) and buffers need %.2f GiB of GPU memory; %.2f GiB of %.2f are free: lower the context size or the concurrency",
			     slots, len, gib(z.total()), gib(free_b), gib(total_b));
		delete s;
		return 1;
	}
	int bad = alloc(s, (void **)&s->kv, z.kv, err) || alloc(s, (void **)&s->x, z.x, err) ||
	          alloc(s, (void **)&s->q, z.q, err) || alloc(s, (void **)&s->att, z.att, err) ||
	          alloc(s, (void **)&s->hb, z.hb, err) || alloc(s, (void **)&s->y, z.y, err) ||
	          alloc(s, (void **)&s->part, z.part, err) || alloc(s, (void **)&s->logits, z.logits, err) ||
	          alloc(s, (void **)&s->act[0].h, z.xh, err) || alloc(s, (void **)&s->act[0].q, z.xq, err) ||
	          alloc(s, (void **)&s->act[0].d, z.xd, err) || alloc(s, (void **)&s->act[0].s, z.xs, err) ||
	          alloc(s, (void **)&s->pos, z.meta, err) || alloc(s, (void **)&s->seq, z.meta, err) ||
	          alloc(s, (void **)&s->rows, z.meta, err) || alloc(s, (void **)&s->wtmp, z.wtmp, err) ||
	          alloc(s, &s->blas_ws, z.blas, err) || alloc(s, (void **)&s->counters, z.counters, err) ||
	          alloc(s, (void **)&s->mmq_part, z.mmq, err) || alloc(s, (void **)&s->fuse_counters, z.fuse_counters, err) ||
	          alloc(s, (void **)&s->ssq, z.ssq, err);
	if (z.act_sets == 2)
		bad = bad || alloc(s, (void **)&s->act[1].h, z.xh, err) || alloc(s, (void **)&s->act[1].q, z.xq, err) ||
		      alloc(s, (void **)&s->act[1].d, z.xd, err) || alloc(s, (void **)&s->act[1].s, z.xs, err);
	else
		s->act[1] = s->act[0];
	cudaError_t e = cudaSuccess;
	if (!bad) {
		e = cudaMallocHost((void **)&s->hx, z.x);
		if (e == cudaSuccess) e = cudaMallocHost((void **)&s->hlogits, z.logits);
		if (e == cudaSuccess) e = cudaMallocHost((void **)&s->hpos, z.meta);
		if (e == cudaSuccess) e = cudaMallocHost((void **)&s->hseq, z.meta);
		if (e == cudaSuccess) e = cudaMallocHost((void **)&s->hrows, z.meta);
		if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
		// A fresh cache holds zeros: no stale NaN can reach a softmax.
		// On the state's own stream, and waited for: the stream does not
		// follow the default one, so a first step could otherwise race
		// the clearing of a large cache.
		if (e == cudaSuccess) e = cudaMemsetAsync(s->kv, 0, z.kv, s->stream);
		if (e == cudaSuccess) e = cudaMemsetAsync(s->counters, 0, z.counters, s->stream);
		if (e == cudaSuccess && z.fuse_counters) e = cudaMemsetAsync(s->fuse_counters, 0, z.fuse_counters, s->stream);
		if (e == cudaSuccess && z.ssq) e = cudaMemsetAsync(s->ssq, 0, z.ssq, s->stream);
		if (e == cudaSuccess) e = cudaStreamSynchronize(s->stream);
		if (e != cudaSuccess) bad = fail(err, "state: %s", cudaGetErrorString(e));
	}
	if (!bad && max_batch > kMaxCols) {
		cublasStatus_t b = cublasCreate(&s->blas);
		if (b == CUBLAS_STATUS_SUCCESS) b = cublasSetStream(s->blas, s->stream);
		if (b == CUBLAS_STATUS_SUCCESS) b = cublasSetWorkspace(s->blas, s->blas_ws, z.blas);
		if (b != CUBLAS_STATUS_SUCCESS) bad = fail(err, "cuBLAS: status %d", (int)b);
	}
	if (bad) {
		leo_state_free(s);
		return 1;
	}
	*out = s;
	return 0;
}

void leo_state_buffers(leo_state *s, float **x, int32_t **pos, int32_t **seq, int32_t **rows, float **logits) {
	*x = s->hx;
	*pos = s->hpos;
	*seq = s->hseq;
	*rows = s->hrows;
	*logits = s->hlogits;
}

int leo_forward(leo_state *s, int n, int nout, char *err) {
	if (n <= 0 || n > s->max_batch || nout < 0 || nout > n)
		return fail(err, "batch of %d tokens with %d logits; this state takes 1 to %d", n, nout, s->max_batch);
	int top = 0;
	for (int i = 0; i < n; i++) {
		if (s->hpos[i] < 0 || s->hpos[i] >= s->len || s->hseq[i] < 0 || s->hseq[i] >= s->slots)
			return fail(err, "token %d: position %d or slot %d out of range", i, s->hpos[i], s->hseq[i]);
		top = std::max(top, (int)s->hpos[i]);
	}
	for (int i = 0; i < nout; i++)
		if (s->hrows[i] < 0 || s->hrows[i] >= n) return fail(err, "logit row %d is not a token of the batch", s->hrows[i]);
	// Attend over a power-of-two number of chunks, so that few graphs cover
	// every position.
	int chunks = 1;
	while (chunks * kAttnChunk < top + 1) chunks *= 2;
	chunks = std::min(chunks, s->chunks);
	CUDA_TRY(cudaSetDevice(s->device));
	if (run(s, n, nout, chunks, err)) {
		// Copies from the host buffers may still be in flight: wait, so
		// that the next step's inputs do not overwrite them.
		cudaStreamSynchronize(s->stream);
		return 1;
	}
	return 0;
}

}  // extern "C"

namespace {

// run enqueues and waits for one step: from its captured graph when it has
// one (capturing it first where allowed), else kernel by kernel.
int run(leo_state *s, int n, int nout, int chunks, char *err) {
	if (s->prof.on) {
		if (step(s, n, nout, chunks, err)) return 1;
		CUDA_TRY(cudaStreamSynchronize(s->stream));
		charge(s);
		return 0;
	}
	auto key = std::make_tuple(n, nout, chunks);
	auto it = s->graphs.find(key);
	if (n <= kGraphTokens && it == s->graphs.end() && s->graphs.size() < kMaxGraphs) {
		// Capture the step once per shape. Where capture fails (a library
		// call that cannot be captured), the shape runs without a graph.
		cudaGraph_t g = nullptr;
		cudaGraphExec_t exec = nullptr;
		CUDA_TRY(cudaStreamBeginCapture(s->stream, cudaStreamCaptureModeThreadLocal));
		int bad = step(s, n, nout, chunks, err);
		cudaError_t e = cudaStreamEndCapture(s->stream, &g);
		if (!bad && e == cudaSuccess) e = cudaGraphInstantiateWithFlags(&exec, g, 0);
		if (g) cudaGraphDestroy(g);
		if (bad || e != cudaSuccess) {
			cudaGetLastError();  // clear the capture's error: the step runs below
			exec = nullptr;
		}
		it = s->graphs.emplace(key, exec).first;
	}
	if (it != s->graphs.end() && it->second) {
		CUDA_TRY(cudaGraphLaunch(it->second, s->stream));
	} else if (step(s, n, nout, chunks, err)) {
		return 1;
	}
	CUDA_TRY(cudaStreamSynchronize(s->stream));
	CUDA_TRY(cudaGetLastError());
	return 0;
}

}  // namespace

extern "C" {

void leo_state_free(leo_state *s) {
	if (!s) return;
	cudaSetDevice(s->device);
	if (s->stream) cudaStreamSynchronize(s->stream);
	print_profile(s);
	for (auto &g : s->graphs)
		if (g.second) cudaGraphExecDestroy(g.second);
	if (s->blas) cublasDestroy(s->blas);
	for (void *p : s->allocs) cudaFree(p);
	cudaFreeHost(s->hx);
	cudaFreeHost(s->hlogits);
	cudaFreeHost(s->hpos);
	cudaFreeHost(s->hseq);
	cudaFreeHost(s->hrows);
	if (s->stream) cudaStreamDestroy(s->stream);
	delete s;
}

}  // extern "C"
