// kernels.cuh: the device kernels of the forward pass. forward.cu launches
// them; this file holds no host logic.
//
// Layouts on the device (made by repack at upload):
//   F16   rows × cols halves, row-major.
//   Q8_0  quants rows × cols int8, then scales rows × ds halves (row r's
//         block b at r·ds + b; ds is cols/32 rounded up to 8, the padding
//         zero, so that each row's scales start 16-byte aligned).
//   Q4_0  quants rows × cols/2 bytes (each 32-element block's 16 bytes in
//         GGML's order: byte j holds element j low, j+16 high), then scales.
// Splitting quants from scales makes every quant load 16 bytes and aligned,
// where GGML's 34- and 18-byte blocks allow only 2-byte loads.
//
// Activations feeding a matrix are half (F16 weights, and cuBLAS) or int8
// blocks of 32 with a float scale and the int sum of the block's quants
// (Q8_0 and Q4_0 weights, dot products by dp4a), as GGML's CUDA code does.
#pragma once

#if defined(LEO_CUDA_EMU)
// The kernels on a CPU, for tests without a GPU (emu/cuda_emu.h): each
// LEO_CUDA_EMU branch below stands in for inline PTX.
#include "emu/cuda_emu.h"
#else
#include <cuda_fp16.h>
#endif
#include <stdint.h>

namespace leo {

constexpr int kWarp = 32;

// The matrix-vector kernels: each warp computes kRowsPerWarp adjacent rows
// (a RoPE pair, or a gate/up pair) for up to kMaxCols tokens.
constexpr int kRowsPerWarp = 2;
constexpr int kMatvecWarps = 4;
constexpr int kMaxCols = 8;

// Attention: keys and values are read in chunks of kAttnChunk positions,
// each chunk by one block, merged afterwards (split-K "flash decoding").
constexpr int kAttnChunk = 128;
constexpr int kAttnThreads = 128;

struct Mat {
	int type;  // LEO_TYPE_*
	int rows, cols;
	const uint8_t *q;  // quants, or the halves of F16
	const __half *d;   // scales (quantized types): row r's block b at r·ds + b
	int ds;
};

// scale_stride is Mat.ds for rows of cols elements.
__host__ __device__ inline int scale_stride(int cols) { return (cols / 32 + 7) / 8 * 8; }

// Act is a batch of activation rows of cols elements (the matrix's cols).
struct Act {
	const __half *h;   // [t*cols + c]
	const int8_t *q;   // [t*cols + c]
	const float *d;    // [t*cols/32 + b]
	const int *s;      // [t*cols/32 + b]
	// With ssq set (LEO_CUDA_FUSE_PREP=2, matvec only), the activations are
	// of x·gain, not yet normalized: ssq[t*cols/32 + b] holds the sum of
	// squares of block b of token t's x, and the kernel scales its dot
	// products by the token's 1/rms (norm_scale).
	const float *ssq;
	float eps;
};

enum Epilogue { kStore, kAdd, kQKV, kSwiGLU };

// ActOut says where and how the activations of a matrix of cols columns are
// written for its kernel (see prep and act_store): halves (h) and/or int8
// blocks of 32 (q, d, s), rounded as round says. A kernel that produces a
// matrix's input can write them itself, saving prep's launch: attention
// for O, and the SwiGLU epilogues for down. No h and no q: nothing to write.
struct ActOut {
	__half *h;
	int8_t *q;
	float *d;
	int *s;
	int round;  // Rounding
	int cols;
	// Keep int8 blocks' scales in float32 instead of rounding them to half
	// as a Q8_0 block stores them (norm_next: values of x·gain, which is
	// not normalized, can be small enough for a half scale to lose bits).
	bool float_scale;
	__device__ bool on() const { return h || q; }
};

// Where the epilogue of a matrix product writes.
struct Out {
	float *y;         // kStore, kAdd: y[t*ld + r]; kQKV: the queries; kSwiGLU: [t*ld + r/2]
	int ld;
	// kQKV: rows [0, dim) are queries, then keys, then values.
	int dim, kv_dim, head_dim, rope_half, len;
	const int *pos, *seq;
	const float *cos, *sin;
	__half *kc, *vc;  // this layer's cache: [(slot*len + pos)*kv_dim + i]
	// kSwiGLU: the next product's (down's) activations, made from y when
	// next.on(); matvec counts in counters [token group·(cols/32) + block]
	// how many of a block's thread blocks are done (zero between products).
	// kAdd (matvec, LEO_CUDA_FUSE_PREP=2): the next product's activations
	// of y·gain, and the sums of squares of y's blocks into ssq (see Act):
	// the norm before QKV and gate/up, without prep (norm_next).
	ActOut next;
	int *counters;
	const float *gain;
	float *ssq;
};

// Ahead is the start of the weights the next matrix product of a decode
// step reads (its first rows' quants, and their scales), which the kernels
// before it fetch into L2 (LEO_CUDA_L2_AHEAD; forward.cu's ahead_of): at a
// kernel boundary HBM otherwise idles through the tail of one kernel, the
// launch of the next and its first loads, and through prep and attention,
// which read little. Blocks [first, grid) issue it, in kAheadPiece pieces
// dealt out in turn, so that each block issues its few as it finishes: a
// matvec's last wave, after their own rows, and all blocks of the small
// kernels. Both sizes are multiples of 16; zero sizes: nothing.
struct Ahead {
	const uint8_t *p[2];
	unsigned bytes[2];
	int first;
};
constexpr unsigned kAheadPiece = 4096;

// l2_prefetch_line asks for the 128-byte line holding p to be fetched into
// L2, without waiting.
__device__ __forceinline__ void l2_prefetch_line(const uint8_t *p) {
#if defined(LEO_CUDA_EMU)
	leo_emu::prefetch_line(p);  // checks p lies in the weights
#else
	asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#endif
}

// l2_prefetch asks for bytes (a multiple of 16, 16-byte aligned) at p to be
// fetched into L2, without waiting: one bulk request on Hopper (nvcc 12 and
// newer), else one prefetch per 128-byte line.
__device__ __forceinline__ void l2_prefetch(const uint8_t *p, unsigned bytes) {
#if defined(LEO_CUDA_EMU)
	leo_emu::l2_prefetch(p, bytes);  // checks the range lies in the weights, and logs it
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && __CUDACC_VER_MAJOR__ >= 12
	asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(__cvta_generic_to_global(p)), "r"(bytes) : "memory");
#else
	for (unsigned at = 0; at < bytes; at += 128) l2_prefetch_line(p + at);
#endif
}

// prefetch_ahead issues the calling block's pieces of a: piece i by issuing
// block i mod blocks, its thread i / blocks (mod the block's threads).
__device__ __forceinline__ void prefetch_ahead(const Ahead &a) {
	const long long blocks = (long long)gridDim.x * gridDim.y * gridDim.z - a.first;
	const long long b = blockIdx.x + (long long)gridDim.x * (blockIdx.y + (long long)gridDim.y * blockIdx.z) - a.first;
	if (blocks <= 0 || b < 0) return;
#pragma unroll
	for (int r = 0; r < 2; r++) {
		const long long pieces = (a.bytes[r] + kAheadPiece - 1) / kAheadPiece;
		for (long long i = b + threadIdx.x * blocks; i < pieces; i += blocks * blockDim.x) {
			const unsigned off = (unsigned)i * kAheadPiece;
			l2_prefetch(a.p[r] + off, min(kAheadPiece, a.bytes[r] - off));
		}
	}
}

