// cuda_runtime_emu.h: the part of the CUDA runtime and of cuBLAS that
// forward.cu uses, on the host, so that the whole GPU backend (forward.cu's
// host logic and kernels.cuh's kernels, under cuda_emu.h) runs on a CPU:
// forward.cu includes it instead of cuda_runtime.h and cublas_v2.h when
// LEO_CUDA_EMU is defined. runtime/cuda's TestForwardOnCPUEmulation builds
// forward.cu with it into a libleo_cuda.so and compares its logits with the
// CPU backend's (docs/cuda.md, "Checks without a GPU").
//
// One device, H100-like (132 SMs, compute capability 9.0, 227 KB of shared
// memory a block by opt-in). Device memory is host memory: each allocation
// ends at an inaccessible page (an access past it faults), starts filled
// with 0xFF bytes (NaN as floats and halves: reads of what nothing wrote
// show), and is registered with cuda_emu.h as memory that L2 prefetches may
// touch. Streams run their work at once, in order; events read the wall
// clock. A stream being captured records its launches, copies, sets and
// cuBLAS calls instead, and cudaGraphLaunch replays them, so that replays
// run what was captured, with the arguments of the capture. Launches check
// what CUDA checks (block size, grid, dynamic shared memory against the
// kernel's attribute) and, where a kernel takes an Ahead, that its L2
// prefetches cover the Ahead's ranges exactly once.
#pragma once

#include <cxxabi.h>
#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "cuda_emu.h"

enum cudaError_t {
	cudaSuccess = 0,
	cudaErrorInvalidValue = 1,
	cudaErrorMemoryAllocation = 2,
	cudaErrorInvalidConfiguration = 9,
	cudaErrorInvalidDevice = 101,
	cudaErrorNoDevice = 100,
	cudaErrorInsufficientDriver = 35,
	cudaErrorInvalidResourceHandle = 400,
	cudaErrorStreamCaptureUnsupported = 900,
	cudaErrorStreamCaptureInvalidated = 901,
};

enum cudaMemcpyKind {
	cudaMemcpyHostToHost = 0,
	cudaMemcpyHostToDevice = 1,
	cudaMemcpyDeviceToHost = 2,
	cudaMemcpyDeviceToDevice = 3,
	cudaMemcpyDefault = 4,
};

