// kernels_test.cpp: kernels.cuh's kernels run on the CPU under cuda_emu.h,
// against double-precision references, on random data of fixed seeds and
// small shapes. emu_test.go builds and runs it:
//
//   g++ -std=c++20 -O2 -pthread -fno-strict-aliasing -DLEO_CUDA_EMU runtime/cuda/emu/kernels_test.cpp
//
// It prints a line a group of cases and exits non-zero when any fails.
#include <cstdarg>

#include "../kernels.cuh"

using namespace leo;
using leo_emu::run_grid;

namespace {

// The case running, for the failure messages (and the fault handler).
char g_case[256];
int g_failures;

void set_case(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void set_case(const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(g_case, sizeof g_case, fmt, ap);
	va_end(ap);
}

// fault reports an access past a buffer's end (Buf's guard page), or a
// fiber's stack overflow, with the case that made it.
void fault(int) {
	const char *m = "kernels_test: segmentation fault (past the end of a buffer?) in ";
	(void)!write(2, m, strlen(m));
	(void)!write(2, g_case, strlen(g_case));
	(void)!write(2, "\n", 1);
	_exit(2);
}

// Buf is n Ts that end where an inaccessible page begins, so that a read
// or write past the end faults instead of passing unseen. The start is
// 16-byte aligned (the kernels load 16 bytes at a time).
template <class T> struct Buf {
	T *p = nullptr;
	size_t n = 0;
	void *map = nullptr;
	size_t len = 0;
	Buf() = default;
	explicit Buf(size_t n_) : n(n_) {
		const size_t bytes = (n * sizeof(T) + 15) / 16 * 16, pages = (bytes + 4095) / 4096;
		len = (pages + 1) * 4096;
		map = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (map == MAP_FAILED) abort();
		mprotect((uint8_t *)map + pages * 4096, 4096, PROT_NONE);
		p = (T *)((uint8_t *)map + pages * 4096 - bytes);
	}
	Buf(const Buf &) = delete;
	Buf &operator=(const Buf &) = delete;
	Buf(Buf &&o) noexcept { *this = std::move(o); }
	Buf &operator=(Buf &&o) noexcept {
		std::swap(p, o.p);
		std::swap(n, o.n);
		std::swap(map, o.map);
		std::swap(len, o.len);
		return *this;
	}
	~Buf() {
		if (map) munmap(map, len);
	}
	T &operator[](size_t i) { return p[i]; }
	const T &operator[](size_t i) const { return p[i]; }
};

std::mt19937 rng(1);
double uniform(double lo, double hi) { return lo + (hi - lo) * (rng() / 4294967296.0); }

// Weights of type T (1 F16, 8 Q8_0, 2 Q4_0) in the layout of kernels.cuh,
// registered as weights (the ranges L2 prefetches may touch), and their
// values as doubles.
struct Weights {
	int type, rows, cols, ds;
	size_t qbytes;
	Buf<uint8_t> buf;  // quants, then scales
	std::vector<double> W;
	Mat mat() const { return Mat{type, rows, cols, buf.p, type == 1 ? nullptr : (const __half *)(buf.p + qbytes), ds}; }
};

Weights make_weights(int T, int rows, int cols) {
	Weights w{T, rows, cols, scale_stride(cols), 0, {}, {}};
	const int blocks = cols / 32;
	w.qbytes = T == 1 ? (size_t)rows * cols * 2 : T == 8 ? (size_t)rows * cols : (size_t)rows * cols / 2;
	w.buf = Buf<uint8_t>(w.qbytes + (T == 1 ? 0 : (size_t)rows * w.ds * 2));
	memset(w.buf.p, 0, w.buf.n);
	w.W.assign((size_t)rows * cols, 0);
	__half *d = (__half *)(w.buf.p + w.qbytes);
	for (int r = 0; r < rows; r++)
		for (int b = 0; b < blocks; b++) {
			const float sc = T == 1 ? 1 : (float)(__half)uniform(-0.02, 0.02);
			if (T != 1) d[(size_t)r * w.ds + b] = (__half)sc;
			int v[32];
			for (int j = 0; j < 32; j++) {
				const size_t e = (size_t)r * cols + b * 32 + j;
				if (T == 8) {
					v[j] = (int)(rng() % 256) - 128;  // a file's Q8_0 may hold -128
					w.buf[e] = (uint8_t)v[j];
					w.W[e] = (double)sc * v[j];
				} else if (T == 2) {
					v[j] = (int)(rng() % 16) - 8;
					w.W[e] = (double)sc * v[j];
				} else {
					const __half h = (__half)uniform(-1, 1);
					memcpy(w.buf.p + e * 2, &h, 2);
					w.W[e] = (double)(float)h;
				}
			}
			if (T == 2)  // byte j: element j low, j+16 high, nibble x for x-8
				for (int j = 0; j < 16; j++)
					w.buf[((size_t)r * blocks + b) * 16 + j] = (uint8_t)((v[j] + 8) | ((v[j + 16] + 8) << 4));
		}
	leo_emu::add_weights(w.buf.p, w.buf.n);
	return w;
}

// Acts: activations of tokens rows of cols, for whole groups (alloc) of
// tokens, those past n stale: halves (F16 weights) or int8 blocks, random,
// and their values as doubles (n tokens).
struct Acts {
	int n, alloc, cols;
	Buf<__half> h;
	Buf<int8_t> q;
	Buf<float> d;
	Buf<int> s;
	std::vector<double> X;
	Act act() const { return Act{h.p, q.p, d.p, s.p, nullptr, 0}; }
};

Acts make_acts(int T, int n, int alloc, int cols) {
	const int blocks = cols / 32;
	Acts a{n, alloc, cols, Buf<__half>((size_t)alloc * cols), Buf<int8_t>((size_t)alloc * cols),
	       Buf<float>((size_t)alloc * blocks), Buf<int>((size_t)alloc * blocks), {}};
	a.X.assign((size_t)n * cols, 0);
	for (int t = 0; t < alloc; t++)
		for (int b = 0; b < blocks; b++) {
			const float d = (float)uniform(0.001, 0.02);
			int sum = 0;
			for (int j = 0; j < 32; j++) {
				const size_t i = (size_t)t * cols + b * 32 + j;
				const int q = (int)(rng() % 255) - 127;
				a.q[i] = (int8_t)q;
				sum += q;
				a.h[i] = (__half)uniform(-1, 1);
				if (t < n) a.X[i] = T == 1 ? (double)(float)a.h[i] : (double)d * q;
			}
			a.d[(size_t)t * blocks + b] = d;
			a.s[(size_t)t * blocks + b] = sum;
		}
	return a;
}

// expect_near records a failure when got is not within tol of want.
bool expect_near(double got, double want, double tol, const char *what, int t, int r) {
	if (std::fabs(got - want) <= tol) return true;  // (false for NaN)
	if (g_failures++ < 20)
		printf("FAIL %s: %s t=%d r=%d: got %.9g want %.9g (tol %.3g)\n", g_case, what, t, r, got, want, tol);
	return false;
}

void expect(bool ok, const char *what) {
	if (ok) return;
	if (g_failures++ < 20) printf("FAIL %s: %s\n", g_case, what);
}

template <class T> bool same_bits(const T &a, const T &b) { return memcmp(&a, &b, sizeof a) == 0; }

// A sentinel that no kernel writes: outputs past the rows must keep it.
constexpr float kSentinel = -12345.5f;

// The next matrix's weights, that kernels fetch into L2 (Ahead): their
// ranges are registered as weights, and check_ahead finds every byte of
// them fetched exactly once.
struct AheadWeights {
	Buf<uint8_t> buf{3 * kAheadPiece + 1024};
	AheadWeights() { leo_emu::add_weights(buf.p, buf.n); }
	// The quants of 3.5 pieces (the last partial), and 256 bytes of scales.
	Ahead ahead(int first) const {
		return Ahead{{buf.p, buf.p + 3 * kAheadPiece + 512}, {3 * kAheadPiece + 512 - 16 * 3, 256}, first};
	}
};

void check_ahead(const Ahead &a, long long blocks) {
	std::vector<leo_emu::Range> got = leo_emu::prefetched;
	leo_emu::prefetched.clear();
	if (blocks - a.first <= 0) {
		expect(got.empty(), "ahead: fetched with no issuing blocks");
		return;
	}
	for (int r = 0; r < 2; r++) {
		std::vector<leo_emu::Range> in;
		for (const leo_emu::Range &g : got)
			if (g.p >= a.p[r] && g.p < a.p[r] + a.bytes[r]) in.push_back(g);
		std::sort(in.begin(), in.end(), [](const leo_emu::Range &x, const leo_emu::Range &y) { return x.p < y.p; });
		const uint8_t *at = a.p[r];
		bool ok = true;
		for (const leo_emu::Range &g : in) {
			ok = ok && g.p == at;
			at = g.p + g.bytes;
		}
		expect(ok && at == a.p[r] + a.bytes[r], "ahead: the pieces do not cover the range exactly once");
	}
	size_t total = 0;
	for (const leo_emu::Range &g : got) total += g.bytes;
	expect(total == (size_t)a.bytes[0] + a.bytes[1], "ahead: fetched bytes outside the ranges, or twice");
}

// matvec<T, NC, E, S> over n tokens, launched as forward.cu does.
template <int T, int NC, int E, int S>
dim3 matvec_launch(const Mat &w, const Act &a, const Out &o, int n, const Ahead &ah) {
	const int per_block = kMatvecWarps / S * kRowsPerWarp;
	const dim3 grid((w.rows + per_block - 1) / per_block, (n + NC - 1) / NC);
	run_grid(matvec<T, NC, E, S>, grid, dim3(kMatvecWarps * kWarp), 0, w, a, o, n, ah);
	return grid;
}

template <int E, int S, int T>
dim3 matvec_nc(int nc, const Mat &w, const Act &a, const Out &o, int n, const Ahead &ah) {
	switch (nc) {
	case 1: return matvec_launch<T, 1, E, S>(w, a, o, n, ah);
	case 2: return matvec_launch<T, 2, E, S>(w, a, o, n, ah);
	case 4: return matvec_launch<T, 4, E, S>(w, a, o, n, ah);
	default: return matvec_launch<T, 8, E, S>(w, a, o, n, ah);
	}
}

template <int E, int S>
dim3 matvec_any(int nc, const Mat &w, const Act &a, const Out &o, int n, const Ahead &ah) {
	switch (w.type) {
	case 1: return matvec_nc<E, S, 1>(nc, w, a, o, n, ah);
	case 8: return matvec_nc<E, S, 8>(nc, w, a, o, n, ah);
	default: return matvec_nc<E, S, 2>(nc, w, a, o, n, ah);
	}
}

template <int E>
dim3 matvec_split(int split, int nc, const Mat &w, const Act &a, const Out &o, int n, const Ahead &ah) {
	if constexpr (E == kStore || E == kSwiGLU) {
		if (split != 1) abort();
		return matvec_any<E, 1>(nc, w, a, o, n, ah);
	} else {
		if (split == 4) return matvec_any<E, 4>(nc, w, a, o, n, ah);
		if (split == 2) return matvec_any<E, 2>(nc, w, a, o, n, ah);
		return matvec_any<E, 1>(nc, w, a, o, n, ah);
	}
}

int matvec_cols(int n) { return n <= 2 ? n : n <= 4 ? 4 : kMaxCols; }
int round_up(int n, int m) { return (n + m - 1) / m * m; }
const char *type_name(int T) { return T == 1 ? "F16" : T == 8 ? "Q8_0" : "Q4_0"; }

// --- a. matvec: kStore, and kAdd with each split ---------------------------

void test_matvec() {
	AheadWeights aw;
	int cases = 0;
	for (int T : {1, 8, 2})
		for (int cols : {96, 288})
			for (int n : {1, 2, 3, 4, 5, 8, 13})
				for (int v = 0; v < 4; v++) {  // kStore; kAdd with splits 1, 2, 4
					const int E = v == 0 ? kStore : kAdd, split = v == 0 ? 1 : 1 << (v - 1);
					const int rows = 36;  // not a multiple of a block's rows (8 with S=1)
					const int nc = matvec_cols(n), alloc = round_up(n, nc), ld = rows + 4;
					set_case("matvec %s cols=%d n=%d nc=%d %s split=%d", type_name(T), cols, n, nc,
					         E == kStore ? "kStore" : "kAdd", split);
					Weights w = make_weights(T, rows, cols);
					Acts a = make_acts(T, n, alloc, cols);
					Buf<float> y((size_t)n * ld);
					std::vector<double> y0(y.n);
					for (size_t i = 0; i < y.n; i++) y[i] = (i % ld) < (size_t)rows ? (float)uniform(-1, 1) : kSentinel;
					for (size_t i = 0; i < y.n; i++) y0[i] = y[i];
					Out o{};
					o.y = y.p;
					o.ld = ld;
					const Ahead ah = aw.ahead(cases++ % 3 == 0 ? 0 : 2);
					const dim3 grid = E == kStore ? matvec_split<kStore>(split, nc, w.mat(), a.act(), o, n, ah)
					                              : matvec_split<kAdd>(split, nc, w.mat(), a.act(), o, n, ah);
					check_ahead(ah, (long long)grid.x * grid.y);
					for (int t = 0; t < n; t++) {
						for (int r = 0; r < rows; r++) {
							double want = 0, mag = 0;
							for (int k = 0; k < cols; k++) {
								const double p = w.W[(size_t)r * cols + k] * a.X[(size_t)t * cols + k];
								want += p;
								mag += std::fabs(p);
							}
							const double base = E == kAdd ? y0[(size_t)t * ld + r] : 0;
							if (!expect_near(y[(size_t)t * ld + r], base + want, 1e-5 * (mag + std::fabs(base)) + 1e-30, "y", t, r))
								break;
						}
						for (int r = rows; r < ld; r++) expect(y[(size_t)t * ld + r] == kSentinel, "a row past the matrix's written");
					}
				}
	printf("matvec: %d cases\n", cases);
}

// --- activations made by the kernels -------------------------------------

// ActBufs: activation buffers for alloc tokens of cols, filled with
// garbage (what an earlier product left), in the form a matrix of type T
// reads them (forward.cu's act_out for matvec): halves for F16, int8
// blocks for Q8_0 and Q4_0.
struct ActBufs {
	int T, alloc, cols;
	Buf<__half> h;
	Buf<int8_t> q;
	Buf<float> d;
	Buf<int> s;
	ActBufs(int T_, int alloc_, int cols_)
	    : T(T_), alloc(alloc_), cols(cols_), h((size_t)alloc * cols), q((size_t)alloc * cols),
	      d((size_t)alloc * cols / 32), s((size_t)alloc * cols / 32) {
		for (size_t i = 0; i < h.n; i++) h[i] = (__half)uniform(-1, 1), q[i] = (int8_t)(rng() % 255 - 127);
		for (size_t i = 0; i < d.n; i++) d[i] = (float)uniform(0.001, 0.02), s[i] = (int)(rng() % 1000);
	}
	ActOut out() { return T == 1 ? ActOut{h.p, nullptr, nullptr, nullptr, kRoundNone, cols, false}
	                             : ActOut{nullptr, q.p, d.p, s.p, kRoundNone, cols, false}; }
	Act act() const { return Act{h.p, q.p, d.p, s.p, nullptr, 0}; }
};

// values are the activations in b of n tokens, as doubles.
std::vector<double> values(const ActBufs &b, int n) {
	std::vector<double> v((size_t)n * b.cols);
	for (size_t i = 0; i < v.size(); i++) v[i] = b.T == 1 ? (double)(float)b.h[i] : (double)b.d[i / 32] * b.q[i];
	return v;
}

// quantize_ref is act_store's int8 block of 32 values v: GGML's
// quantize_row_q8_0, q = v·(127/max|v|) rounded half to even, the scale
// max|v|/127 rounded to half unless float_scale.
void quantize_ref(const float *v, int8_t *q, float *d, int *s, bool float_scale) {
	float amax = 0;
	for (int j = 0; j < 32; j++) amax = std::max(amax, std::fabs(v[j]));
	const float id = amax != 0 ? 127.0f / amax : 0.0f;
	int sum = 0;
	for (int j = 0; j < 32; j++) {
		q[j] = (int8_t)nearbyintf(v[j] * id);
		sum += q[j];
	}
	*d = float_scale ? amax / 127.0f : (float)(__half)(amax / 127.0f);
	*s = sum;
}

// quant_error bounds, per element, what making activations of v in the
// form of type T costs: half a quantization step of its block (int8), or
// a half's rounding.
std::vector<double> quant_error(int T, const std::vector<double> &v, int n, int cols) {
	std::vector<double> e(v.size());
	for (int t = 0; t < n; t++)
		for (int b = 0; b < cols / 32; b++) {
			double amax = 0;
			for (int j = 0; j < 32; j++) amax = std::max(amax, std::fabs(v[(size_t)t * cols + b * 32 + j]));
			for (int j = 0; j < 32; j++) {
				const size_t i = (size_t)t * cols + b * 32 + j;
				e[i] = T == 1 ? std::fabs(v[i]) * 0x1p-11 : 0.5 * amax / 127 * 1.01 + std::fabs(v[i]) * 1e-6;
			}
		}
	return e;
}

// check_product checks y[t*ld + r] (n tokens, rows) against W·v, within the
// float sums' error and, per element, W's share of err.
void check_product(const float *y, int ld, const Weights &w, const std::vector<double> &v,
                   const std::vector<double> &err, int n, const char *what) {
	for (int t = 0; t < n; t++)
		for (int r = 0; r < w.rows; r++) {
			double want = 0, mag = 0, tol = 0;
			for (int k = 0; k < w.cols; k++) {
				const double wk = w.W[(size_t)r * w.cols + k], vk = v[(size_t)t * w.cols + k];
				want += wk * vk;
				mag += std::fabs(wk * vk);
				tol += std::fabs(wk) * err[(size_t)t * w.cols + k];
			}
			if (!expect_near(y[(size_t)t * ld + r], want, tol + 1e-5 * mag + 1e-30, what, t, r)) return;
		}
}

// --- b. prep, then matvec on its activations -----------------------------

void test_prep() {
	AheadWeights aw;
	int cases = 0;
	const float eps = 1e-5f;
	for (int T : {1, 8, 2})
		for (int cols : {288, 544})
			for (int n : {1, 3, 8}) {
				const int nc = matvec_cols(n), alloc = round_up(n, nc), rows = 40;
				const bool pick = n == 3;  // prep's rows: the tokens that want logits
				const int xrows = pick ? 5 : n;
				const int picked[3] = {4, 0, 2};
				set_case("prep+matvec %s cols=%d n=%d%s", type_name(T), cols, n, pick ? " rows" : "");
				cases++;
				Buf<float> x((size_t)xrows * cols), gain(cols);
				Buf<int> rowsel(3);
				for (size_t i = 0; i < x.n; i++) x[i] = (float)uniform(-2, 2);
				for (int i = 0; i < cols; i++) gain[i] = (float)uniform(0.5, 1.5);
				for (int i = 0; i < 3; i++) rowsel[i] = picked[i];
				ActBufs ab(T, alloc, cols);
				const ActOut ao = ab.out();
				const Ahead ah = aw.ahead(cases % 2);
				const dim3 grid((cols + 255) / 256, n);
				run_grid(prep, grid, dim3(kPrepThreads), 0, (const float *)x.p, cols, pick ? (const int *)rowsel.p : nullptr,
				         (const float *)gain.p, eps, ao.h, ao.q, ao.d, ao.s, ao.round, ah);
				check_ahead(ah, (long long)grid.x * grid.y);
				// The reference: x·gain/rms in float as prep computes it, then
				// act_store's rounding, bit for bit; and in double, for the product.
				std::vector<double> v((size_t)n * cols);
				for (int t = 0; t < n; t++) {
					const float *xr = x.p + (size_t)(pick ? picked[t] : t) * cols;
					double sum = 0, sumd = 0;
					for (int i = 0; i < cols; i++) sum += (double)(xr[i] * xr[i]), sumd += (double)xr[i] * xr[i];
					const float mean = (float)(sum / cols), scale = (float)(1.0 / sqrt((double)(mean + eps)));
					const double scaled = 1 / std::sqrt(sumd / cols + eps);
					for (int b = 0; b < cols / 32; b++) {
						float f[32];
						for (int j = 0; j < 32; j++) {
							const int i = b * 32 + j;
							f[j] = xr[i] * scale;
							f[j] *= gain[i];
							v[(size_t)t * cols + i] = (double)xr[i] * scaled * gain[i];
						}
						const size_t at = (size_t)t * cols + b * 32;
						if (T == 1) {
							for (int j = 0; j < 32; j++)
								if (!same_bits(ab.h[at + j], (__half)f[j])) {
									expect(false, "prep: a half differs from x·gain/rms rounded");
									break;
								}
							continue;
						}
						int8_t q[32];
						float d;
						int s;
						quantize_ref(f, q, &d, &s, false);
						const size_t bi = (size_t)t * (cols / 32) + b;
						expect(memcmp(q, ab.q.p + at, 32) == 0, "prep: int8 quants differ from quantize_row_q8_0's");
						expect(same_bits(ab.d[bi], d), "prep: a block's scale differs from quantize_row_q8_0's");
						expect(ab.s[bi] == s, "prep: a block's sum differs from its quants'");
					}
				}
				Weights w = make_weights(T, rows, cols);
				Buf<float> y((size_t)n * rows);
				Out o{};
				o.y = y.p;
				o.ld = rows;
				matvec_split<kStore>(1, nc, w.mat(), ab.act(), o, n, Ahead{});
				check_product(y.p, rows, w, values(ab, n), std::vector<double>(v.size()), n, "matvec of prep's");
				check_product(y.p, rows, w, v, quant_error(T, v, n, cols), n, "matvec of prep's, against the exact norm");
			}
	printf("prep: %d cases\n", cases);
}

// all_zero says the counters are back to zero, as the next product needs.
bool all_zero(const Buf<int> &c) {
	for (size_t i = 0; i < c.n; i++)
		if (c[i] != 0) return false;
	return true;
}

// --- c. the norm fused into matvec<kAdd> (LEO_CUDA_FUSE_PREP=2) ----------

// A matvec<kAdd> adds W1·a to x and, with o.next, o.gain, o.ssq and
// o.counters set, makes the next product's activations of x·gain and the
// sums of squares of x's blocks (norm_next); a consumer matvec with
// Act.ssq set scales by 1/rms (norm_scale). Its output must be
// W2·(gain⊙x/rms(x)) of the new x.
void test_norm_fusion() {
	AheadWeights aw;
	int cases = 0;
	const float eps = 1e-5f;
	const int dim = 128, cols1 = 96, rows2 = 40, nb = dim / 32;
	for (int T : {8, 2, 1})
		for (int split : {1, 2, 4})
			for (int n : {1, 2, 3, 8}) {
				const int nc = matvec_cols(n), alloc = round_up(n, nc), groups = alloc / nc;
				set_case("norm fusion %s split=%d n=%d nc=%d", type_name(T), split, n, nc);
				cases++;
				Weights w1 = make_weights(T, dim, cols1), w2 = make_weights(T, rows2, dim);
				Acts a1 = make_acts(T, n, alloc, cols1);
				Buf<float> x((size_t)n * dim), gain(dim), ssq((size_t)alloc * nb);
				Buf<int> counters((size_t)groups * nb);
				std::vector<double> x0(x.n);
				for (size_t i = 0; i < x.n; i++) x0[i] = x[i] = (float)uniform(-1, 1);
				for (int i = 0; i < dim; i++) gain[i] = (float)uniform(0.5, 1.5);
				for (size_t i = 0; i < ssq.n; i++) ssq[i] = (float)uniform(1, 100);  // stale
				memset(counters.p, 0, counters.n * sizeof(int));
				ActBufs next(T, alloc, dim);
				Out o{};
				o.y = x.p;
				o.ld = dim;
				o.next = next.out();
				o.counters = counters.p;
				o.gain = gain.p;
				o.ssq = ssq.p;
				const Ahead ah = aw.ahead(0);
				const dim3 grid = matvec_split<kAdd>(split, nc, w1.mat(), a1.act(), o, n, ah);
				check_ahead(ah, (long long)grid.x * grid.y);
				expect(grid.x / (dim / 32) == 4u * split, "norm fusion: thread blocks per block of 32 outputs");
				expect(all_zero(counters), "norm fusion: counters not back to zero");
				// The new x, in double.
				std::vector<double> xn(x0);
				for (int t = 0; t < n; t++)
					for (int r = 0; r < dim; r++) {
						double mag = 0;
						for (int k = 0; k < cols1; k++) {
							const double p = w1.W[(size_t)r * cols1 + k] * a1.X[(size_t)t * cols1 + k];
							xn[(size_t)t * dim + r] += p;
							mag += std::fabs(p);
						}
						expect_near(x[(size_t)t * dim + r], xn[(size_t)t * dim + r], 1e-5 * (mag + 1), "x", t, r);
					}
				for (int t = 0; t < n; t++)
					for (int b = 0; b < nb; b++) {
						double sq = 0;
						for (int j = 0; j < 32; j++) sq += (double)x[(size_t)t * dim + b * 32 + j] * x[(size_t)t * dim + b * 32 + j];
						expect_near(ssq[(size_t)t * nb + b], sq, 1e-5 * sq, "ssq", t, b);
					}
				// The activations: x·gain of the new x, bit for bit as act_store
				// makes them, with float32 scales.
				for (int t = 0; t < n; t++)
					for (int b = 0; b < nb; b++) {
						float f[32];
						for (int j = 0; j < 32; j++) f[j] = x[(size_t)t * dim + b * 32 + j] * gain[b * 32 + j];
						const size_t at = (size_t)t * dim + b * 32, bi = (size_t)t * nb + b;
						if (T == 1) {
							for (int j = 0; j < 32; j++)
								expect(same_bits(next.h[at + j], (__half)f[j]), "norm fusion: a half differs from x·gain rounded");
							continue;
						}
						int8_t q[32];
						float d;
						int s;
						quantize_ref(f, q, &d, &s, true);
						expect(memcmp(q, next.q.p + at, 32) == 0, "norm fusion: int8 quants differ from quantize_row_q8_0's");
						expect(same_bits(next.d[bi], d), "norm fusion: a block's scale differs (float32 scales)");
						expect(next.s[bi] == s, "norm fusion: a block's sum differs from its quants'");
					}
				// The consumer.
				Act a2 = next.act();
				a2.ssq = ssq.p;
				a2.eps = eps;
				Buf<float> y2((size_t)n * rows2);
				Out o2{};
				o2.y = y2.p;
				o2.ld = rows2;
				matvec_split<kStore>(1, nc, w2.mat(), a2, o2, n, Ahead{});
				std::vector<double> v((size_t)n * dim);
				for (int t = 0; t < n; t++) {
					double sum = 0;
					for (int i = 0; i < dim; i++) sum += xn[(size_t)t * dim + i] * xn[(size_t)t * dim + i];
					const double inv = 1 / std::sqrt(sum / dim + eps);
					for (int i = 0; i < dim; i++) v[(size_t)t * dim + i] = xn[(size_t)t * dim + i] * gain[i] * inv;
				}
				check_product(y2.p, rows2, w2, v, quant_error(T, v, n, dim), n, "consumer y, against the exact norm");
				// Tight: the consumer on the activations it read, scaled by the
				// 1/rms of the sums of squares it read.
				std::vector<double> made = values(next, n);
				for (int t = 0; t < n; t++) {
					double sum = 0;
					for (int b = 0; b < nb; b++) sum += ssq[(size_t)t * nb + b];
					const double inv = 1 / std::sqrt(sum / dim + eps);
					for (int i = 0; i < dim; i++) made[(size_t)t * dim + i] *= inv;
				}
				check_product(y2.p, rows2, w2, made, std::vector<double>(made.size()), n, "consumer y");
			}
	printf("norm fusion: %d cases\n", cases);
}

// --- d. matvec<kSwiGLU> making down's activations (swiglu_next) ----------

// Its activations must be the bits prep makes from the same floats y.
void test_swiglu() {
	AheadWeights aw;
	int cases = 0;
	const int hidden = 96, rows = 2 * hidden, cols = 128;
	for (int T : {8, 2, 1})
		for (int n : {1, 2, 3, 5, 8, 13}) {
			const int nc = matvec_cols(n), alloc = round_up(n, nc), groups = alloc / nc;
			set_case("swiglu %s n=%d nc=%d", type_name(T), n, nc);
			cases++;
			Weights w = make_weights(T, rows, cols);  // rows 2i gate i, 2i+1 up i
			Acts a = make_acts(T, n, alloc, cols);
			Buf<float> y((size_t)n * hidden);
			Buf<int> counters((size_t)groups * (hidden / 32));
			memset(counters.p, 0, counters.n * sizeof(int));
			ActBufs next(T, alloc, hidden), want(T, alloc, hidden);
			Out o{};
			o.y = y.p;
			o.ld = hidden;
			o.next = next.out();
			o.counters = counters.p;
			const Ahead ah = aw.ahead(1);
			const dim3 grid = matvec_split<kSwiGLU>(1, nc, w.mat(), a.act(), o, n, ah);
			check_ahead(ah, (long long)grid.x * grid.y);
			expect(all_zero(counters), "swiglu: counters not back to zero");
			for (int t = 0; t < n; t++)
				for (int i = 0; i < hidden; i++) {
					double g = 0, u = 0, gm = 0, um = 0;
					for (int k = 0; k < cols; k++) {
						const double x = a.X[(size_t)t * cols + k];
						g += w.W[(size_t)(2 * i) * cols + k] * x;
						gm += std::fabs(w.W[(size_t)(2 * i) * cols + k] * x);
						u += w.W[(size_t)(2 * i + 1) * cols + k] * x;
						um += std::fabs(w.W[(size_t)(2 * i + 1) * cols + k] * x);
					}
					const double silu = g / (1 + std::exp(-g));
					const double tol = 1.1 * std::fabs(u) * 1e-5 * gm + std::fabs(silu) * 1e-5 * um + 1e-6 * std::fabs(silu * u);
					expect_near(y[(size_t)t * hidden + i], silu * u, tol + 1e-30, "y", t, i);
				}
			const ActOut wo = want.out();
			run_grid(prep, dim3((hidden + 255) / 256, n), dim3(kPrepThreads), 0, (const float *)y.p, hidden,
			         (const int *)nullptr, (const float *)nullptr, 1e-5f, wo.h, wo.q, wo.d, wo.s, wo.round, Ahead{});
			const size_t e = (size_t)n * hidden, bl = e / 32;
			if (T == 1)
				expect(memcmp(next.h.p, want.h.p, e * sizeof(__half)) == 0, "swiglu: halves differ from prep's");
			else {
				expect(memcmp(next.q.p, want.q.p, e) == 0, "swiglu: int8 quants differ from prep's");
				expect(memcmp(next.d.p, want.d.p, bl * sizeof(float)) == 0, "swiglu: scales differ from prep's");
				expect(memcmp(next.s.p, want.s.p, bl * sizeof(int)) == 0, "swiglu: sums differ from prep's");
			}
		}
	printf("swiglu: %d cases\n", cases);
}

// --- e. mmq and mmq_finish -----------------------------------------------

template <int T, int MT, int E = kStore>
void mmq_launch(dim3 grid, const Mat &w, const Act &a, const Out &o, int n, int per, float *part) {
	run_grid(mmq<T, MT, E>, grid, dim3(kMMQWarps * kWarp), mmq_smem_bytes(T, MT), w, a, o, n, per, part);
}

// mmq_product runs mmq<w.type, MT, E> as forward.cu's product does: K in
// slices of per blocks, then mmq_finish<E> when there are several. It
// returns the number of slices.
template <int E> int mmq_product(int MT, const Mat &w, const Act &a, const Out &o, int n, int per) {
	const int splits = (w.cols / 32 + per - 1) / per;
	Buf<float> part((size_t)splits * n * w.rows);
	for (size_t i = 0; i < part.n; i++) part[i] = NAN;
	const dim3 grid((w.rows + kMMQRows - 1) / kMMQRows, splits, (n + 16 * MT - 1) / (16 * MT));
	switch (w.type * 10 + MT) {
#define MMQ_CASE(t, mt) \
	case t * 10 + mt: mmq_launch<t, mt, E>(grid, w, a, o, n, per, part.p); break;
		MMQ_CASE(8, 1) MMQ_CASE(8, 2) MMQ_CASE(8, 3) MMQ_CASE(8, 4)
		MMQ_CASE(2, 1) MMQ_CASE(2, 2) MMQ_CASE(2, 3) MMQ_CASE(2, 4)
		MMQ_CASE(1, 1) MMQ_CASE(1, 2) MMQ_CASE(1, 3) MMQ_CASE(1, 4)
#undef MMQ_CASE
	default: abort();
	}
	if (splits > 1)
		run_grid(mmq_finish<E>, dim3((w.rows / 2 + kMMQFinishThreads - 1) / kMMQFinishThreads, n), dim3(kMMQFinishThreads), 0,
		         (const float *)part.p, splits, n, w.rows, o);
	return splits;
}

// mmq<T, MT, kStore> with K in slices of per blocks (mmq_finish adding the
// slices up when there are several), under each cp.async timing: copies
// landing at issue, as late as the wait allows (stale shared memory is
// poisoned), or either at random.
void test_mmq() {
	struct Case {
		int T, MT, rows, cols, n, per;
	};
	const Case cs[] = {
	    {8, 1, 136, 288, 9, 4},  {8, 2, 128, 416, 20, 8}, {8, 4, 130, 256, 64, 256}, {8, 3, 8, 160, 40, 12},
	    {2, 1, 136, 416, 13, 8}, {2, 2, 130, 288, 20, 16}, {2, 4, 128, 512, 64, 512}, {2, 3, 64, 96, 40, 8},
	    {1, 1, 136, 160, 9, 2},  {1, 2, 130, 224, 20, 4}, {1, 4, 128, 256, 64, 256}, {1, 3, 8, 96, 40, 6},
	};
	int cases = 0;
	for (int mode = 0; mode < 3; mode++)
		for (const Case &c : cs) {
			leo_emu::copy_mode = mode;
			set_case("mmq %s MT=%d rows=%d cols=%d n=%d per=%d copies=%s", type_name(c.T), c.MT, c.rows, c.cols, c.n, c.per,
			         mode == 0 ? "at issue" : mode == 1 ? "at the wait" : "random");
			cases++;
			Weights w = make_weights(c.T, c.rows, c.cols);
			Acts a = make_acts(c.T, c.n, c.n, c.cols);
			const int blocks = c.cols / 32, splits = (blocks + c.per - 1) / c.per;
			Buf<float> y((size_t)c.n * c.rows), part((size_t)splits * c.n * c.rows);
			for (size_t i = 0; i < y.n; i++) y[i] = NAN;
			for (size_t i = 0; i < part.n; i++) part[i] = NAN;
			Out o{};
			o.y = y.p;
			o.ld = c.rows;
			const dim3 grid((c.rows + kMMQRows - 1) / kMMQRows, splits, (c.n + 16 * c.MT - 1) / (16 * c.MT));
			const Mat m = w.mat();
			const Act act = a.act();
			switch (c.T * 10 + c.MT) {
#define MMQ_CASE(t, mt) \
	case t * 10 + mt: mmq_launch<t, mt>(grid, m, act, o, c.n, c.per, part.p); break;
				MMQ_CASE(8, 1) MMQ_CASE(8, 2) MMQ_CASE(8, 3) MMQ_CASE(8, 4)
				MMQ_CASE(2, 1) MMQ_CASE(2, 2) MMQ_CASE(2, 3) MMQ_CASE(2, 4)
				MMQ_CASE(1, 1) MMQ_CASE(1, 2) MMQ_CASE(1, 3) MMQ_CASE(1, 4)
#undef MMQ_CASE
			}
			if (splits > 1)
				run_grid(mmq_finish<kStore>, dim3((c.rows / 2 + kMMQFinishThreads - 1) / kMMQFinishThreads, c.n),
				         dim3(kMMQFinishThreads), 0, (const float *)part.p, splits, c.n, c.rows, o);
			check_product(y.p, c.rows, w, a.X, std::vector<double>(a.X.size()), c.n, "y");
		}
	leo_emu::copy_mode = 1;
	printf("mmq: %d cases\n", cases);
}

// --- a'. matvec<kQKV>: RoPE, queries rounded to half, keys and values into the cache

// QKV is the outputs of kQKV for n tokens: queries (heads of hd), keys and
// values written to a cache of slots × len positions (kv_heads of hd),
// every token at its own (slot, position), the cache's other entries a
// sentinel; and RoPE's cos and sin of rope_half pairs a position.
struct QKV {
	static constexpr float kSentinelCache = -7.0f;
	int hd, dim, kv_dim, rows, n, slots, len, rope_half;
	Buf<float> q, cs, sn;
	Buf<int> pos, seq;
	Buf<__half> kc, vc;
	QKV(int hd_, int heads, int kv_heads, int n_, int slots_, int rope_half_)
	    : hd(hd_), dim(heads * hd_), kv_dim(kv_heads * hd_), rows(dim + 2 * kv_dim), n(n_), slots(slots_),
	      len((n_ + slots_ - 1) / slots_), rope_half(rope_half_), q((size_t)n * dim), cs((size_t)len * rope_half),
	      sn((size_t)len * rope_half), pos(n), seq(n), kc((size_t)slots * len * kv_dim), vc((size_t)slots * len * kv_dim) {
		for (int t = 0; t < n; t++) seq[t] = t % slots, pos[t] = t / slots;  // distinct (slot, position)
		for (size_t i = 0; i < cs.n; i++) {
			const double th = uniform(0, 6.3);
			cs[i] = (float)std::cos(th), sn[i] = (float)std::sin(th);
		}
		for (size_t i = 0; i < kc.n; i++) kc[i] = vc[i] = (__half)kSentinelCache;
		for (size_t i = 0; i < q.n; i++) q[i] = NAN;
	}
	Out out() {
		Out o{};
		o.y = q.p;
		o.dim = dim, o.kv_dim = kv_dim, o.head_dim = hd, o.rope_half = rope_half, o.len = len;
		o.pos = pos.p, o.seq = seq.p, o.cos = cs.p, o.sin = sn.p, o.kc = kc.p, o.vc = vc.p;
		return o;
	}
	// check checks the outputs against v[t*rows + r], the rows' values
	// before the epilogue, in double, with mag[t*rows + r] the sum of the
	// magnitudes of their terms (the float sums' error).
	void check(const std::vector<double> &v, const std::vector<double> &mag) {
		const __half sentinel = (__half)kSentinelCache;
		std::vector<bool> written(kc.n);
		for (int t = 0; t < n; t++)
			for (int r = 0; r < rows; r += 2) {
				double x[2] = {v[(size_t)t * rows + r], v[(size_t)t * rows + r + 1]};
				const double m = mag[(size_t)t * rows + r] + mag[(size_t)t * rows + r + 1];
				const int i = (r < dim ? r : r < dim + kv_dim ? r - dim : r - dim - kv_dim) % hd / 2;
				if (r < dim + kv_dim && i < rope_half) {
					const double c = cs[(size_t)pos[t] * rope_half + i], s_ = sn[(size_t)pos[t] * rope_half + i];
					const double x0 = x[0] * c - x[1] * s_, x1 = x[0] * s_ + x[1] * c;
					x[0] = x0, x[1] = x1;
				}
				const size_t at = ((size_t)seq[t] * len + pos[t]) * kv_dim;
				for (int j = 0; j < 2; j++) {
					const double tol = std::fabs(x[j]) * 0x1p-10 + 2e-5 * m + 1e-30;  // a half's rounding, and the sums'
					if (r < dim) {
						const float got = q[(size_t)t * dim + r + j];
						expect_near(got, x[j], tol, "query", t, r + j);
						expect(same_bits(got, (float)(__half)got), "qkv: a query not rounded to half");
					} else if (r < dim + kv_dim) {
						expect_near((float)kc[at + r - dim + j], x[j], tol, "key", t, r + j);
						written[at + r - dim + j] = true;
					} else
						expect_near((float)vc[at + r - dim - kv_dim + j], x[j], tol, "value", t, r + j);
				}
			}
		for (size_t i = 0; i < kc.n; i++)
			if (!written[i]) expect(same_bits(kc[i], sentinel) && same_bits(vc[i], sentinel), "qkv: a cache entry of no token's written");
	}
};

// products is W·X for n tokens (v[t*rows + r]) and the sums of the
// magnitudes of their terms (mag).
void products(const Weights &w, const std::vector<double> &X, int n, std::vector<double> &v, std::vector<double> &mag) {
	v.assign((size_t)n * w.rows, 0);
	mag.assign(v.size(), 0);
	for (int t = 0; t < n; t++)
		for (int r = 0; r < w.rows; r++)
			for (int k = 0; k < w.cols; k++) {
				const double p = w.W[(size_t)r * w.cols + k] * X[(size_t)t * w.cols + k];
				v[(size_t)t * w.rows + r] += p;
				mag[(size_t)t * w.rows + r] += std::fabs(p);
			}
}

void test_qkv() {
	int cases = 0;
	const int hd = 32, cols = 96, slots = 2;
	for (int T : {1, 8, 2})
		for (int split : {1, 2, 4})
			for (int n : {1, 3, 8, 12}) {
				const int nc = matvec_cols(n), alloc = round_up(n, nc);
				const int rope_half = split == 2 ? hd / 4 : hd / 2;  // partial rotation too
				set_case("qkv %s split=%d n=%d nc=%d rope_half=%d", type_name(T), split, n, nc, rope_half);
				cases++;
				QKV qkv(hd, 2, 1, n, slots, rope_half);
				Weights w = make_weights(T, qkv.rows, cols);
				Acts a = make_acts(T, n, alloc, cols);
				matvec_split<kQKV>(split, nc, w.mat(), a.act(), qkv.out(), n, Ahead{});
				std::vector<double> v, mag;
				products(w, a.X, n, v, mag);
				qkv.check(v, mag);
			}
	printf("qkv: %d cases\n", cases);
}

// --- the emulation's own checks ------------------------------------------

// Kernels that break CUDA's rules, which the emulation must stop at (run
// by emu_test.go, one a process: each ends in abort).
__global__ void barrier_after_exit() {
	if (threadIdx.x >= 32) return;
	__syncthreads();
}
__global__ void divergent_shuffle() {
	const int lane = threadIdx.x % 32;
	float v = (float)lane;
	if (lane < 16) v += __shfl_xor_sync(0xffffffff, v, 1);
	else v += __shfl_xor_sync(0xffffffff, v, 2);
	(void)v;
}
__global__ void prefetch_outside(const uint8_t *p) { l2_prefetch(p, 16); }

int self_test(const char *name) {
	std::vector<uint8_t> not_weights(64);
	if (!strcmp(name, "barrier-after-exit")) run_grid(barrier_after_exit, dim3(1), dim3(64), 0);
	else if (!strcmp(name, "divergent-shuffle")) run_grid(divergent_shuffle, dim3(1), dim3(32), 0);
	else if (!strcmp(name, "prefetch-outside")) run_grid(prefetch_outside, dim3(1), dim3(32), 0, (const uint8_t *)not_weights.data() + 16);
	else {
		fprintf(stderr, "unknown self-test %s\n", name);
		return 2;
	}
	printf("self-test %s: not stopped\n", name);
	return 0;
}

// --- f. attention: attn_chunk's chunks, and the merge by the last ----------

// Tokens at positions inside the first chunk (a whole sequence: weights
// rounded to half), at its edge, and across two and three chunks, with
// empty chunks past a token's position; grouped-query heads. O's
// activations (act) must be act_store's of the merged output.
void test_attention() {
	AheadWeights aw;
	int cases = 0;
	const int heads = 4, kv_heads = 2, len = 300, slots = 2, chunks = (len + kAttnChunk - 1) / kAttnChunk;
	const int positions[] = {0, 5, 127, 128, 200, 299};
	const int n = 6;
	for (int hd : {64, 128})
		for (int T : {8, 1}) {
			set_case("attention head_dim=%d O's activations %s", hd, type_name(T));
			cases++;
			const int dim = heads * hd, kv_dim = kv_heads * hd;
			const float scale = 1.0f / sqrtf((float)hd);
			Buf<float> q((size_t)n * dim), part((size_t)n * heads * chunks * (hd + 2)), y((size_t)n * dim);
			Buf<int> pos(n), seq(n), counters(n * heads);
			Buf<__half> kc((size_t)slots * len * kv_dim), vc((size_t)slots * len * kv_dim);
			for (size_t i = 0; i < q.n; i++) q[i] = (float)uniform(-1, 1);
			for (size_t i = 0; i < kc.n; i++) kc[i] = (__half)uniform(-2, 2), vc[i] = (__half)uniform(-1, 1);
			for (size_t i = 0; i < part.n; i++) part[i] = NAN;
			for (int t = 0; t < n; t++) pos[t] = positions[t], seq[t] = t % slots;
			memset(counters.p, 0, counters.n * sizeof(int));
			ActBufs act(T, n, dim);
			const Ahead ah = aw.ahead(3);
			const dim3 grid(chunks, heads, n);
			run_grid(attn_chunk, grid, dim3(kAttnThreads), 0, (const float *)q.p, (const __half *)kc.p, (const __half *)vc.p,
			         (const int *)pos.p, (const int *)seq.p, len, heads, kv_heads, hd, scale, chunks, part.p, counters.p, y.p,
			         act.out(), ah);
			check_ahead(ah, (long long)grid.x * grid.y * grid.z);
			expect(all_zero(counters), "attention: counters not back to zero");
			for (int t = 0; t < n; t++)
				for (int h = 0; h < heads; h++) {
					const size_t base = (size_t)seq[t] * len * kv_dim + (size_t)(h / (heads / kv_heads)) * hd;
					const int np = pos[t] + 1;
					std::vector<double> w(np);
					double m = -INFINITY, sum = 0;
					for (int p = 0; p < np; p++) {
						double sc = 0;
						for (int i = 0; i < hd; i++) sc += (double)q[(size_t)t * dim + h * hd + i] * (float)kc[base + (size_t)p * kv_dim + i];
						w[p] = sc * scale;
						m = std::max(m, w[p]);
					}
					for (int p = 0; p < np; p++) sum += (w[p] = std::exp(w[p] - m));
					const bool whole = np <= kAttnChunk;  // weights rounded to half
					for (int i = 0; i < hd; i++) {
						double want = 0, mag = 0;
						for (int p = 0; p < np; p++) {
							const double c = w[p] / sum * (float)vc[base + (size_t)p * kv_dim + i];
							want += c;
							mag += std::fabs(c);
						}
						const double tol = (whole ? 0x1p-11 : 0) * mag + 1e-5 * mag + 1e-6;
						if (!expect_near(y[(size_t)t * dim + h * hd + i], want, tol, "y", t, h * hd + i)) break;
					}
				}
			// O's activations: act_store's of y, bit for bit.
			for (int t = 0; t < n; t++)
				for (int b = 0; b < dim / 32; b++) {
					const size_t at = (size_t)t * dim + b * 32;
					if (T == 1) {
						for (int j = 0; j < 32; j++) expect(same_bits(act.h[at + j], (__half)y[at + j]), "attention: O's half differs");
						continue;
					}
					int8_t qq[32];
					float d;
					int s;
					quantize_ref(y.p + at, qq, &d, &s, false);
					const size_t bi = (size_t)t * (dim / 32) + b;
					expect(memcmp(qq, act.q.p + at, 32) == 0 && same_bits(act.d[bi], d) && act.s[bi] == s,
					       "attention: O's int8 activations differ from quantize_row_q8_0's of y");
				}
		}
	printf("attention: %d cases\n", cases);
}

// mmq<T, MT, kSwiGLU> in K slices, then mmq_finish<kSwiGLU> with o.next:
// y against silu(gate)·up, and down's activations the bits prep makes from
// the same y.
void test_mmq_swiglu() {
	int cases = 0;
	const int hidden = 64, rows = 2 * hidden, cols = 512, n = 20, per = 8;  // per: a multiple of every type's kc (mmq_per)
	for (int T : {8, 2, 1}) {
		set_case("mmq swiglu %s n=%d per=%d", type_name(T), n, per);
		cases++;
		leo_emu::copy_mode = 2;
		Weights w = make_weights(T, rows, cols);
		Acts a = make_acts(T, n, n, cols);
		const int splits = (cols / 32 + per - 1) / per;
		Buf<float> y((size_t)n * hidden), part((size_t)splits * n * rows);
		ActBufs next(T, n, hidden), want(T, n, hidden);
		Out o{};
		o.y = y.p;
		o.ld = hidden;
		const dim3 grid((rows + kMMQRows - 1) / kMMQRows, splits, (n + 31) / 32);
		const Mat m = w.mat();
		const Act act = a.act();
		switch (T) {
		case 8: run_grid(mmq<8, 2, kSwiGLU>, grid, dim3(kMMQWarps * kWarp), mmq_smem_bytes(8, 2), m, act, o, n, per, part.p); break;
		case 2: run_grid(mmq<2, 2, kSwiGLU>, grid, dim3(kMMQWarps * kWarp), mmq_smem_bytes(2, 2), m, act, o, n, per, part.p); break;
		default: run_grid(mmq<1, 2, kSwiGLU>, grid, dim3(kMMQWarps * kWarp), mmq_smem_bytes(1, 2), m, act, o, n, per, part.p);
		}
		o.next = next.out();  // only the finishing pass makes whole blocks (forward.cu's product)
		run_grid(mmq_finish<kSwiGLU>, dim3((rows / 2 + kMMQFinishThreads - 1) / kMMQFinishThreads, n),
		         dim3(kMMQFinishThreads), 0, (const float *)part.p, splits, n, rows, o);
		for (int t = 0; t < n; t++)
			for (int i = 0; i < hidden; i++) {
				double g = 0, u = 0, mag = 0;
				for (int k = 0; k < cols; k++) {
					const double x = a.X[(size_t)t * cols + k];
					g += w.W[(size_t)(2 * i) * cols + k] * x;
					u += w.W[(size_t)(2 * i + 1) * cols + k] * x;
					mag += std::fabs(w.W[(size_t)(2 * i) * cols + k] * x) + std::fabs(w.W[(size_t)(2 * i + 1) * cols + k] * x);
				}
				const double silu = g / (1 + std::exp(-g));
				expect_near(y[(size_t)t * hidden + i], silu * u, 1e-5 * mag * (1.1 * std::fabs(u) + std::fabs(silu)) + 1e-30, "y", t, i);
			}
		const ActOut wo = want.out();
		run_grid(prep, dim3((hidden + 255) / 256, n), dim3(kPrepThreads), 0, (const float *)y.p, hidden, (const int *)nullptr,
		         (const float *)nullptr, 1e-5f, wo.h, wo.q, wo.d, wo.s, wo.round, Ahead{});
		const size_t e = (size_t)n * hidden;
		if (T == 1)
			expect(memcmp(next.h.p, want.h.p, e * sizeof(__half)) == 0, "mmq swiglu: halves differ from prep's");
		else
			expect(memcmp(next.q.p, want.q.p, e) == 0 && memcmp(next.d.p, want.d.p, e / 32 * sizeof(float)) == 0 &&
			           memcmp(next.s.p, want.s.p, e / 32 * sizeof(int)) == 0,
			       "mmq swiglu: int8 activations differ from prep's");
	}
	leo_emu::copy_mode = 1;
	printf("mmq swiglu: %d cases\n", cases);
}

// mmq<T, MT, kAdd> and <kQKV>, the epilogue in mmq (one K slice) or in
// mmq_finish (slices of 8 blocks, the last partial: 10 blocks of K; each
// type and epilogue both ways, at alternate MT), with
// token counts that leave a partial token tile, under each cp.async
// timing in turn. kAdd: y += W·x, rows past the matrix's untouched; kQKV:
// against test_qkv's reference, with two row groups (the second partial).
void test_mmq_epilogues() {
	int cases = 0;
	const int cols = 320, add_rows = 136, ld = add_rows + 4, per_split = 8;  // per: a multiple of every type's kc
	for (int T : {8, 2, 1})
		for (int MT = 1; MT <= 4; MT++)
			for (int E : {kAdd, kQKV}) {
					const int split = (T + MT + E) % 2;  // each type and epilogue: both ways, over MT
					// Two token groups, the second of 5 (MT 1, 2), or one partial group (MT 3, 4).
					const int n = MT <= 2 ? 16 * MT + 5 : 16 * MT - 5 - 2 * MT, per = split ? per_split : cols / 32;
					leo_emu::copy_mode = cases % 3;
					set_case("mmq %s %s MT=%d n=%d per=%d copies=%d", E == kAdd ? "kAdd" : "kQKV", type_name(T), MT, n, per,
					         leo_emu::copy_mode);
					cases++;
					if (E == kAdd) {
						Weights w = make_weights(T, add_rows, cols);
						Acts a = make_acts(T, n, n, cols);
						Buf<float> y((size_t)n * ld);
						std::vector<double> y0(y.n);
						for (size_t i = 0; i < y.n; i++) y0[i] = y[i] = (i % ld) < (size_t)add_rows ? (float)uniform(-1, 1) : kSentinel;
						Out o{};
						o.y = y.p;
						o.ld = ld;
						const int splits = mmq_product<kAdd>(MT, w.mat(), a.act(), o, n, per);
						expect((splits > 1) == (split == 1), "mmq: slices");
						std::vector<double> v, mag;
						products(w, a.X, n, v, mag);
						for (int t = 0; t < n; t++) {
							for (int r = 0; r < add_rows; r++) {
								const size_t i = (size_t)t * add_rows + r;
								const double base = y0[(size_t)t * ld + r];
								if (!expect_near(y[(size_t)t * ld + r], base + v[i], 1e-5 * (mag[i] + std::fabs(base)) + 1e-30, "y", t, r))
									break;
							}
							for (int r = add_rows; r < ld; r++) expect(y[(size_t)t * ld + r] == kSentinel, "mmq kAdd: a row past the matrix's written");
						}
					} else {
						QKV qkv(32, 4, 1, n, 4, MT % 2 ? 16 : 8);  // rows 192: two row groups, rope whole or partial
						Weights w = make_weights(T, qkv.rows, cols);
						Acts a = make_acts(T, n, n, cols);
						const int splits = mmq_product<kQKV>(MT, w.mat(), a.act(), qkv.out(), n, per);
						expect((splits > 1) == (split == 1), "mmq: slices");
						std::vector<double> v, mag;
						products(w, a.X, n, v, mag);
						qkv.check(v, mag);
					}
				}
	leo_emu::copy_mode = 1;
	printf("mmq add, qkv: %d cases\n", cases);
}

// --- g. the epilogues after cuBLAS: qkv_epilogue, swiglu_epilogue --------

// qkv_epilogue on a product y (n × rows floats, as cuBLAS writes it),
// launched as forward.cu does: 160 pairs of rows, two thread blocks (the
// second partial). Against test_qkv's reference, with y's values exact.
void test_qkv_epilogue() {
	int cases = 0;
	for (int n : {1, 5})
		for (int rope_half : {32, 16}) {
			set_case("qkv_epilogue n=%d rope_half=%d", n, rope_half);
			cases++;
			QKV qkv(64, 3, 1, n, 2, rope_half);
			Buf<float> y((size_t)n * qkv.rows);
			std::vector<double> v(y.n), mag(y.n);
			for (size_t i = 0; i < y.n; i++) v[i] = y[i] = (float)uniform(-8, 8), mag[i] = std::fabs(v[i]);  // RoPE's float error
			run_grid(qkv_epilogue, dim3((qkv.rows / 2 + 127) / 128, n), dim3(128), 0, (const float *)y.p, qkv.rows, qkv.out());
			qkv.check(v, mag);
		}
	printf("qkv_epilogue: %d cases\n", cases);
}

// swiglu_epilogue on interleaved gate/up rows (as cuBLAS writes them),
// launched as forward.cu does (hidden 160: two thread blocks, the second
// of one warp): y against silu(gate)·up; and with next on, down's
// activations must be the bits prep makes from the same y: halves (F16),
// int8 blocks (Q8_0, Q4_0), or halves of int8 blocks' values (quantized
// down through cuBLAS, act_out's kRoundQ8_0, which writes no d or s).
void test_swiglu_epilogue() {
	int cases = 0;
	const int hidden = 160;
	for (int kind = 0; kind < 4; kind++)  // next: off, halves, int8 blocks, halves rounded as Q8_0
		for (int n : {1, 6}) {
			static const char *const kinds[] = {"off", "halves", "int8", "halves of Q8_0"};
			set_case("swiglu_epilogue next=%s n=%d", kinds[kind], n);
			cases++;
			Buf<float> gu((size_t)n * 2 * hidden), y((size_t)n * hidden);
			for (size_t i = 0; i < gu.n; i++) gu[i] = (float)uniform(-6, 6);
			for (size_t i = 0; i < y.n; i++) y[i] = NAN;
			ActBufs next(kind == 2 ? 8 : 1, n, hidden), want(kind == 2 ? 8 : 1, n, hidden);
			ActOut no = next.out(), wo = want.out();
			if (kind == 0) no = ActOut{};
			if (kind == 3) no.round = wo.round = kRoundQ8_0;  // as act_out: h, d and s, no q
			const std::vector<__half> h0(next.h.p, next.h.p + next.h.n);
			const std::vector<float> d0(next.d.p, next.d.p + next.d.n);
			const std::vector<int> s0(next.s.p, next.s.p + next.s.n);
			run_grid(swiglu_epilogue, dim3((hidden + 127) / 128, n), dim3(128), 0, (const float *)gu.p, hidden, y.p, no);
			for (int t = 0; t < n; t++)
				for (int i = 0; i < hidden; i++) {
					const double g = gu[(size_t)t * 2 * hidden + 2 * i], u = gu[(size_t)t * 2 * hidden + 2 * i + 1];
					const double want_y = g / (1 + std::exp(-g)) * u;
					expect_near(y[(size_t)t * hidden + i], want_y, 4e-7 * std::fabs(want_y) + 1e-30, "y", t, i);
				}
			if (kind == 0) {
				expect(memcmp(h0.data(), next.h.p, next.h.n * sizeof(__half)) == 0, "swiglu_epilogue: activations written with next off");
				continue;
			}
			run_grid(prep, dim3((hidden + 255) / 256, n), dim3(kPrepThreads), 0, (const float *)y.p, hidden, (const int *)nullptr,
			         (const float *)nullptr, 1e-5f, wo.h, wo.q, wo.d, wo.s, wo.round, Ahead{});
			const size_t e = (size_t)n * hidden;
			if (kind != 2) {
				expect(memcmp(next.h.p, want.h.p, e * sizeof(__half)) == 0, "swiglu_epilogue: halves differ from prep's");
				expect(memcmp(d0.data(), next.d.p, next.d.n * sizeof(float)) == 0 && memcmp(s0.data(), next.s.p, next.s.n * sizeof(int)) == 0,
				       "swiglu_epilogue: block scales or sums written without int8 quants");
			} else
				expect(memcmp(next.q.p, want.q.p, e) == 0 && memcmp(next.d.p, want.d.p, e / 32 * sizeof(float)) == 0 &&
				           memcmp(next.s.p, want.s.p, e / 32 * sizeof(int)) == 0,
				       "swiglu_epilogue: int8 activations differ from prep's");
		}
	printf("swiglu_epilogue: %d cases\n", cases);
}

// --- h. repack (GGML blocks to the device layout) and dequant -----------

// Ggml is a matrix of rows × cols in GGML's blocks of type T: Q8_0 a half
// scale and 32 int8 (34 bytes), Q4_0 a half scale and 16 bytes (18: byte
// j holds element j low, j+16 high, nibble x for x-8), F16 32 halves; V
// its values.
struct Ggml {
	Buf<uint8_t> src;
	std::vector<double> V;
};

int ggml_block_bytes(int T) { return T == 1 ? 64 : T == 8 ? 34 : 18; }

Ggml make_ggml(int T, int rows, int cols) {
	const int blocks = cols / 32, bb = ggml_block_bytes(T);
	Ggml g{Buf<uint8_t>((size_t)rows * blocks * bb), std::vector<double>((size_t)rows * cols)};
	for (size_t i = 0; i < (size_t)rows * blocks; i++) {
		uint8_t *b = g.src.p + i * bb;
		double *v = g.V.data() + i * 32;  // block i of the row-major matrix
		if (T == 1) {
			for (int j = 0; j < 32; j++) {
				const __half h = (__half)uniform(-1, 1);
				memcpy(b + 2 * j, &h, 2);
				v[j] = (float)h;
			}
			continue;
		}
		const __half d = (__half)uniform(-0.02, 0.02);
		memcpy(b, &d, 2);
		for (int j = 0; j < bb - 2; j++) b[2 + j] = (uint8_t)rng();
		for (int j = 0; j < 32; j++)
			v[j] = (double)(float)d * (T == 8 ? (int8_t)b[2 + j] : j < 16 ? (b[2 + j] & 15) - 8 : (b[2 + j - 16] >> 4) - 8);
	}
	return g;
}

// repack of the parts of a matrix as leo_model_matrix uploads them: Q, K
// and V stacked (row0 0, dim, dim + kv_dim; stride 1), or gate and up
// interleaved (row0 0 and 1, stride 2). The device buffer must be, byte
// for byte, the layout at the top of kernels.cuh (quants past the rows'
// garbage untouched, scales' padding zero as cudaMemset left it); then
// dequant of row ranges [r0, r0+n) of it must give each element's GGML
// value rounded to half, bit for bit.
void test_repack_dequant() {
	int cases = 0;
	struct Layout {
		const char *name;
		int cols, stride;
		std::vector<int> rows, row0;
	};
	const Layout layouts[] = {{"qkv", 160, 1, {24, 8, 8}, {0, 24, 32}}, {"gate/up", 288, 2, {12, 12}, {0, 1}}};
	for (int T : {8, 2, 1})
		for (const Layout &L : layouts) {
			const int cols = L.cols, blocks = cols / 32, ds = scale_stride(cols);
			int total = 0;
			for (int r : L.rows) total += r;
			const size_t qb = T == 1 ? (size_t)total * cols * 2 : T == 8 ? (size_t)total * cols : (size_t)total * cols / 2;
			const size_t sb = T == 1 ? 0 : (size_t)total * ds * 2;
			Buf<uint8_t> dev(qb + sb);
			memset(dev.p, 0xA5, qb);  // garbage
			memset(dev.p + qb, 0, sb);
			std::vector<uint8_t> want(dev.p, dev.p + dev.n);
			std::vector<double> V((size_t)total * cols, NAN);  // values by destination row
			for (size_t part = 0; part < L.rows.size(); part++) {
				const int rows = L.rows[part], row0 = L.row0[part];
				set_case("repack %s %s part %zu rows=%d row0=%d stride=%d", type_name(T), L.name, part, rows, row0, L.stride);
				cases++;
				Ggml g = make_ggml(T, rows, cols);
				for (int r = 0; r < rows; r++) {
					const size_t dr = row0 + (size_t)r * L.stride;
					for (int c = 0; c < cols; c++) V[dr * cols + c] = g.V[(size_t)r * cols + c];
					for (int b = 0; b < blocks; b++) {
						const uint8_t *s = g.src.p + ((size_t)r * blocks + b) * ggml_block_bytes(T);
						if (T == 1) memcpy(&want[(dr * cols + b * 32) * 2], s, 64);
						else if (T == 8) memcpy(&want[dr * cols + b * 32], s + 2, 32);
						else memcpy(&want[dr * cols / 2 + b * 16], s + 2, 16);
						if (T != 1) memcpy(&want[qb + (dr * ds + b) * 2], s, 2);
					}
				}
				// forward.cu's grid; and the last part by one small block, which
				// loops over the blocks of 32.
				const size_t nb = (size_t)rows * blocks;
				const bool small = part + 1 == L.rows.size();
				run_grid(repack, dim3(small ? 1 : (unsigned)std::min<size_t>((nb + 255) / 256, 65535)), dim3(small ? 64 : 256), 0,
				         (const uint8_t *)g.src.p, T, rows, cols, dev.p, T == 1 ? (__half *)nullptr : (__half *)(dev.p + qb), row0,
				         L.stride);
			}
			set_case("repack %s %s", type_name(T), L.name);
			expect(memcmp(want.data(), dev.p, dev.n) == 0, "repack: the device buffer differs from kernels.cuh's layout");
			if (T == 1) continue;  // (no dequant: cuBLAS reads F16 weights as they are)
			const Mat m{T, total, cols, dev.p, (const __half *)(dev.p + qb), ds};
			const int ranges[][3] = {{0, total, 1024}, {5, 9, 3}, {total - 2, 2, 1}};  // r0, n, grid
			for (const auto &rg : ranges) {
				set_case("dequant %s %s r0=%d n=%d grid=%d", type_name(T), L.name, rg[0], rg[1], rg[2]);
				cases++;
				Buf<__half> out((size_t)rg[1] * cols);
				run_grid(dequant, dim3(rg[2]), dim3(256), 0, m, rg[0], rg[1], out.p);
				bool ok = true;
				for (size_t e = 0; e < out.n; e++) ok = ok && same_bits(out[e], (__half)(float)V[(size_t)rg[0] * cols + e]);
				expect(ok, "dequant: a half differs from the GGML value rounded");
			}
		}
	printf("repack, dequant: %d cases\n", cases);
}

// prep with kRoundQ8K (K-quant weights held as F16): halves of
// quantize_row_q8_K_ref's blocks of 256.
void test_prep_q8k() {
	int cases = 0;
	for (int cols : {256, 768})
		for (bool norm : {false, true}) {
			const int n = 3;
			set_case("prep q8_K cols=%d norm=%d", cols, norm);
			cases++;
			Buf<float> x((size_t)n * cols), gain(cols);
			for (size_t i = 0; i < x.n; i++) x[i] = (float)uniform(-2, 2);
			for (int i = 0; i < cols; i++) gain[i] = (float)uniform(0.5, 1.5);
			Buf<__half> h((size_t)n * cols);
			run_grid(prep, dim3((cols + 255) / 256, n), dim3(kPrepThreads), 0, (const float *)x.p, cols, (const int *)nullptr,
			         norm ? (const float *)gain.p : nullptr, 1e-5f, h.p, (int8_t *)nullptr, (float *)nullptr, (int *)nullptr,
			         (int)kRoundQ8K, Ahead{});
			for (int t = 0; t < n; t++) {
				const float *xr = x.p + (size_t)t * cols;
				float scale = 1;
				if (norm) {
					double sum = 0;
					for (int i = 0; i < cols; i++) sum += (double)(xr[i] * xr[i]);
					scale = (float)(1.0 / sqrt((double)((float)(sum / cols) + 1e-5f)));
				}
				for (int b = 0; b < cols / 256; b++) {
					float v[256], amax = 0, m = 0;
					for (int j = 0; j < 256; j++) {
						v[j] = xr[b * 256 + j] * scale;
						if (norm) v[j] *= gain[b * 256 + j];
						if (std::fabs(v[j]) > amax) amax = std::fabs(v[j]), m = v[j];
					}
					const float iscale = m != 0 ? -127.0f / m : 0.0f, dq = iscale != 0 ? 1.0f / iscale : 0.0f;
					bool ok = true;
					for (int j = 0; j < 256; j++) {
						const int qv = std::min(127, (int)nearbyintf(v[j] * iscale));
						ok = ok && same_bits(h[(size_t)t * cols + b * 256 + j], (__half)(dq * (float)qv));
					}
					expect(ok, "prep q8_K: halves differ from quantize_row_q8_K_ref's");
				}
			}
		}
	printf("prep q8_K: %d cases\n", cases);
}

}  // namespace

int main(int argc, char **argv) {
	setvbuf(stdout, nullptr, _IOLBF, 0);  // the lines before a fault, too
	// The handler runs on a stack of its own: a fiber's overflowed stack
	// cannot take it.
	static std::vector<uint8_t> alt(1 << 16);
	stack_t st{};
	st.ss_sp = alt.data();
	st.ss_size = alt.size();
	sigaltstack(&st, nullptr);
	struct sigaction sa {};
	sa.sa_handler = fault;
	sa.sa_flags = SA_ONSTACK;
	sigaction(SIGSEGV, &sa, nullptr);
	sigaction(SIGBUS, &sa, nullptr);
	if (argc > 1) return self_test(argv[1]);
	test_matvec();
	test_qkv();
	test_prep();
	test_prep_q8k();
	test_norm_fusion();
	test_swiglu();
	test_mmq();
	test_mmq_swiglu();
	test_mmq_epilogues();
	test_qkv_epilogue();
	test_swiglu_epilogue();
	test_repack_dequant();
	test_attention();
	if (g_failures) {
		printf("FAIL: %d failures\n", g_failures);
		return 1;
	}
	printf("ok\n");
	return 0;
}