// wait_previous waits until the kernel before this one in the stream has
// finished and its writes are visible, then lets the next kernel's blocks
// be scheduled. It matters only for kernels started by programmatic
// dependent launch (Hopper; see launch in forward.cu): their blocks become
// resident while the previous kernel drains instead of after it, which
// hides most of the gap between the hundreds of small kernels of a step.
// Every kernel calls it before touching anything an earlier kernel wrote,
// so each kernel still follows all earlier ones.
__device__ __forceinline__ void wait_previous() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.wait;" ::: "memory");
	asm volatile("griddepcontrol.launch_dependents;");
#endif
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
	return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
	return v;
}

__device__ __forceinline__ int warp_sum_int(int v) {
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
	return v;
}

// The rotary embedding of one pair (x0, x1) at pair index i of its head.
__device__ __forceinline__ void rope_pair(const Out &o, int t, int i, float &x0, float &x1) {
	if (i >= o.rope_half) return;
	int p = o.pos[t] * o.rope_half + i;
	float c = o.cos[p], s = o.sin[p];
	float a = x0 * c - x1 * s, b = x0 * s + x1 * c;
	x0 = a;
	x1 = b;
}

// The epilogue of rows r, r+1 (r even) of token t.
template <int E>
__device__ __forceinline__ void epilogue(const Out &o, int t, int r, float v0, float v1) {
	if (E == kStore) {
		o.y[t * o.ld + r] = v0;
		o.y[t * o.ld + r + 1] = v1;
	} else if (E == kAdd) {
		o.y[t * o.ld + r] += v0;
		o.y[t * o.ld + r + 1] += v1;
	} else if (E == kSwiGLU) {
		// Rows are interleaved at upload: 2i is gate row i, 2i+1 up row i.
		o.y[t * o.ld + r / 2] = v0 / (1.0f + expf(-v0)) * v1;
	} else {  // kQKV
		if (r < o.dim) {
			// Queries are rounded to half where they meet the half cache,
			// as the CPU backend (and GGML) do.
			rope_pair(o, t, (r % o.head_dim) / 2, v0, v1);
			o.y[t * o.dim + r] = __half2float(__float2half_rn(v0));
			o.y[t * o.dim + r + 1] = __half2float(__float2half_rn(v1));
			return;
		}
		size_t at = ((size_t)o.seq[t] * o.len + o.pos[t]) * o.kv_dim;
		if (r < o.dim + o.kv_dim) {
			int i = r - o.dim;
			rope_pair(o, t, (i % o.head_dim) / 2, v0, v1);
			*(__half2 *)(o.kc + at + i) = __floats2half2_rn(v0, v1);
		} else {
			int i = r - o.dim - o.kv_dim;
			*(__half2 *)(o.vc + at + i) = __floats2half2_rn(v0, v1);
		}
	}
}

// How prep rounds the activations of a matrix, to round as the CPU
// backend's kernels for the matrix's type in the file do.
enum Rounding {
	kRoundNone = 0,  // F16 weights: halves
	kRoundQ8_0 = 1,  // Q8_0, Q4_0 weights: int8 blocks of 32 (halves of their values for cuBLAS)
	kRoundQ8K = 2,   // K-quant weights held as F16 (grouped with F32/BF16): halves of int8 blocks of 256's values
};

// act_store writes element i of token t's activations, of value v, as a
// says (round: kRoundNone or kRoundQ8_0). The 32 lanes of a warp call it
// together for the 32 elements of one block (i = 32b + lane).
__device__ __forceinline__ void act_store(const ActOut &a, int t, int i, float v) {
	if (a.q || a.round == kRoundQ8_0) {
		// As GGML's quantize_row_q8_0 on x86, which the CPU backend
		// follows: q = x·(127/max|x|) rounded half to even, and the scale
		// max|x|/127 rounded to half, as a Q8_0 block stores it.
		float amax = warp_max(fabsf(v));
		float id = amax != 0 ? 127.0f / amax : 0.0f;
		int qi = __float2int_rn(v * id);
		float dq = a.float_scale ? amax / 127.0f : __half2float(__float2half_rn(amax / 127.0f));
		if (a.round == kRoundQ8_0) v = dq * (float)qi;
		if (a.q) {
			a.q[(size_t)t * a.cols + i] = (int8_t)qi;
			int qs = warp_sum_int(qi);
			if (i % kWarp == 0) {
				a.d[t * (a.cols / 32) + i / 32] = dq;
				a.s[t * (a.cols / 32) + i / 32] = qs;
			}
		}
	}
	if (a.h) a.h[(size_t)t * a.cols + i] = __float2half_rn(v);
}

// swiglu_next makes the next product's activations from a matvec<kSwiGLU>
// block's outputs. A block of 32 outputs (64 gate/up rows) is made by
// kSwiGLUBlocks thread blocks of matvec; the last of them to finish,
// counted in o.counters (which it resets), writes the block's activations
// for tokens [t0, t0+nt) with act_store, one warp a token, as prep would
// from the same floats. (gate/up has 2·hidden rows, hidden a multiple of
// 32, so every warp of every thread block has rows and gets here.)
// (forward.cu writes them to a second set of activation buffers: other
// blocks of the same matvec still read gate/up's from the first.)
constexpr int kSwiGLUBlocks = 64 / (kMatvecWarps * kRowsPerWarp);
__device__ __forceinline__ void swiglu_next(ActOut next, const float *y, int ld, int *counters, int t0, int nt) {
	__shared__ bool last;
	__threadfence();  // this block's outputs, before they are counted
	__syncthreads();
	const int b = blockIdx.x / kSwiGLUBlocks;
	if (threadIdx.x == 0) {
		int *c = counters + blockIdx.y * (next.cols / 32) + b;
		last = atomicAdd(c, 1) == kSwiGLUBlocks - 1;
		if (last) *c = 0;  // for the next product
	}
	__syncthreads();
	if (!last) return;
	const int lane = threadIdx.x % kWarp, i = b * 32 + lane;
	for (int t = t0 + threadIdx.x / kWarp; t < t0 + nt; t += blockDim.x / kWarp)
		act_store(next, t, i, __ldcg(y + (size_t)t * ld + i));
}

// norm_next makes the next product's activations from a matvec<kAdd>
// block's outputs, which are rows of x after the residual add (O's, or
// down's): for each block of 32 of x, the last of the thread blocks that
// computed it, counted in o.counters (which it resets), writes the
// activations of x·gain with act_store and the block's sum of squares to
// o.ssq, for tokens [t0, t0+nt), one warp a token. The consumer scales by
// 1/rms (norm_scale). Unlike prep this rounds x·gain, not x·gain/rms, so
// the bits differ from prep's (by a rounding of the scale: int8 blocks
// quantize the same up to float rounding, and their scales stay float32:
// x·gain is not normalized, and a half scale of small values would lose
// bits; halves for F16 weights are rounded as they are). rows_per_block
// divides 32, and every thread of the block gets here (x's width is a
// multiple of 32).
__device__ __forceinline__ void norm_next(const Out &o, int t0, int nt, int rows_per_block) {
	__shared__ bool last;
	__threadfence();  // this block's outputs, before they are counted
	__syncthreads();
	const int per = 32 / rows_per_block, b = blockIdx.x / per, nb = o.next.cols / 32;
	if (threadIdx.x == 0) {
		int *c = o.counters + blockIdx.y * nb + b;
		last = atomicAdd(c, 1) == per - 1;
		if (last) *c = 0;  // for the next product
	}
	__syncthreads();
	if (!last) return;
	const int lane = threadIdx.x % kWarp, i = b * 32 + lane;
	ActOut next = o.next;
	next.float_scale = true;
	for (int t = t0 + threadIdx.x / kWarp; t < t0 + nt; t += blockDim.x / kWarp) {
		const float v = __ldcg(o.y + (size_t)t * o.ld + i);
		const float sq = warp_sum(v * v);
		if (lane == 0) o.ssq[t * nb + b] = sq;
		act_store(next, t, i, v * o.gain[i]);
	}
}