enum cudaDeviceAttr {
	cudaDevAttrMultiProcessorCount = 16,
	cudaDevAttrComputeCapabilityMajor = 75,
	cudaDevAttrComputeCapabilityMinor = 76,
	cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

enum cudaStreamCaptureMode {
	cudaStreamCaptureModeGlobal = 0,
	cudaStreamCaptureModeThreadLocal = 1,
	cudaStreamCaptureModeRelaxed = 2,
};

constexpr unsigned cudaStreamDefault = 0, cudaStreamNonBlocking = 1;

enum cudaLaunchAttributeID { cudaLaunchAttributeProgrammaticStreamSerialization = 5 };
union cudaLaunchAttributeValue {
	int programmaticStreamSerializationAllowed;
	char pad[64];
};
struct cudaLaunchAttribute {
	cudaLaunchAttributeID id;
	cudaLaunchAttributeValue val;
};

struct cudaDeviceProp {
	char name[256];
	size_t totalGlobalMem;
	int major, minor, multiProcessorCount;
	size_t sharedMemPerBlockOptin;
};

namespace leo_emu_rt {
struct Stream;
struct Event {
	std::chrono::steady_clock::time_point t;
};
struct Graph {
	std::vector<std::function<void()>> ops;
};
}  // namespace leo_emu_rt

typedef leo_emu_rt::Stream *cudaStream_t;
typedef leo_emu_rt::Event *cudaEvent_t;
typedef leo_emu_rt::Graph *cudaGraph_t;
typedef leo_emu_rt::Graph *cudaGraphExec_t;

struct cudaLaunchConfig_t {
	dim3 gridDim, blockDim;
	size_t dynamicSmemBytes;
	cudaStream_t stream;
	cudaLaunchAttribute *attrs;
	unsigned numAttrs;
};

namespace leo_emu_rt {

struct Stream {
	bool capturing = false;
	bool invalid = false;  // an operation that cannot be captured was attempted
	Graph *graph = nullptr;
};

// The device's properties.
constexpr int kSMs = 132, kMajor = 9, kMinor = 0;
constexpr int kOptinSmem = 227 * 1024, kDefaultSmem = 48 * 1024;
constexpr size_t kTotalMem = size_t(80) << 30;

struct Alloc {
	uint8_t *map;
	size_t map_bytes, bytes;
	bool device;
};

struct Runtime {
	std::mutex mu;
	std::map<uintptr_t, Alloc> allocs;  // by start
	size_t device_bytes = 0;
	cudaError_t last = cudaSuccess;
	std::map<const void *, int> max_smem;  // cudaFuncAttributeMaxDynamicSharedMemorySize per kernel
	long launches = 0, replays = 0;
};
inline Runtime rt;

inline cudaError_t set(cudaError_t e) {
	if (e != cudaSuccess) rt.last = e;
	return e;
}

// alloc maps bytes (256-byte aligned) that end at an inaccessible page.
inline void *alloc(size_t bytes, bool device) {
	const size_t page = (size_t)sysconf(_SC_PAGESIZE);
	const size_t rounded = (bytes + 255) / 256 * 256;
	const size_t body = (rounded + page - 1) / page * page;
	void *m = mmap(nullptr, body + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED) return nullptr;
	mprotect((uint8_t *)m + body, page, PROT_NONE);
	uint8_t *p = (uint8_t *)m + body - rounded;
	memset(p, 0xFF, rounded);
	std::lock_guard<std::mutex> l(rt.mu);
	rt.allocs[(uintptr_t)p] = Alloc{(uint8_t *)m, body + page, bytes, device};
	if (device) {
		rt.device_bytes += bytes;
		leo_emu::add_weights(p, bytes);
	}
	return p;
}

inline cudaError_t release(void *p, bool device) {
	if (!p) return cudaSuccess;
	std::lock_guard<std::mutex> l(rt.mu);
	auto it = rt.allocs.find((uintptr_t)p);
	if (it == rt.allocs.end() || it->second.device != device) return set(cudaErrorInvalidValue);
	if (device) {
		rt.device_bytes -= it->second.bytes;
		auto &w = leo_emu::weights;
		for (size_t i = 0; i < w.size(); i++)
			if (w[i].p == (const uint8_t *)p) {
				w.erase(w.begin() + i);
				break;
			}
	}
	munmap(it->second.map, it->second.map_bytes);
	rt.allocs.erase(it);
	return cudaSuccess;
}

// inside says whether [p, p+bytes) lies in one allocation (device or host
// as device says; any if either).
inline bool inside(const void *p, size_t bytes, int device) {
	std::lock_guard<std::mutex> l(rt.mu);
	auto it = rt.allocs.upper_bound((uintptr_t)p);
	if (it == rt.allocs.begin()) return false;
	--it;
	const uintptr_t a = it->first;
	if ((uintptr_t)p + bytes > a + it->second.bytes) return false;
	return device < 0 || it->second.device == (device == 1);
}

// enqueue runs op now, or records it where st is being captured.
inline cudaError_t enqueue(cudaStream_t st, std::function<void()> op) {
	if (st && st->capturing) {
		st->graph->ops.push_back(std::move(op));
		return cudaSuccess;
	}
	op();
	return cudaSuccess;
}

// Ahead-like: a kernel parameter with the members of kernels.cuh's Ahead.
template <class T>
concept AheadLike = requires(const T &a) {
	a.p[1];
	a.bytes[1];
	a.first;
};

// check_ahead: the launch's L2 prefetches (leo_emu::prefetched) cover each
// of a's ranges exactly once, and nothing else.
template <class T> inline void check_ahead(const T &a) {
	if constexpr (AheadLike<T>) {
		std::vector<leo_emu::Range> want, got = leo_emu::prefetched;
		for (int r = 0; r < 2; r++)
			if (a.bytes[r]) want.push_back({a.p[r], a.bytes[r]});
		auto by_start = [](const leo_emu::Range &x, const leo_emu::Range &y) { return x.p < y.p; };
		std::sort(want.begin(), want.end(), by_start);
		std::sort(got.begin(), got.end(), by_start);
		size_t g = 0;
		for (const leo_emu::Range &w : want) {
			const uint8_t *at = w.p;
			while (g < got.size() && got[g].p == at && at < w.p + w.bytes) at += got[g++].bytes;
			if (at != w.p + w.bytes) leo_emu::fail("a launch's L2 prefetches do not cover its Ahead's ranges exactly once");
		}
		if (g != got.size()) leo_emu::fail("a launch prefetched into L2 outside its Ahead's ranges");
	}
}

// launch runs kernel over grid with args (already converted to its
// parameter types), then checks the prefetches of any Ahead among them.
// trace: LEO_EMU_TRACE set, each launch's kernel and shape on stderr.
inline void trace(const void *kernel, dim3 grid, dim3 block, size_t smem) {
	static const bool on = getenv("LEO_EMU_TRACE") != nullptr;
	if (!on) return;
	Dl_info info{};
	const char *name = "?";
	char *demangled = nullptr;
	if (dladdr(kernel, &info) && info.dli_sname) {
		int status = 0;
		demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
		name = demangled ? demangled : info.dli_sname;
	}
	fprintf(stderr, "leo_emu: %s grid %u,%u,%u block %u smem %zu\n", name, grid.x, grid.y, grid.z, block.x, smem);
	free(demangled);
}

template <class... P> inline void run(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, const std::tuple<P...> &args) {
	trace((const void *)kernel, grid, block, smem);
	leo_emu::prefetched.clear();
	std::apply([&](const P &...a) { leo_emu::run_grid(kernel, grid, block, smem, a...); }, args);
	std::apply([](const P &...a) { (check_ahead(a), ...); }, args);
	leo_emu::prefetched.clear();
	rt.launches++;
}

inline int occupancy(int threads, size_t smem) {
	int blocks = std::min(32, 2048 / std::max(threads, 1));
	if (smem > 0) blocks = std::min<int>(blocks, (int)((228 * 1024) / (smem + 1024)));
	return std::max(blocks, 0);
}

}  // namespace leo_emu_rt

inline cudaError_t cudaGetLastError() {
	const cudaError_t e = leo_emu_rt::rt.last;
	leo_emu_rt::rt.last = cudaSuccess;
	return e;
}
inline cudaError_t cudaPeekAtLastError() { return leo_emu_rt::rt.last; }

inline const char *cudaGetErrorString(cudaError_t e) {
	switch (e) {
	case cudaSuccess: return "no error";
	case cudaErrorInvalidValue: return "invalid argument";
	case cudaErrorMemoryAllocation: return "out of memory";
	case cudaErrorInvalidConfiguration: return "invalid configuration argument";
	case cudaErrorInvalidDevice: return "invalid device ordinal";
	case cudaErrorNoDevice: return "no CUDA-capable device is detected";
	case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
	case cudaErrorInvalidResourceHandle: return "invalid resource handle";
	case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
	case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
	}
	return "unknown error (emulation)";
}

inline cudaError_t cudaGetDeviceCount(int *n) {
	*n = 1;
	return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d) { return leo_emu_rt::set(d == 0 ? cudaSuccess : cudaErrorInvalidDevice); }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d) {
	if (d != 0) return leo_emu_rt::set(cudaErrorInvalidDevice);
	memset(p, 0, sizeof *p);
	snprintf(p->name, sizeof p->name, "CPU emulation (H100-like)");
	p->totalGlobalMem = leo_emu_rt::kTotalMem;
	p->major = leo_emu_rt::kMajor;
	p->minor = leo_emu_rt::kMinor;
	p->multiProcessorCount = leo_emu_rt::kSMs;
	p->sharedMemPerBlockOptin = leo_emu_rt::kOptinSmem;
	return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int d) {
	if (d != 0) return leo_emu_rt::set(cudaErrorInvalidDevice);
	switch (a) {
	case cudaDevAttrMultiProcessorCount: *v = leo_emu_rt::kSMs; return cudaSuccess;
	case cudaDevAttrComputeCapabilityMajor: *v = leo_emu_rt::kMajor; return cudaSuccess;
	case cudaDevAttrComputeCapabilityMinor: *v = leo_emu_rt::kMinor; return cudaSuccess;
	case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = leo_emu_rt::kOptinSmem; return cudaSuccess;
	}
	return leo_emu_rt::set(cudaErrorInvalidValue);
}
inline cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b) {
	*total_b = leo_emu_rt::kTotalMem;
	*free_b = leo_emu_rt::kTotalMem - std::min(leo_emu_rt::rt.device_bytes, leo_emu_rt::kTotalMem);
	return cudaSuccess;
}

