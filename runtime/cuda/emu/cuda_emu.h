// cuda_emu.h: just enough of CUDA, on the host, to run kernels.cuh's real
// source on a CPU (kernels.cuh includes it instead of cuda_fp16.h when
// LEO_CUDA_EMU is defined). Most sessions have no GPU, so kernels are
// written blind; this catches index, synchronization and logic bugs in CI
// before a GPU run does (see docs/cuda.md, "Checks without a GPU").
//
// A launch (run_grid) runs its thread blocks one after another, in a
// shuffled order, and each block's threads as fibers on one OS thread,
// switched only where CUDA threads meet: __syncthreads, the warp
// shuffles and mma (a barrier of the warp's 32 lanes). The fibers resume
// in a random order each round, so that code that reads what another
// thread writes without a barrier in between sees it missing in some
// runs. A barrier that can never complete (some threads exited, or waited
// elsewhere) stops the program with the barrier's kind, rather than hang.
// __shared__ variables are static: blocks run one at a time.
//
// Not emulated: timing, the memory model beyond that (every write is
// visible at once), PTX validity, register limits, bank conflicts.
#pragma once

#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

struct dim3 {
	unsigned x = 1, y = 1, z = 1;
	constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(8) float2 { float x, y; };
inline float2 make_float2(float x, float y) { return {x, y}; }

// Halves: _Float16 converts with round to nearest even, as the _rn
// intrinsics do.
typedef _Float16 __half;
struct alignas(4) __half2 { __half x, y; };
inline float __half2float(__half h) { return (float)h; }
inline __half __float2half_rn(float f) { return (__half)f; }
inline __half __float2half(float f) { return (__half)f; }
inline __half2 __floats2half2_rn(float a, float b) { return {(__half)a, (__half)b}; }
inline __half2 __float2half2_rn(float a) { return {(__half)a, (__half)a}; }
inline float2 __half22float2(__half2 h) { return {(float)h.x, (float)h.y}; }
inline float __low2float(__half2 h) { return (float)h.x; }
inline float __high2float(__half2 h) { return (float)h.y; }

inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
inline int __float2int_rn(float f) { return (int)nearbyintf(f); }  // the default rounding: to nearest even

// CUDA's min and max take mixed integer types (int and unsigned, size_t).
template <class A, class B> inline auto min(A a, B b) { return b < a ? b : a; }
template <class A, class B> inline auto max(A a, B b) { return a < b ? b : a; }

// __dp4a: four signed byte products, added to c.
inline int __dp4a(int a, int b, int c) {
	for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
	return c;
}

template <class T> inline T __ldg(const T *p) { return *p; }
template <class T> inline T __ldcg(const T *p) { return *p; }
inline void __threadfence() {}  // blocks run one after another: every write is seen

// The thread's and the launch's coordinates. The scheduler sets threadIdx
// before it resumes a fiber.
inline dim3 threadIdx, blockIdx, gridDim, blockDim;

// Fibers switch on x86-64 by a few instructions of our own (callee-saved
// registers and the stack pointer: the switch is a function call to the
// compiler); elsewhere by ucontext, whose switches each make a system call
// (the signal mask), several times slower. (-DLEO_EMU_UCONTEXT: ucontext
// everywhere.)
#if defined(__x86_64__) && !defined(LEO_EMU_UCONTEXT)
#define LEO_EMU_SWITCH 1
#else
#define LEO_EMU_SWITCH 0
#endif
#if LEO_EMU_SWITCH
extern "C" void leo_emu_switch(void **save_sp, void *load_sp);
asm(R"(
	.text
	.globl leo_emu_switch
	.hidden leo_emu_switch
	.type leo_emu_switch, @function
leo_emu_switch:
	pushq %rbp
	pushq %rbx
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	movq %rsp, (%rdi)
	movq %rsi, %rsp
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %rbx
	popq %rbp
	ret
	.size leo_emu_switch, .-leo_emu_switch
)");
#endif

namespace leo_emu {

[[noreturn]] inline void fail(const char *what) {
	fprintf(stderr, "cuda_emu: %s (block %u,%u,%u thread %u)\n", what, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x);
	fflush(stderr);
	abort();
}

// The current block's fibers.
struct Sched {
	static constexpr size_t kStack = 256 << 10;
#if LEO_EMU_SWITCH
	void *main;
	std::vector<void *> ctx;  // the fibers' saved stack pointers
#else
	ucontext_t main;
	std::vector<ucontext_t> ctx;
#endif
	std::vector<uint8_t *> stacks;
	std::vector<bool> done;
	int cur = -1, live = 0;
	unsigned long long progress = 0;  // arrivals and exits: a round without any is a deadlock
	void (*body)(void *) = nullptr;
	void *arg = nullptr;
	// __syncthreads: arrivals in this generation.
	int bar_count = 0;
	unsigned bar_gen = 0;
	// The warps' barriers, and what the lanes exchange across them.
	struct Warp {
		int count = 0;
		unsigned gen = 0;
		uint64_t v[32][6];
		int tag[32];
	};
	std::vector<Warp> warps;
	std::mt19937 rng{12345};
	bool shuffle_threads = true;
};
inline Sched sched;

inline void yield() {
	Sched &s = sched;
#if LEO_EMU_SWITCH
	leo_emu_switch(&s.ctx[s.cur], s.main);
#else
	if (swapcontext(&s.ctx[s.cur], &s.main) != 0) fail("swapcontext");
#endif
}

inline void fiber_entry() {
	Sched &s = sched;
	s.body(s.arg);
	s.done[s.cur] = true;
	s.live--;
	s.progress++;
#if LEO_EMU_SWITCH
	void *dead;
	leo_emu_switch(&dead, s.main);  // never resumed
	__builtin_unreachable();
#endif
	// (ucontext: returning resumes uc_link, the scheduler)
}

// resume runs fiber i until it yields or ends.
inline void resume(int i) {
	Sched &s = sched;
#if LEO_EMU_SWITCH
	leo_emu_switch(&s.main, s.ctx[i]);
#else
	if (swapcontext(&s.main, &s.ctx[i]) != 0) fail("swapcontext");
#endif
}

// start makes fiber i's context: fiber_entry on its stack.
inline void start(int i) {
	Sched &s = sched;
#if LEO_EMU_SWITCH
	// The stack as leo_emu_switch leaves it: six registers, then the
	// return address, fiber_entry, at a 16-byte boundary (as after a call).
	void **top = (void **)(s.stacks[i] + Sched::kStack - 64);
	top[0] = (void *)fiber_entry;
	for (int k = 1; k <= 6; k++) top[-k] = nullptr;
	s.ctx[i] = top - 6;
#else
	getcontext(&s.ctx[i]);
	s.ctx[i].uc_stack.ss_sp = s.stacks[i];
	s.ctx[i].uc_stack.ss_size = Sched::kStack;
	s.ctx[i].uc_link = &s.main;
	makecontext(&s.ctx[i], fiber_entry, 0);
#endif
}

// run_block runs threads fibers of body(arg) to the end.
inline void run_block(int threads, void (*body)(void *), void *arg) {
	Sched &s = sched;
	if (threads % 32 != 0) fail("block size not a multiple of 32");
	while ((int)s.stacks.size() < threads) {
		// A guard page below each stack: an overflow faults instead of
		// corrupting the next fiber's.
		void *m = mmap(nullptr, Sched::kStack + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED) fail("mmap stack");
		mprotect(m, 4096, PROT_NONE);
		s.stacks.push_back((uint8_t *)m + 4096);
	}
	s.ctx.assign(threads, {});
	s.done.assign(threads, false);
	s.warps.assign(threads / 32, Sched::Warp{});
	s.body = body;
	s.arg = arg;
	s.live = threads;
	s.bar_count = 0;
	for (int i = 0; i < threads; i++) start(i);
	std::vector<int> order(threads);
	for (int i = 0; i < threads; i++) order[i] = i;
	while (s.live > 0) {
		const unsigned long long before = s.progress;
		if (s.shuffle_threads) std::shuffle(order.begin(), order.end(), s.rng);
		for (int i : order) {
			if (s.done[i]) continue;
			s.cur = i;
			threadIdx = dim3(i);
			resume(i);
		}
		if (s.progress == before) {
			char msg[160];
			snprintf(msg, sizeof msg, "deadlock: %d of %d threads wait at a barrier (%d at __syncthreads), %d exited",
			         s.live, threads, s.bar_count, threads - s.live);
			threadIdx = dim3(0);
			fail(msg);
		}
	}
	s.cur = -1;
}

// syncthreads: every thread of the block, none exited (as CUDA requires).
inline void syncthreads() {
	Sched &s = sched;
	const unsigned gen = s.bar_gen;
	s.progress++;
	if (++s.bar_count == (int)s.ctx.size()) {
		s.bar_count = 0;
		s.bar_gen++;
	}
	while (s.bar_gen == gen) yield();
}

// warp_sync: the 32 lanes of the calling thread's warp.
inline void warp_sync() {
	Sched::Warp &w = sched.warps[threadIdx.x / 32];
	const unsigned gen = w.gen;
	sched.progress++;
	if (++w.count == 32) {
		w.count = 0;
		w.gen++;
	}
	while (w.gen == gen) yield();
}

// exchange puts this lane's words (up to 6) in the warp's slots under tag
// (what is exchanged, which every lane must agree on: a lane elsewhere, as
// in divergent code, fails here), waits for the warp, and passes each
// lane's slots to f, then waits again so that no slot is overwritten
// before all have read.
template <class F> inline void exchange(int tag, const uint64_t *words, int nw, F f) {
	Sched::Warp &w = sched.warps[threadIdx.x / 32];
	const int lane = threadIdx.x % 32;
	memcpy(w.v[lane], words, nw * 8);
	w.tag[lane] = tag;
	warp_sync();
	for (int l = 0; l < 32; l++)
		if (w.tag[l] != tag) fail("warp lanes disagree on a shuffle or mma (divergent warp?)");
	f(w.v);
	warp_sync();
}

template <class T> inline T shfl_xor(unsigned mask, T v, int lane_mask) {
	static_assert(sizeof(T) <= 8);
	if (mask != 0xffffffffu) fail("shuffle mask other than full: not emulated");
	uint64_t word = 0;
	memcpy(&word, &v, sizeof v);
	T r;
	exchange(1000 + lane_mask * 16 + (int)sizeof(T), &word, 1,
	         [&](uint64_t (*v)[6]) { memcpy(&r, &v[(threadIdx.x % 32) ^ lane_mask][0], sizeof r); });
	return r;
}

// The dynamic shared memory of the running launch (extern __shared__).
inline std::vector<uint8_t> dyn_smem;
inline uint8_t *dynamic_smem() { return (uint8_t *)(((uintptr_t)dyn_smem.data() + 15) & ~(uintptr_t)15); }

// Weights: the ranges L2 prefetches may touch (registered by the tests),
// and a log of l2_prefetch's ranges, for checks of prefetch_ahead.
struct Range {
	const uint8_t *p;
	size_t bytes;
};
inline std::vector<Range> weights;
inline std::vector<Range> prefetched;
inline void add_weights(const void *p, size_t bytes) { weights.push_back({(const uint8_t *)p, bytes}); }
inline bool in_weights(const uint8_t *p, size_t bytes) {
	for (const Range &r : weights)
		if (p >= r.p && p + bytes <= r.p + r.bytes) return true;
	return false;
}
// l2_prefetch: bytes (a multiple of 16, 16-byte aligned) at p.
inline void l2_prefetch(const uint8_t *p, unsigned bytes) {
	if ((uintptr_t)p % 16 || bytes % 16 || bytes == 0) fail("l2_prefetch: unaligned range");
	if (!in_weights(p, bytes)) fail("l2_prefetch: range outside the weights");
	prefetched.push_back({p, bytes});
}
// prefetch_line: the 128-byte line holding p (prefetch.global.L2).
inline void prefetch_line(const void *p) {
	if (!in_weights((const uint8_t *)p, 1)) fail("prefetch.global.L2: address outside the weights");
}

// cp.async: each thread's copies wait in groups until cp_async_wait
// retires their group, or land at issue, as copy_mode says: 0 at issue,
// 1 at the wait (the latest CUDA allows), 2 either, at random.
struct Copy {
	void *d;
	const void *s;
	int n, src;
};
struct CopyState {
	std::vector<std::vector<Copy>> groups;  // committed, oldest first
	std::vector<Copy> open;
};
inline std::vector<CopyState> copies(1024);
inline int copy_mode = 1;
inline void do_copy(const Copy &c) {
	memcpy(c.d, c.s, c.src);
	memset((uint8_t *)c.d + c.src, 0, c.n - c.src);
}
template <int N> inline void cp_async(void *smem, const void *gmem, int src_bytes) {
	if ((uintptr_t)smem % N || (uintptr_t)gmem % N) fail("cp.async: misaligned");
	if (src_bytes < 0 || src_bytes > N) fail("cp.async: src_bytes out of range");
	const uint8_t *sm = dynamic_smem();
	if ((uint8_t *)smem < sm || (uint8_t *)smem + N > dyn_smem.data() + dyn_smem.size()) fail("cp.async: outside shared memory");
	Copy c{smem, gmem, N, src_bytes};
	if (copy_mode == 0 || (copy_mode == 2 && sched.rng() % 2)) do_copy(c);
	else copies[threadIdx.x].open.push_back(c);
}
inline void cp_async_commit() {
	CopyState &c = copies[threadIdx.x];
	c.groups.push_back(std::move(c.open));
	c.open.clear();
}
inline void cp_async_wait(int n) {
	CopyState &c = copies[threadIdx.x];
	while ((int)c.groups.size() > n) {
		for (const Copy &k : c.groups.front()) do_copy(k);
		c.groups.erase(c.groups.begin());
	}
}

// mma.sync m16n8k32 .s8 (mma_s8) and m16n8k16 .f16 (mma_f16), from the
// fragment layouts of the PTX ISA: the warp's lanes exchange their
// fragments, and each computes its own accumulators from them.
inline void mma_s8(int (&c)[4], const int (&a)[4], int b0, int b1) {
	const uint64_t words[6] = {(uint32_t)a[0], (uint32_t)a[1], (uint32_t)a[2], (uint32_t)a[3], (uint32_t)b0, (uint32_t)b1};
	exchange(1, words, 6, [&](uint64_t (*v)[6]) {
		int A[16][32], B[32][8];
		for (int ln = 0; ln < 32; ln++) {
			const int g = ln / 4, t = ln % 4;
			for (int i = 0; i < 16; i++) {  // a[i/4] byte i%4: row g (+8 for a[1], a[3]), k 4t+i%4 (+16 for a[2], a[3])
				const int row = (i < 4 || (i >= 8 && i < 12)) ? g : g + 8;
				const int col = t * 4 + (i & 3) + (i >= 8 ? 16 : 0);
				A[row][col] = (int8_t)(v[ln][i / 4] >> (8 * (i % 4)));
			}
			for (int i = 0; i < 8; i++)  // b[i/4] byte i%4: column g, k 4t+i%4 (+16 for b1)
				B[t * 4 + (i & 3) + (i >= 4 ? 16 : 0)][g] = (int8_t)(v[ln][4 + i / 4] >> (8 * (i % 4)));
		}
		const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
		for (int i = 0; i < 4; i++) {  // c[i]: row g (+8 for c[2], c[3]), column 2t + i%2
			const int row = i < 2 ? g : g + 8, col = t * 2 + (i & 1);
			int s = 0;
			for (int k = 0; k < 32; k++) s += A[row][k] * B[k][col];
			c[i] += s;
		}
	});
}

inline float half_of(uint64_t word, int j) {
	const uint16_t b = (uint16_t)(word >> (16 * j));
	__half h;
	memcpy(&h, &b, 2);
	return (float)h;
}

inline void mma_f16(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
	const uint64_t words[6] = {a[0], a[1], a[2], a[3], b0, b1};
	exchange(2, words, 6, [&](uint64_t (*v)[6]) {
		float A[16][16], B[16][8];
		for (int ln = 0; ln < 32; ln++) {
			const int g = ln / 4, t = ln % 4;
			for (int i = 0; i < 8; i++) {  // a[i/2] half i%2: row g (+8 for a[1], a[3]), k 2t+i%2 (+8 for a[2], a[3])
				const int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
				const int col = t * 2 + (i & 1) + (i >= 4 ? 8 : 0);
				A[row][col] = half_of(v[ln][i / 2], i % 2);
			}
			for (int i = 0; i < 4; i++) B[t * 2 + (i & 1) + (i >= 2 ? 8 : 0)][g] = half_of(v[ln][4 + i / 2], i % 2);
		}
		const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
		for (int i = 0; i < 4; i++) {
			const int row = i < 2 ? g : g + 8, col = t * 2 + (i & 1);
			float s = 0;
			for (int k = 0; k < 16; k++) s += A[row][k] * B[k][col];
			c[i] += s;
		}
	});
}

// Launch settings: run blocks in a shuffled order (seeded), and poison
// dynamic shared memory before each block, so that reads of what no copy
// wrote show.
inline bool shuffle_blocks = true;

template <class Tuple, class K> struct Call {
	K kernel;
	Tuple *args;
	static void run(void *p) {
		Call *c = (Call *)p;
		Tuple copy = *c->args;  // each thread its own parameters, as a launch gives
		std::apply(c->kernel, copy);
	}
};

// run_grid runs kernel<<<grid, block, smem>>>(args...).
template <class... P, class... A>
void run_grid(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, A &&...args) {
	static_assert(sizeof...(P) == sizeof...(A), "a kernel's parameters");
	if (block.y != 1 || block.z != 1) fail("run_grid: one-dimensional blocks only");
	using Tuple = std::tuple<std::decay_t<P>...>;
	Tuple params((P)args...);
	gridDim = grid;
	blockDim = block;
	dyn_smem.assign(smem + 16, 0);
	std::vector<dim3> order;
	for (unsigned z = 0; z < grid.z; z++)
		for (unsigned y = 0; y < grid.y; y++)
			for (unsigned x = 0; x < grid.x; x++) order.push_back(dim3(x, y, z));
	if (shuffle_blocks) std::shuffle(order.begin(), order.end(), sched.rng);
	Call<Tuple, void (*)(P...)> call{kernel, &params};
	for (const dim3 &b : order) {
		blockIdx = b;
		memset(dyn_smem.data(), 0xCD, dyn_smem.size());
		for (unsigned i = 0; i < block.x; i++) copies[i] = CopyState{};
		run_block((int)block.x, &Call<Tuple, void (*)(P...)>::run, &call);
	}
	threadIdx = blockIdx = dim3(0);
}

}  // namespace leo_emu

inline float __shfl_xor_sync(unsigned mask, float v, int o) { return leo_emu::shfl_xor(mask, v, o); }
inline int __shfl_xor_sync(unsigned mask, int v, int o) { return leo_emu::shfl_xor(mask, v, o); }
inline unsigned __shfl_xor_sync(unsigned mask, unsigned v, int o) { return leo_emu::shfl_xor(mask, v, o); }
inline double __shfl_xor_sync(unsigned mask, double v, int o) { return leo_emu::shfl_xor(mask, v, o); }
inline void __syncthreads() { leo_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
	if (mask != 0xffffffffu) leo_emu::fail("__syncwarp mask other than full: not emulated");
	leo_emu::warp_sync();
}
// One OS thread runs all fibers, and they switch only at barriers: plain
// read-modify-writes are atomic here.
inline int atomicAdd(int *p, int v) {
	const int old = *p;
	*p = old + v;
	return old;
}
inline unsigned atomicAdd(unsigned *p, unsigned v) {
	const unsigned old = *p;
	*p = old + v;
	return old;
}
inline float atomicAdd(float *p, float v) {
	const float old = *p;
	*p = old + v;
	return old;
}
[[noreturn]] inline void __trap() { leo_emu::fail("__trap"); }