// norm_scale is token t's 1/rms from the sums of squares of its blocks
// (norm_next), computed alike by every lane, as prep computes it: the sum
// in float64, the mean in float32.
__device__ __forceinline__ float norm_scale(const Act &a, int t, int cols) {
	const int nb = cols / 32;
	double sum = 0;
	for (int k = threadIdx.x % kWarp; k < nb; k += kWarp) sum += (double)a.ssq[(size_t)t * nb + k];
	for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, o);
	const float mean = (float)(sum / cols);
	return (float)(1.0 / sqrt((double)(mean + a.eps)));
}

// dot16 and friends: one 16-byte chunk of a weight row against the
// matching activations of one token.
__device__ __forceinline__ float dot_f16(uint4 w, uint4 a) {
	const __half2 *wh = (const __half2 *)&w, *ah = (const __half2 *)&a;
	float s = 0;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		float2 wf = __half22float2(wh[i]), af = __half22float2(ah[i]);
		s = fmaf(wf.x, af.x, s);
		s = fmaf(wf.y, af.y, s);
	}
	return s;
}

__device__ __forceinline__ int dot_q8(int4 w, int4 a) {
	int s = __dp4a(w.x, a.x, 0);
	s = __dp4a(w.y, a.y, s);
	s = __dp4a(w.z, a.z, s);
	return __dp4a(w.w, a.w, s);
}

// Q4_0: 16 bytes hold 32 nibbles, elements j (low) and j+16 (high).
__device__ __forceinline__ int dot_q4(int4 w, int4 a_lo, int4 a_hi) {
	int s = 0;
	const int *wi = (const int *)&w, *l = (const int *)&a_lo, *h = (const int *)&a_hi;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		s = __dp4a(wi[i] & 0x0F0F0F0F, l[i], s);
		s = __dp4a((wi[i] >> 4) & 0x0F0F0F0F, h[i], s);
	}
	return s;
}

// The elements of one 16-byte weight chunk, by type.
template <int T> struct Chunk;
template <> struct Chunk<1> { static constexpr int elems = 8; };   // F16
template <> struct Chunk<8> { static constexpr int elems = 16; };  // Q8_0
template <> struct Chunk<2> { static constexpr int elems = 32; };  // Q4_0

// matvec computes y = W·x for n tokens, NC (<= kMaxCols) at a time: block
// row y takes tokens [y·NC, y·NC+NC). A warp computes a pair of rows, each
// lane a strided set of 16-byte chunks of both rows, so that every load is
// 16 bytes and a warp reads 512 contiguous bytes at a time. The activation
// buffers hold whole groups of NC tokens, so the rows past n read are
// stale but never out of bounds; nothing is written for them.
//
// (Making one token's activations in each block, to save prep's launch,
// measured three times slower: every block then normalizes and quantizes
// the whole input; see docs/perf.md.)
//
// With S > 1 (2 or 4, LEO_CUDA_MATVEC_SPLIT for the short, wide matrices O
// and down, whose 2048 row pairs of 7B leave SMs with few warps and one
// long stretch each; LEO_CUDA_MATVEC_SPLIT_QKV for QKV, whose 6144 pairs
// may fill a second wave of thread blocks only partly), the S warps of a
// row pair each take a contiguous slice of the columns, and the block adds
// the slices' sums in slice order: deterministic, as without. Not for
// kSwiGLU (swiglu_next counts kSwiGLUBlocks thread blocks a block of
// outputs). When done, the last wave's blocks fetch the start of the next
// product's weights into L2 (ahead).
template <int T, int NC, int E, int S>
__global__ void __launch_bounds__(kMatvecWarps * kWarp)
matvec(Mat w, Act a, Out o, int n, Ahead ahead) {
	static_assert(S == 1 || ((S == 2 || S == 4) && E != kSwiGLU), "a split of 2 or 4, not for kSwiGLU");
	const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
	const int slice = warp % S;
	const int r = (blockIdx.x * (kMatvecWarps / S) + warp / S) * kRowsPerWarp;
	const bool rows_here = r < w.rows;
	constexpr int CE = Chunk<T>::elems;  // a chunk is 16 bytes of every type
	const int chunks = w.cols / CE;
	// This warp's columns, in chunks: all of them without a split. (Q8_0's
	// chunks are half blocks; the loop finds each chunk's block itself.)
	const int c_begin = rows_here ? chunks * slice / S : 0, c_end = rows_here ? chunks * (slice + 1) / S : 0;
	// The weights are no earlier kernel's output: start fetching the first
	// 512 bytes of this warp's columns of its rows into L2 while the
	// previous kernel finishes.
	if (rows_here) {
		const size_t row_bytes = (size_t)chunks * 16, start = (size_t)c_begin * 16;
		const size_t head = min((size_t)(c_end - c_begin) * 16, (size_t)512);
		for (size_t at = lane * 16; at < head; at += 512)
#pragma unroll
			for (int j = 0; j < kRowsPerWarp; j++)
				l2_prefetch_line(w.q + (r + j) * row_bytes + start + at);
	}
	wait_previous();
	if (!rows_here && S == 1) {
		prefetch_ahead(ahead);
		return;
	}
	const int blocks = w.cols / 32;
	const int t0 = blockIdx.y * NC;
	a.h += (size_t)t0 * w.cols;
	a.q += (size_t)t0 * w.cols;
	a.d += (size_t)t0 * blocks;
	a.s += (size_t)t0 * blocks;
	float acc[kRowsPerWarp][NC];
#pragma unroll
	for (int j = 0; j < kRowsPerWarp; j++)
#pragma unroll
		for (int t = 0; t < NC; t++) acc[j][t] = 0;

	// Deeper unrolling keeps more loads in flight; with many tokens the
	// registers go to the accumulators instead.
	constexpr int U = NC <= 2 ? 8 : 4;
#pragma unroll U
	for (int c = c_begin + lane; c < c_end; c += kWarp) {
		if (T == 1) {
			uint4 wv[kRowsPerWarp];
#pragma unroll
			for (int j = 0; j < kRowsPerWarp; j++)
				wv[j] = __ldg((const uint4 *)(w.q + ((size_t)(r + j) * w.cols + (size_t)c * CE) * 2));
#pragma unroll
			for (int t = 0; t < NC; t++) {
				uint4 av = *(const uint4 *)(a.h + (size_t)t * w.cols + c * CE);
#pragma unroll
				for (int j = 0; j < kRowsPerWarp; j++) acc[j][t] += dot_f16(wv[j], av);
			}
		} else if (T == 8) {
			int4 wv[kRowsPerWarp];
			float wd[kRowsPerWarp];
			const int b = c / 2;
#pragma unroll
			for (int j = 0; j < kRowsPerWarp; j++) {
				wv[j] = __ldg((const int4 *)(w.q + (size_t)(r + j) * w.cols + (size_t)c * CE));
				wd[j] = __half2float(w.d[(size_t)(r + j) * w.ds + b]);
			}
#pragma unroll
			for (int t = 0; t < NC; t++) {
				int4 av = *(const int4 *)(a.q + (size_t)t * w.cols + c * CE);
				float ad = a.d[t * blocks + b];
#pragma unroll
				for (int j = 0; j < kRowsPerWarp; j++) acc[j][t] += (float)dot_q8(wv[j], av) * wd[j] * ad;
			}
		} else {  // Q4_0: a chunk is a whole block
			int4 wv[kRowsPerWarp];
			float wd[kRowsPerWarp];
#pragma unroll
			for (int j = 0; j < kRowsPerWarp; j++) {
				wv[j] = __ldg((const int4 *)(w.q + (size_t)(r + j) * w.cols / 2 + (size_t)c * 16));
				wd[j] = __half2float(w.d[(size_t)(r + j) * w.ds + c]);
			}
#pragma unroll
			for (int t = 0; t < NC; t++) {
				const int4 *ap = (const int4 *)(a.q + (size_t)t * w.cols + c * 32);
				int4 lo = ap[0], hi = ap[1];
				float ad = a.d[t * blocks + c];
				int as = a.s[t * blocks + c];
#pragma unroll
				for (int j = 0; j < kRowsPerWarp; j++)
					acc[j][t] += (float)(dot_q4(wv[j], lo, hi) - 8 * as) * wd[j] * ad;
			}
		}
	}
#pragma unroll
	for (int j = 0; j < kRowsPerWarp; j++)
#pragma unroll
		for (int t = 0; t < NC; t++) acc[j][t] = warp_sum(acc[j][t]);  // the same bits in every lane
	if (S > 1) {
		// Slice 0's warp adds the other slices' sums to its own, in order.
		__shared__ float sums[kMatvecWarps][kRowsPerWarp][NC];
		if (lane == 0)
#pragma unroll
			for (int j = 0; j < kRowsPerWarp; j++)
#pragma unroll
				for (int t = 0; t < NC; t++) sums[warp][j][t] = acc[j][t];
		__syncthreads();
		if (slice == 0)
#pragma unroll
			for (int k = 1; k < S; k++)
#pragma unroll
				for (int j = 0; j < kRowsPerWarp; j++)
#pragma unroll
					for (int t = 0; t < NC; t++) acc[j][t] += sums[warp + k][j][t];
	}
	if (a.ssq && rows_here && slice == 0)
#pragma unroll
		for (int t = 0; t < NC; t++) {
			// (tokens past n: stale sums, never stored)
			const float sc = norm_scale(a, t0 + t, w.cols);
			acc[0][t] *= sc;
			acc[1][t] *= sc;
		}
	if (rows_here && slice == 0)
#pragma unroll
		for (int t = 0; t < NC; t++)
			if (lane == t && t0 + t < n) epilogue<E>(o, t0 + t, r, acc[0][t], acc[1][t]);
	prefetch_ahead(ahead);
	if (E == kSwiGLU && o.next.on()) swiglu_next(o.next, o.y, o.ld, o.counters, t0, min(NC, n - t0));
	if (E == kAdd && o.next.on()) norm_next(o, t0, min(NC, n - t0), kMatvecWarps / S * kRowsPerWarp);
}