template <class T> inline cudaError_t cudaMalloc(T **p, size_t bytes) {
	*p = (T *)leo_emu_rt::alloc(bytes, true);
	return leo_emu_rt::set(*p ? cudaSuccess : cudaErrorMemoryAllocation);
}
inline cudaError_t cudaFree(void *p) { return leo_emu_rt::release(p, true); }
template <class T> inline cudaError_t cudaMallocHost(T **p, size_t bytes) {
	*p = (T *)leo_emu_rt::alloc(bytes, false);
	return leo_emu_rt::set(*p ? cudaSuccess : cudaErrorMemoryAllocation);
}
inline cudaError_t cudaFreeHost(void *p) { return leo_emu_rt::release(p, false); }

// Copies check that their device side lies in one device allocation.
inline cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind k, cudaStream_t st = nullptr) {
	using namespace leo_emu_rt;
	if (bytes == 0) return cudaSuccess;
	const bool dd = k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice;
	const bool sd = k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice;
	if ((dd && !inside(dst, bytes, 1)) || (sd && !inside(src, bytes, 1))) return set(cudaErrorInvalidValue);
	return enqueue(st, [=] { memcpy(dst, src, bytes); });
}
inline cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind k) {
	return cudaMemcpyAsync(dst, src, bytes, k, nullptr);
}
inline cudaError_t cudaMemsetAsync(void *p, int v, size_t bytes, cudaStream_t st = nullptr) {
	using namespace leo_emu_rt;
	if (bytes == 0) return cudaSuccess;
	if (!inside(p, bytes, 1)) return set(cudaErrorInvalidValue);
	return enqueue(st, [=] { memset(p, v, bytes); });
}
inline cudaError_t cudaMemset(void *p, int v, size_t bytes) { return cudaMemsetAsync(p, v, bytes, nullptr); }

inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *st, unsigned) {
	*st = new leo_emu_rt::Stream();
	return cudaSuccess;
}
inline cudaError_t cudaStreamCreate(cudaStream_t *st) { return cudaStreamCreateWithFlags(st, 0); }
inline cudaError_t cudaStreamDestroy(cudaStream_t st) {
	delete st;
	return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t st) {
	if (st && st->capturing) return leo_emu_rt::set(cudaErrorStreamCaptureUnsupported);
	return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

inline cudaError_t cudaEventCreate(cudaEvent_t *e) {
	*e = new leo_emu_rt::Event();
	return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
	delete e;
	return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t st = nullptr) {
	return leo_emu_rt::enqueue(st, [e] { e->t = std::chrono::steady_clock::now(); });
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
	*ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
	return cudaSuccess;
}

inline cudaError_t cudaStreamBeginCapture(cudaStream_t st, cudaStreamCaptureMode) {
	if (!st || st->capturing) return leo_emu_rt::set(cudaErrorInvalidValue);
	st->capturing = true;
	st->invalid = false;
	st->graph = new leo_emu_rt::Graph();
	return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t *g) {
	*g = nullptr;
	if (!st || !st->capturing) return leo_emu_rt::set(cudaErrorInvalidValue);
	st->capturing = false;
	if (st->invalid) {
		delete st->graph;
		st->graph = nullptr;
		return leo_emu_rt::set(cudaErrorStreamCaptureInvalidated);
	}
	*g = st->graph;
	st->graph = nullptr;
	return cudaSuccess;
}
inline cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t *exec, cudaGraph_t g, unsigned long long) {
	*exec = new leo_emu_rt::Graph(*g);
	return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t g) {
	delete g;
	return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t g) {
	delete g;
	return cudaSuccess;
}
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t g, cudaStream_t st) {
	if (st && st->capturing) return leo_emu_rt::set(cudaErrorStreamCaptureUnsupported);
	for (auto &op : g->ops) op();
	leo_emu_rt::rt.replays++;
	return cudaSuccess;
}

template <class F> inline cudaError_t cudaFuncSetAttribute(F *kernel, cudaFuncAttribute a, int v) {
	if (a != cudaFuncAttributeMaxDynamicSharedMemorySize || v < 0 || v > leo_emu_rt::kOptinSmem)
		return leo_emu_rt::set(cudaErrorInvalidValue);
	leo_emu_rt::rt.max_smem[(const void *)kernel] = v;
	return cudaSuccess;
}
template <class F>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, F *, int threads, size_t smem) {
	*n = leo_emu_rt::occupancy(threads, smem);
	return cudaSuccess;
}