// mmq: the quantized weights (Q8_0, Q4_0) times int8 activations on the
// tensor cores (mma.sync m16n8k32: int8 in, int32 out; sm_80 and newer),
// for batches of more than kMaxCols tokens; and F16 weights times halves
// (m16n8k16, float32 out), where cuBLAS's epilogue kernels and skinny
// tiles cost. The matvec kernels take such a batch kMaxCols tokens a pass
// and are bound by load instructions (one weight load serves 8 tokens);
// here a weight byte is read once for up to 64 tokens, and one instruction
// does 4096 multiply-adds (2048 for F16).
//
// A thread block computes kMMQRows rows (4 warps of 32: 4 tiles of 8) for
// 16·MT tokens over a slice of K. Weights and activations stream through
// shared memory kMMQStages chunks deep by cp.async (which holds no
// registers while in flight, so that enough bytes are in flight to keep
// HBM busy); the warps read their mma fragments from there.
//
// The roles are swapped from y = W·x: the mma's A operand (16 × 32) is 16
// tokens' activations, B (32 × 8) is 8 weight rows, so that each lane's
// results are two adjacent rows of a token, the pair the epilogues take (a
// RoPE pair, a gate/up pair). K steps by one 32-element block, the
// quantization block: each mma yields one block's integer dot products,
// which are scaled by the block's two scales and summed in float32, as the
// CPU backend sums them.
//
// Fragments (PTX ISA, mma.m16n8k32 .s8): g = lane/4, i = lane%4.
//   A: a[0] token g, k 4i..4i+3; a[1] token g+8, same k; a[2], a[3] the
//      same tokens at k 16+4i..16+4i+3.
//   B: b[0] row g, k 4i..4i+3; b[1] row g, k 16+4i..16+4i+3.
//   C: c[0], c[1] token g, rows 2i, 2i+1; c[2], c[3] token g+8, same rows.
// A dot product does not care in which order k runs, as long as A and B
// agree: for Q8_0 lane i reads 8 contiguous bytes 8i..8i+7 of the block
// (one load) and uses 8i..8i+3 as "k 4i.." and 8i+4..8i+7 as "k 16+4i..".
// Q4_0 needs no such trick: byte j of a block holds element j (low nibble)
// and j+16 (high), so lane i's 4 bytes 4i..4i+3 are exactly b[0] (low
// nibbles) and b[1] (high). A nibble x (0..15) stands for x-8, made in
// each byte at once without borrows: (x + 0x78) ^ 0x80 is 0xF8 (-8) for 0,
// 0x07 for 15.
constexpr int kMMQWarps = 4;
constexpr int kMMQRowTiles = 4;  // of 8 rows, per warp
constexpr int kMMQRows = kMMQWarps * kMMQRowTiles * 8;
constexpr int kMMQTokenTiles = 4;  // of 16 tokens, at most
constexpr int kMMQChunk = 128;     // bytes of each weight row a stage holds
constexpr int kMMQStages = 3;
constexpr int kMMQFinishThreads = 128;

// MMQShape: the shared-memory layout of one stage, for weights of type T
// (F16 = 1 too: halves times halves, the same pipeline without scales) and
// 16·MT tokens.
template <int T, int MT>
struct MMQShape {
	static constexpr bool half = T == 1;
	static constexpr int bb = half ? 64 : T == 8 ? 32 : 16;  // bytes of a block of 32 weights
	static constexpr int ab = half ? 64 : 32;                // bytes of a block of 32 activations
	static constexpr int kc = kMMQChunk / bb;  // blocks a stage holds: 2 (F16), 4 (Q8_0) or 8 (Q4_0)
	// Row pitches, padded so that the 32 lanes' fragment loads (8 rows or
	// tokens g by 4 lanes i) hit distinct banks: 4 (F16, Q4_0) or 8 (Q8_0)
	// banks apart from row to row.
	static constexpr int pad = T == 8 ? 32 : 16;
	static constexpr int wpitch = kMMQChunk + pad;
	static constexpr int apitch = kc * ab + pad;
	static constexpr int tokens = 16 * MT;
	static constexpr int w_off = 0;                                   // quants: [row][wpitch]
	static constexpr int a_off = w_off + kMMQRows * wpitch;           // activations: [token][apitch]
	// Activation scales: rows of kc+1 floats, so that tokens g and g+4 of a
	// fragment load land in different banks. F16 has no scales.
	static constexpr int adpitch = kc + 1;
	static constexpr int wd_off = a_off + tokens * apitch;                    // weight scales: [row][kc] halves
	static constexpr int ad_off = wd_off + (half ? 0 : kMMQRows * kc * 2);    // activation scales: [token][adpitch] floats
	static constexpr int stage = (ad_off + (half ? 0 : tokens * adpitch * 4) + 15) / 16 * 16;
	static constexpr int bytes = kMMQStages * stage;
	static_assert(a_off % 16 == 0 && wd_off % 16 == 0 && ad_off % 16 == 0 && stage % 16 == 0, "16-byte aligned");
};