// cudaLaunchKernelEx: the checks of a launch, then the grid, now or at
// each replay of the graph being captured. (Programmatic dependent launch
// changes nothing here: launches run one after another.)
template <class... P, class... A>
inline cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t *cfg, void (*kernel)(P...), A &&...args) {
	using namespace leo_emu_rt;
	static_assert(sizeof...(P) == sizeof...(A), "a kernel's parameters");
	const dim3 g = cfg->gridDim, b = cfg->blockDim;
	if (b.x == 0 || b.x > 1024 || b.y != 1 || b.z != 1 || g.x == 0 || g.y == 0 || g.z == 0 || g.y > 65535 ||
	    g.z > 65535)
		return set(cudaErrorInvalidConfiguration);
	int allowed = kDefaultSmem;
	{
		auto it = rt.max_smem.find((const void *)kernel);
		if (it != rt.max_smem.end()) allowed = std::max(allowed, it->second);
	}
	if (cfg->dynamicSmemBytes > (size_t)allowed) return set(cudaErrorInvalidValue);
	std::tuple<std::decay_t<P>...> params((std::decay_t<P>)args...);
	const size_t smem = cfg->dynamicSmemBytes;
	return enqueue(cfg->stream, [=] { run(kernel, g, b, smem, params); });
}

// cuBLAS: cublasGemmEx for forward.cu's call (A transposed, halves; B
// halves; C floats; float sums), as loops.
enum cublasStatus_t {
	CUBLAS_STATUS_SUCCESS = 0,
	CUBLAS_STATUS_NOT_INITIALIZED = 1,
	CUBLAS_STATUS_INVALID_VALUE = 7,
	CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16F = 2 };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F = 68 };
enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT = -1 };

namespace leo_emu_rt {
struct Blas {
	cudaStream_t stream = nullptr;
	void *ws = nullptr;
	size_t ws_bytes = 0;
};
}  // namespace leo_emu_rt
typedef leo_emu_rt::Blas *cublasHandle_t;

inline cublasStatus_t cublasCreate(cublasHandle_t *h) {
	*h = new leo_emu_rt::Blas();
	return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t h) {
	delete h;
	return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t st) {
	h->stream = st;
	return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes) {
	if (bytes && !leo_emu_rt::inside(ws, bytes, 1)) return CUBLAS_STATUS_INVALID_VALUE;
	h->ws = ws;
	h->ws_bytes = bytes;
	return CUBLAS_STATUS_SUCCESS;
}

// C (m × n, column-major, ldc) = alpha · op(A) · op(B) + beta · C, for
// op(A) = Aᵀ (A k × m, lda), op(B) = B (k × n, ldb). With beta 0, C is not
// read (as cuBLAS: NaNs there do not matter).
inline cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                   const void *alpha, const void *A, cudaDataType_t at, int lda, const void *B,
                                   cudaDataType_t bt, int ldb, const void *beta, void *C, cudaDataType_t ct, int ldc,
                                   cublasComputeType_t comp, cublasGemmAlgo_t) {
	using namespace leo_emu_rt;
	if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
	if (ta != CUBLAS_OP_T || tb != CUBLAS_OP_N || at != CUDA_R_16F || bt != CUDA_R_16F || ct != CUDA_R_32F ||
	    comp != CUBLAS_COMPUTE_32F)
		return CUBLAS_STATUS_NOT_SUPPORTED;  // not forward.cu's call: add it here
	if (m < 0 || n < 0 || k < 0 || lda < std::max(1, k) || ldb < std::max(1, k) || ldc < std::max(1, m))
		return CUBLAS_STATUS_INVALID_VALUE;
	if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
	// Every element the call reads or writes lies in a device allocation.
	if (!inside(A, ((size_t)(m - 1) * lda + k) * 2, 1) || !inside(B, ((size_t)(n - 1) * ldb + k) * 2, 1) ||
	    !inside(C, ((size_t)(n - 1) * ldc + m) * 4, 1))
		return CUBLAS_STATUS_INVALID_VALUE;
	const float al = *(const float *)alpha, be = *(const float *)beta;
	const __half *a = (const __half *)A, *b = (const __half *)B;
	float *c = (float *)C;
	enqueue(h->stream, [=] {
		std::vector<float> bf((size_t)k);
		for (int j = 0; j < n; j++) {
			for (int x = 0; x < k; x++) bf[x] = (float)b[(size_t)j * ldb + x];
			for (int i = 0; i < m; i++) {
				const __half *ai = a + (size_t)i * lda;
				float s = 0;
				for (int x = 0; x < k; x++) s += (float)ai[x] * bf[x];
				float *ci = c + (size_t)j * ldc + i;
				*ci = be == 0 ? al * s : al * s + be * *ci;
			}
		}
	});
	return CUBLAS_STATUS_SUCCESS;
}