// mmq_smem_bytes is the dynamic shared memory mmq<T, MT, E> takes.
inline int mmq_smem_bytes(int T, int MT) {
	switch (MT + 8 * (T == 8) + 16 * (T == 1)) {
	case 1: return MMQShape<2, 1>::bytes;
	case 2: return MMQShape<2, 2>::bytes;
	case 3: return MMQShape<2, 3>::bytes;
	case 4: return MMQShape<2, 4>::bytes;
	case 9: return MMQShape<8, 1>::bytes;
	case 10: return MMQShape<8, 2>::bytes;
	case 11: return MMQShape<8, 3>::bytes;
	case 12: return MMQShape<8, 4>::bytes;
	case 17: return MMQShape<1, 1>::bytes;
	case 18: return MMQShape<1, 2>::bytes;
	case 19: return MMQShape<1, 3>::bytes;
	default: return MMQShape<1, 4>::bytes;
	}
}

// cp_async copies N (4, 8 or 16) bytes from global to shared memory in the
// background, of which the first src_bytes (0 to N) are read and the rest
// zero-filled: rows, tokens and blocks past the end come out as zeros.
template <int N>
__device__ __forceinline__ void cp_async(void *smem, const void *gmem, int src_bytes) {
#if defined(LEO_CUDA_EMU)
	leo_emu::cp_async<N>(smem, gmem, src_bytes);  // lands at issue, at the wait, or either (copy_mode)
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
	if (N == 16)
		asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(src_bytes));
	else
		asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" ::"r"(s), "l"(gmem), "n"(N), "r"(src_bytes));
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(LEO_CUDA_EMU)
	leo_emu::cp_async_commit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	asm volatile("cp.async.commit_group;");
#endif
}

// cp_async_wait waits until at most N of this thread's groups are pending.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(LEO_CUDA_EMU)
	leo_emu::cp_async_wait(N);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

// mma_s8 adds A·B to c (m16n8k32, int8 in, int32 accumulators).
__device__ __forceinline__ void mma_s8(int (&c)[4], const int (&a)[4], int b0, int b1) {
#if defined(LEO_CUDA_EMU)
	leo_emu::mma_s8(c, a, b0, b1);  // from the PTX fragment layouts
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
	    : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
	    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
	__trap();  // forward.cu never launches mmq below compute capability 8.0
#endif
}

// mma_f16 adds A·B to c (m16n8k16, halves in, float32 accumulators). Its
// fragments are those of m16n8k32 .s8 with two halves where that has four
// int8s: A a[0] token g, k 2i, 2i+1; a[1] token g+8; a[2], a[3] at k
// 8+2i; B b0 row g, k 2i, 2i+1; b1 at k 8+2i; C as m16n8k32's.
__device__ __forceinline__ void mma_f16(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
#if defined(LEO_CUDA_EMU)
	leo_emu::mma_f16(c, a, b0, b1);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
	    : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
	    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
	__trap();
#endif
}

// The mma's accumulators start at the bits of 1.5·2^23 (as int32): a
// block's dot product is at most 32·128·127 < 2^22 in magnitude (a file's
// Q8_0 may hold -128), so the
// int32 result read as a float is exactly 1.5·2^23 + dot, and subtracting
// the bias is the conversion to float (a full-rate add, where I2F is
// quarter rate).
constexpr int kMMQBias = 0x4B400000;
constexpr float kMMQBiasValue = 12582912.0f;

// mmq_load starts copying chunk [kb0, kb0 + kc) of blocks (those before
// end) of rows [rows0, rows0 + kMMQRows) and tokens [t0, t0 + 16·MT) into
// stage st.
template <int T, int MT>
__device__ __forceinline__ void mmq_load(uint8_t *st, const Mat &w, const Act &a, int n, int rows0, int t0, int kb0,
                                         int end) {
	using S = MMQShape<T, MT>;
	const int blocks = w.cols / 32;
	const size_t row_bytes = (size_t)blocks * S::bb;
	const int valid = min(S::kc, end - kb0);  // blocks of this chunk inside the slice
	// Weights: each row's chunk is 8 pieces of 16 bytes.
	for (int p = threadIdx.x; p < kMMQRows * 8; p += blockDim.x) {
		const int row = p / 8, part = p % 8, r = rows0 + row;
		const bool ok = r < w.rows && part * 16 < valid * S::bb;
		cp_async<16>(st + S::w_off + row * S::wpitch + part * 16,
		             ok ? w.q + (size_t)r * row_bytes + (size_t)kb0 * S::bb + part * 16 : w.q, ok ? 16 : 0);
	}
	// Weight scales: kc halves a row (16 or 8 bytes, aligned: see Mat.ds).
	if (!S::half)
		for (int row = threadIdx.x; row < kMMQRows; row += blockDim.x) {
			const int r = rows0 + row;
			const bool ok = r < w.rows;
			cp_async<S::kc * 2>(st + S::wd_off + row * S::kc * 2, ok ? w.d + (size_t)r * w.ds + kb0 : w.d,
			                    ok ? valid * 2 : 0);
		}
	// Activations: each token's chunk is kc blocks of ab bytes (int8, or
	// the halves of F16 weights).
	constexpr int apieces = S::kc * S::ab / 16;
	const uint8_t *aq = S::half ? (const uint8_t *)a.h : (const uint8_t *)a.q;
	for (int p = threadIdx.x; p < S::tokens * apieces; p += blockDim.x) {
		const int tok = p / apieces, part = p % apieces, t = t0 + tok;
		const bool ok = t < n && part * 16 < valid * S::ab;
		cp_async<16>(st + S::a_off + tok * S::apitch + part * 16,
		             ok ? aq + ((size_t)t * w.cols + (size_t)kb0 * 32) * (S::ab / 32) + part * 16 : aq, ok ? 16 : 0);
	}
	// Activation scales: one float a block (rows of blocks floats are not
	// 16-byte aligned in general).
	if (!S::half)
		for (int p = threadIdx.x; p < S::tokens * S::kc; p += blockDim.x) {
			const int tok = p / S::kc, k = p % S::kc, t = t0 + tok;
			const bool ok = t < n && k < valid;
			cp_async<4>(st + S::ad_off + (tok * S::adpitch + k) * 4, ok ? a.d + (size_t)t * blocks + kb0 + k : a.d,
			            ok ? 4 : 0);
		}
}

// mmq_compute adds one stage's blocks to this warp's tile: rows
// [32·warp, 32·warp + 32) of the block's, all of its tokens.
template <int T, int MT>
__device__ __forceinline__ void mmq_compute(const uint8_t *st, float (&acc)[MT][kMMQRowTiles][4]) {
	using S = MMQShape<T, MT>;
	const int lane = threadIdx.x % kWarp, g = lane / 4, i4 = lane % 4;
	const int wrow = threadIdx.x / kWarp * kMMQRowTiles * 8;
	if (S::half) {
		// F16: k steps of 16 halves (32 bytes), four a stage; lane i's
		// words at bytes 4i and 16+4i of a step.
		const uint8_t *as = st + S::a_off, *ws = st + S::w_off;
#pragma unroll
		for (int ks = 0; ks < kMMQChunk / 32; ks++) {
			unsigned af[MT][4];
#pragma unroll
			for (int mt = 0; mt < MT; mt++)
#pragma unroll
				for (int h = 0; h < 2; h++) {
					const uint8_t *p = as + (mt * 16 + g + 8 * h) * S::apitch + ks * 32 + i4 * 4;
					af[mt][h] = *(const unsigned *)p;
					af[mt][2 + h] = *(const unsigned *)(p + 16);
				}
#pragma unroll
			for (int nt = 0; nt < kMMQRowTiles; nt++) {
				const uint8_t *p = ws + (wrow + nt * 8 + g) * S::wpitch + ks * 32 + i4 * 4;
				const unsigned b0 = *(const unsigned *)p, b1 = *(const unsigned *)(p + 16);
#pragma unroll
				for (int mt = 0; mt < MT; mt++) mma_f16(acc[mt][nt], af[mt], b0, b1);
			}
		}
		return;
	}
	const int8_t *as = (const int8_t *)(st + S::a_off);
	const uint8_t *ws = st + S::w_off;
	const __half *wds = (const __half *)(st + S::wd_off);
	const float *ads = (const float *)(st + S::ad_off);
#pragma unroll
	for (int kb = 0; kb < S::kc; kb++) {
		int af[MT][4];
		float adq[MT][2];
#pragma unroll
		for (int mt = 0; mt < MT; mt++)
#pragma unroll
			for (int h = 0; h < 2; h++) {
				const int tok = mt * 16 + g + 8 * h;
				const int8_t *p = as + tok * S::apitch + kb * 32;
				if (T == 8) {
					const int2 v = *(const int2 *)(p + i4 * 8);
					af[mt][h] = v.x;
					af[mt][2 + h] = v.y;
				} else {
					af[mt][h] = *(const int *)(p + i4 * 4);
					af[mt][2 + h] = *(const int *)(p + 16 + i4 * 4);
				}
				adq[mt][h] = ads[tok * S::adpitch + kb];
			}
#pragma unroll
		for (int nt = 0; nt < kMMQRowTiles; nt++) {
			const uint8_t *p = ws + (wrow + nt * 8 + g) * S::wpitch + kb * S::bb;
			int b0, b1;
			if (T == 8) {
				const int2 v = *(const int2 *)(p + i4 * 8);
				b0 = v.x;
				b1 = v.y;
			} else {
				const unsigned v = *(const unsigned *)(p + i4 * 4);
				b0 = (int)(((v & 0x0F0F0F0Fu) + 0x78787878u) ^ 0x80808080u);
				b1 = (int)((((v >> 4) & 0x0F0F0F0Fu) + 0x78787878u) ^ 0x80808080u);
			}
			const int r = wrow + nt * 8 + 2 * i4;
			const float wd0 = __half2float(wds[r * S::kc + kb]), wd1 = __half2float(wds[(r + 1) * S::kc + kb]);
#pragma unroll
			for (int mt = 0; mt < MT; mt++) {
				int c[4] = {kMMQBias, kMMQBias, kMMQBias, kMMQBias};
				mma_s8(c, af[mt], b0, b1);
				acc[mt][nt][0] = fmaf(__int_as_float(c[0]) - kMMQBiasValue, wd0 * adq[mt][0], acc[mt][nt][0]);
				acc[mt][nt][1] = fmaf(__int_as_float(c[1]) - kMMQBiasValue, wd1 * adq[mt][0], acc[mt][nt][1]);
				acc[mt][nt][2] = fmaf(__int_as_float(c[2]) - kMMQBiasValue, wd0 * adq[mt][1], acc[mt][nt][2]);
				acc[mt][nt][3] = fmaf(__int_as_float(c[3]) - kMMQBiasValue, wd1 * adq[mt][1], acc[mt][nt][3]);
			}
		}
	}
}

// mmq: grid (row groups of kMMQRows, K slices of per blocks, token groups
// of 16·MT); dynamic shared memory MMQShape<T, MT>::bytes. per is a
// multiple of the stage's blocks (kc), so that every chunk's weight scales
// start aligned. With one slice the warps apply the epilogue to their
// tiles; with several, each slice writes its partial sums to
// part[(slice·n + t)·rows + r], and mmq_finish adds them up.
template <int T, int MT, int E>
__global__ void __launch_bounds__(kMMQWarps * kWarp)
mmq(Mat w, Act a, Out o, int n, int per, float *part) {
	static_assert(T == 8 || T == 2 || T == 1, "mmq takes Q8_0, Q4_0 and F16 weights");
	using S = MMQShape<T, MT>;
#if defined(LEO_CUDA_EMU)
	uint8_t *const mmq_smem = leo_emu::dynamic_smem();  // the launch's buffer
#else
	extern __shared__ __align__(16) uint8_t mmq_smem[];
#endif
	const int lane = threadIdx.x % kWarp, g = lane / 4, i4 = lane % 4;
	const int rows0 = blockIdx.x * kMMQRows, t0 = blockIdx.z * S::tokens;
	const int blocks = w.cols / 32;
	const int first = min(blocks, (int)blockIdx.y * per), end = min(blocks, first + per);
	const int chunks = (end - first + S::kc - 1) / S::kc;
	float acc[MT][kMMQRowTiles][4];
#pragma unroll
	for (int mt = 0; mt < MT; mt++)
#pragma unroll
		for (int nt = 0; nt < kMMQRowTiles; nt++)
#pragma unroll
			for (int e = 0; e < 4; e++) acc[mt][nt][e] = 0;
	wait_previous();
#pragma unroll
	for (int c = 0; c < kMMQStages - 1; c++) {
		if (c < chunks) mmq_load<T, MT>(mmq_smem + c * S::stage, w, a, n, rows0, t0, first + c * S::kc, end);
		cp_async_commit();
	}
	for (int c = 0; c < chunks; c++) {
		cp_async_wait<kMMQStages - 2>();  // chunk c is in, for this thread's copies...
		__syncthreads();                  // ...and everyone's; and chunk c-1's stage is free
		const int next = c + kMMQStages - 1;
		if (next < chunks)
			mmq_load<T, MT>(mmq_smem + next % kMMQStages * S::stage, w, a, n, rows0, t0, first + next * S::kc, end);
		cp_async_commit();
		mmq_compute<T, MT>(mmq_smem + c % kMMQStages * S::stage, acc);
	}
	cp_async_wait<0>();
	const int wrow = rows0 + threadIdx.x / kWarp * kMMQRowTiles * 8;
#pragma unroll
	for (int mt = 0; mt < MT; mt++)
#pragma unroll
		for (int nt = 0; nt < kMMQRowTiles; nt++) {
			const int r = wrow + nt * 8 + 2 * i4;
#pragma unroll
			for (int h = 0; h < 2; h++) {
				const int t = t0 + mt * 16 + g + 8 * h;
				if (r >= w.rows || t >= n) continue;
				if (gridDim.y == 1)
					epilogue<E>(o, t, r, acc[mt][nt][2 * h], acc[mt][nt][2 * h + 1]);
				else
					*(float2 *)(part + ((size_t)blockIdx.y * n + t) * w.rows + r) =
					    make_float2(acc[mt][nt][2 * h], acc[mt][nt][2 * h + 1]);
			}
		}
}

// mmq_finish adds up the slices mmq wrote for rows r, r+1 of token t
// (grid row t), in slice order, and applies epilogue E.
template <int E>
__global__ void __launch_bounds__(kMMQFinishThreads)
mmq_finish(const float *part, int splits, int n, int rows, Out o) {
	wait_previous();
	const int t = blockIdx.y;
	const int r = (blockIdx.x * blockDim.x + threadIdx.x) * 2;
	if (r >= rows) return;
	float v0 = 0, v1 = 0;
	for (int s = 0; s < splits; s++) {
		const float2 p = *(const float2 *)(part + ((size_t)s * n + t) * rows + r);
		v0 += p.x;
		v1 += p.y;
	}
	epilogue<E>(o, t, r, v0, v1);
	// The next product's activations, as swiglu_epilogue: thread r/2 made
	// output r/2 (whole warps: rows/2 is a multiple of 32).
	if (E == kSwiGLU && o.next.on()) act_store(o.next, t, r / 2, o.y[(size_t)t * o.ld + r / 2]);
}

constexpr int kPrepThreads = 256;

// prep makes the activations of a matrix product from rows of x: RMS-
// normalized with gain when gain is set, then as halves (h) and/or int8
// blocks (q, d, s), rounded as round says. Block (b, t) makes elements
// [256b, 256b+256) of token t (each block computes the row's norm itself:
// many blocks finish sooner than one); row t reads row rows[t] of x when
// rows is set (the tokens that want logits). Its blocks first fetch ahead
// (the start of its product's weights) into L2: prep reads little of HBM.
__global__ void __launch_bounds__(kPrepThreads)
prep(const float *x, int cols, const int *rows, const float *gain, float eps, __half *h, int8_t *q, float *d, int *s,
     int round, Ahead ahead) {
	prefetch_ahead(ahead);  // weights: no earlier kernel writes them
	wait_previous();
	const int t = blockIdx.y;
	const float *xr = x + (size_t)(rows ? rows[t] : t) * cols;
	const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
	__shared__ double part[kPrepThreads / kWarp];
	__shared__ float scale_s;
	float scale = 1;
	if (gain) {
		double sum = 0;  // squares in float32, summed in float64, as GGML
		for (int i = threadIdx.x; i < cols; i += blockDim.x) sum += (double)(xr[i] * xr[i]);
		for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, o);
		if (lane == 0) part[warp] = sum;
		__syncthreads();
		if (threadIdx.x == 0) {
			double all = 0;
			for (int i = 0; i < kPrepThreads / kWarp; i++) all += part[i];
			float mean = (float)(all / cols);
			scale_s = (float)(1.0 / sqrt((double)(mean + eps)));
		}
		__syncthreads();
		scale = scale_s;
	}
	if (round == kRoundQ8K) {
		// As quantize_row_q8_K_ref: with m the value of largest magnitude
		// (the first on ties), q = min(127, round(x·(-127/m))) half to
		// even, d = 1/(-127/m). One warp, 8 elements a lane.
		const int base = blockIdx.x * 256 + lane * 8;
		if (warp != 0 || base >= cols) return;
		float v[8], best = 0, ba = 0;
		int bi = 0x7fffffff;
#pragma unroll
		for (int k = 0; k < 8; k++) {
			v[k] = xr[base + k] * scale;
			if (gain) v[k] *= gain[base + k];
			if (fabsf(v[k]) > ba) ba = fabsf(v[k]), best = v[k], bi = base + k;
		}
		for (int o = 16; o > 0; o >>= 1) {
			float oa = __shfl_xor_sync(0xffffffff, ba, o), ov = __shfl_xor_sync(0xffffffff, best, o);
			int oi = __shfl_xor_sync(0xffffffff, bi, o);
			if (oa > ba || (oa == ba && oi < bi)) ba = oa, best = ov, bi = oi;
		}
		const float iscale = best != 0 ? -127.0f / best : 0.0f, dq = iscale != 0 ? 1.0f / iscale : 0.0f;
#pragma unroll
		for (int k = 0; k < 8; k++)
			h[(size_t)t * cols + base + k] = __float2half_rn(dq * (float)min(127, __float2int_rn(v[k] * iscale)));
		return;
	}
	const int b = blockIdx.x * (kPrepThreads / kWarp) + warp;  // this warp's block of 32
	if (b >= cols / 32) return;
	const int i = b * 32 + lane;
	float v = xr[i] * scale;
	if (gain) v *= gain[i];
	act_store(ActOut{h, q, d, s, round, cols, false}, t, i, v);
}

// attend computes positions [first, end) of one head's attention (query
// q, keys and values at base + p*kv_dim in the cache) into out, as
// attn_chunk says; whole says the positions are all of the sequence's.
__device__ void attend(const float *q, const __half *kc, const __half *vc, size_t base, int kv_dim, int head_dim,
                       int first, int end, bool whole, float scale, float *out) {
	__shared__ float qs[256];
	__shared__ float w[kAttnChunk];
	__shared__ float red[kAttnThreads / kWarp];
	for (int i = threadIdx.x; i < head_dim; i += blockDim.x) qs[i] = q[i];
	__syncthreads();
	const int n = end - first;
	for (int i = threadIdx.x; i < n; i += blockDim.x) {
		const uint4 *k = (const uint4 *)(kc + base + (size_t)(first + i) * kv_dim);
		float sum = 0;
#pragma unroll 16
		for (int j = 0; j < head_dim / 8; j++) {
			uint4 kv = __ldg(k + j);
			const __half2 *k2 = (const __half2 *)&kv;
#pragma unroll
			for (int e = 0; e < 4; e++) {
				float2 f = __half22float2(k2[e]);
				sum = fmaf(f.x, qs[8 * j + 2 * e], fmaf(f.y, qs[8 * j + 2 * e + 1], sum));
			}
		}
		w[i] = sum * scale;
	}
	__syncthreads();
	const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
	float m = -INFINITY;
	for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, w[i]);
	m = warp_max(m);
	if (lane == 0) red[warp] = m;
	__syncthreads();
	m = red[0];
	for (int i = 1; i < warps; i++) m = fmaxf(m, red[i]);
	__syncthreads();
	float s = 0;
	for (int i = threadIdx.x; i < n; i += blockDim.x) {
		float e = expf(w[i] - m);
		w[i] = e;
		s += e;
	}
	s = warp_sum(s);
	if (lane == 0) red[warp] = s;
	__syncthreads();
	s = 0;
	for (int i = 0; i < warps; i++) s += red[i];
	if (whole) {
		// The chunk is the whole sequence: normalize here and round the
		// weights to half where they meet the cache, as the CPU backend
		// does; the merge then passes the output through (m, s = 1).
		__syncthreads();
		for (int i = threadIdx.x; i < n; i += blockDim.x) w[i] = __half2float(__float2half_rn(w[i] / s));
		s = 1;
	}
	__syncthreads();
	// Values: thread (g, v) sums positions g, g+groups, ... of dims
	// [8v, 8v+8), reading 16 bytes a position.
	const int vecs = head_dim / 8, groups = blockDim.x / vecs;
	const int vec = threadIdx.x % vecs, g = threadIdx.x / vecs;
	float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
	if (g < groups) {
		const uint4 *v = (const uint4 *)(vc + base + (size_t)first * kv_dim) + vec;
		const int stride = kv_dim / 8;
#pragma unroll 16  // all of a chunk's loads in flight at once
		for (int p = g; p < n; p += groups) {
			uint4 raw = __ldg(v + (size_t)p * stride);
			const __half2 *h2 = (const __half2 *)&raw;
			const float wp = w[p];
#pragma unroll
			for (int e = 0; e < 4; e++) {
				float2 f = __half22float2(h2[e]);
				a[2 * e] = fmaf(wp, f.x, a[2 * e]);
				a[2 * e + 1] = fmaf(wp, f.y, a[2 * e + 1]);
			}
		}
	}
	__shared__ float accs[kAttnThreads * 8];
#pragma unroll
	for (int e = 0; e < 8; e++) accs[threadIdx.x * 8 + e] = a[e];
	__syncthreads();
	for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
		// dim i is element i%8 of vec i/8, in each group's thread.
		float sum = 0;
		for (int k = 0; k < groups; k++) sum += accs[(k * vecs + i / 8) * 8 + i % 8];
		out[i] = sum;
	}
	if (threadIdx.x == 0) {
		out[head_dim] = m;
		out[head_dim + 1] = s;
	}
}

// attn_merge merges the chunks of head h of token t into y[t*dim + h*hd + i]:
// out = Σ_c e^(m_c-M)·o_c / Σ_c e^(m_c-M)·s_c. When act.on(), it also writes
// O's activations of those elements (at = h*hd: blocks of 32 lie within a
// head when hd is a multiple of 32, which forward.cu checks).
__device__ void attn_merge(const float *p, int head_dim, int chunks, float *y, const ActOut &act, int t, int at) {
	float m = -INFINITY;
	for (int c = 0; c < chunks; c++) m = fmaxf(m, __ldcg(p + c * (head_dim + 2) + head_dim));
	float s = 0;
	for (int c = 0; c < chunks; c++) {
		const float *pc = p + c * (head_dim + 2);
		const float sc = __ldcg(pc + head_dim + 1);
		if (sc > 0) s += sc * expf(__ldcg(pc + head_dim) - m);
	}
	for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
		float acc = 0;
		for (int c = 0; c < chunks; c++) {
			const float *pc = p + c * (head_dim + 2);
			if (__ldcg(pc + head_dim + 1) > 0) acc += __ldcg(pc + i) * expf(__ldcg(pc + head_dim) - m);
		}
		y[i] = acc / s;
		// (whole warps: head_dim and blockDim are multiples of 32)
		if (act.on()) act_store(act, t, at + i, acc / s);
	}
}

// attn_chunk computes one chunk of one head's attention for one token:
// scores of the chunk's positions, their maximum m, the sum s of e^(score-m)
// and o = Σ e^(score-m)·v, into part[((t*heads + h)*chunks + c)*(hd+2)] as
// o[0..hd), m, s. Positions past the token's own are not read. A thread
// scores a position (its key row read as 16-byte loads, all in flight at
// once); then threads share out the positions, 8 dimensions each. The last
// block of a head to finish (counted in counters, which it resets) merges
// the head's chunks into y. Its blocks first fetch ahead (the start of O's
// weights) into L2, while the keys and values, small at short contexts,
// leave HBM idle.
__global__ void __launch_bounds__(kAttnThreads)
attn_chunk(const float *q, const __half *kc, const __half *vc, const int *pos, const int *seq,
           int len, int heads, int kv_heads, int head_dim, float scale, int chunks, float *part, int *counters,
           float *y, ActOut act, Ahead ahead) {
	prefetch_ahead(ahead);  // weights: no earlier kernel writes them
	wait_previous();
	const int c = blockIdx.x, h = blockIdx.y, t = blockIdx.z;
	const int dim = heads * head_dim, kv_dim = kv_heads * head_dim;
	const int kvh = h / (heads / kv_heads);
	const int first = c * kAttnChunk, end = min(first + kAttnChunk, pos[t] + 1);
	float *head_part = part + (size_t)(t * heads + h) * chunks * (head_dim + 2);
	float *out = head_part + (size_t)c * (head_dim + 2);
	if (first < end) attend(q + (size_t)t * dim + h * head_dim, kc, vc, (size_t)seq[t] * len * kv_dim + kvh * head_dim,
	                        kv_dim, head_dim, first, end, first == 0 && end == pos[t] + 1, scale, out);
	else if (threadIdx.x == 0) {
		out[head_dim] = -INFINITY;
		out[head_dim + 1] = 0;
	}
	__shared__ bool last;
	__threadfence();  // this chunk's output, before it is counted
	__syncthreads();
	if (threadIdx.x == 0) {
		const int done = atomicAdd(&counters[t * heads + h], 1);
		last = done == chunks - 1;
		if (last) counters[t * heads + h] = 0;  // for the next layer
	}
	__syncthreads();
	if (last) attn_merge(head_part, head_dim, chunks, y + (size_t)t * dim + h * head_dim, act, t, h * head_dim);
}
// qkv_epilogue applies kQKV to rows of a product cuBLAS wrote, y[t*rows + r].
__global__ void qkv_epilogue(const float *y, int rows, Out o) {
	wait_previous();
	const int t = blockIdx.y;
	const int r = (blockIdx.x * blockDim.x + threadIdx.x) * 2;
	if (r >= rows) return;
	epilogue<kQKV>(o, t, r, y[(size_t)t * rows + r], y[(size_t)t * rows + r + 1]);
}

// swiglu_epilogue applies kSwiGLU to interleaved gate/up rows cuBLAS wrote,
// gu[t*2*hidden + 2i, 2i+1], into y[t*hidden + i], and makes the next
// product's activations when next.on() (whole warps: hidden is a multiple
// of 32, and so is blockDim).
__global__ void swiglu_epilogue(const float *gu, int hidden, float *y, ActOut next) {
	wait_previous();
	const int t = blockIdx.y;
	const int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= hidden) return;
	float g = gu[(size_t)t * 2 * hidden + 2 * i], u = gu[(size_t)t * 2 * hidden + 2 * i + 1];
	const float v = g / (1.0f + expf(-g)) * u;
	y[(size_t)t * hidden + i] = v;
	if (next.on()) act_store(next, t, i, v);
}

// repack moves GGML blocks of a matrix (rows × cols, row-major) into the
// layout above, row r landing at row row0 + r*stride of the destination
// (interleaving gate and up, or stacking Q, K and V).
__global__ void repack(const uint8_t *src, int type, int rows, int cols, uint8_t *q, __half *d,
                       int row0, int stride) {
	const int blocks = cols / 32, ds = scale_stride(cols);
	const size_t n = (size_t)rows * blocks;
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
		const int r = i / blocks, b = i % blocks;
		const size_t dr = row0 + (size_t)r * stride;
		if (type == 1) {  // F16: 32 halves
			const uint4 *s = (const uint4 *)(src + (i * 64));
			uint4 *dq = (uint4 *)(q + (dr * cols + b * 32) * 2);
			for (int j = 0; j < 4; j++) dq[j] = s[j];
		} else if (type == 8) {  // Q8_0: half d, 32 int8
			const uint8_t *s = src + i * 34;
			d[dr * ds + b] = *(const __half *)s;
			for (int j = 0; j < 32; j++) q[dr * cols + b * 32 + j] = s[2 + j];
		} else {  // Q4_0: half d, 16 bytes
			const uint8_t *s = src + i * 18;
			d[dr * ds + b] = *(const __half *)s;
			for (int j = 0; j < 16; j++) q[dr * cols / 2 + b * 16 + j] = s[2 + j];
		}
	}
}

// dequant writes rows [r0, r0+n) of a matrix as halves, for cuBLAS.
__global__ void dequant(Mat w, int r0, int n, __half *out) {
	wait_previous();
	const int blocks = w.cols / 32;
	const size_t total = (size_t)n * blocks;
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total * 32; i += (size_t)gridDim.x * blockDim.x) {
		const size_t e = i;
		const size_t r = r0 + e / w.cols;
		const int c = e % w.cols, b = c / 32, j = c % 32;
		float dq = __half2float(w.d[r * w.ds + b]);
		float v;
		if (w.type == 8) {
			v = dq * (float)((const int8_t *)w.q)[r * w.cols + c];
		} else {
			uint8_t byte = w.q[r * w.cols / 2 + b * 16 + (j & 15)];
			int nib = j < 16 ? (byte & 15) : (byte >> 4);
			v = dq * (float)(nib - 8);
		}
		out[e] = __float2half_rn(v);
	}
}

}  // namespace leo
