//go:build cgo && linux

package cuda

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include "leo_cuda.h"

// The library's functions, found by dlsym: leo-runtime links no CUDA.
typedef struct {
	int (*abi_version)(void);
	int (*device_count)(int *, char *);
	int (*device_info)(int, char *, int, size_t *, size_t *, int *, int *, char *);
	int (*copy_bandwidth)(int, size_t, int, double *, char *);
	int (*model_new)(int, const leo_config *, leo_model **, char *);
	int (*model_matrix)(leo_model *, int, int, int, int, int, int, const void *, size_t, char *);
	int (*model_vector)(leo_model *, int, int, const float *, int, char *);
	int (*model_rope)(leo_model *, const float *, const float *, int, char *);
	size_t (*model_bytes)(const leo_model *);
	void (*model_free)(leo_model *);
	int (*state_bytes)(const leo_model *, int, int, int, size_t *, char *);
	int (*state_new)(leo_model *, int, int, int, leo_state **, char *);
	void (*state_buffers)(leo_state *, float **, int32_t **, int32_t **, int32_t **, float **);
	int (*forward)(leo_state *, int, int, char *);
	void (*state_free)(leo_state *);
} leo_api;

// leo_open dlopens path and fills api; on failure it returns why (owned by
// the dl library: copy it at once).
static const char *leo_open(const char *path, leo_api *api, void **handle) {
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) return dlerror();
#define SYM(f)                                                   \
	*(void **)&api->f = dlsym(h, "leo_" #f);                 \
	if (!api->f) {                                           \
		dlclose(h);                                      \
		return "the library has no function leo_" #f;   \
	}
	SYM(abi_version) SYM(device_count) SYM(device_info) SYM(copy_bandwidth) SYM(model_new)
	SYM(model_matrix) SYM(model_vector) SYM(model_rope) SYM(model_bytes) SYM(model_free)
	SYM(state_bytes) SYM(state_new) SYM(state_buffers) SYM(forward) SYM(state_free)
#undef SYM
	*handle = h;
	return NULL;
}

static void leo_close(void *handle) { dlclose(handle); }

// cgo calls C functions, not pointers: one trampoline each.
static int abi_version(leo_api *a) { return a->abi_version(); }
static int device_count(leo_api *a, int *n, char *err) { return a->device_count(n, err); }
static int device_info(leo_api *a, int d, char *name, int len, size_t *fr, size_t *tot, int *ma, int *mi, char *err) {
	return a->device_info(d, name, len, fr, tot, ma, mi, err);
}
static int copy_bandwidth(leo_api *a, int d, size_t b, int it, double *g, char *err) { return a->copy_bandwidth(d, b, it, g, err); }
static int model_new(leo_api *a, int d, const leo_config *c, leo_model **m, char *err) { return a->model_new(d, c, m, err); }
static int model_matrix(leo_api *a, leo_model *m, int l, int w, int t, int act, int r, int c, const void *p, size_t b, char *err) {
	return a->model_matrix(m, l, w, t, act, r, c, p, b, err);
}
static int model_vector(leo_api *a, leo_model *m, int l, int w, const float *p, int n, char *err) {
	return a->model_vector(m, l, w, p, n, err);
}
static int model_rope(leo_api *a, leo_model *m, const float *c, const float *s, int n, char *err) {
	return a->model_rope(m, c, s, n, err);
}
static size_t model_bytes(leo_api *a, const leo_model *m) { return a->model_bytes(m); }
static void model_free(leo_api *a, leo_model *m) { a->model_free(m); }
static int state_bytes(leo_api *a, const leo_model *m, int s, int l, int b, size_t *n, char *err) {
	return a->state_bytes(m, s, l, b, n, err);
}
static int state_new(leo_api *a, leo_model *m, int s, int l, int b, leo_state **o, char *err) {
	return a->state_new(m, s, l, b, o, err);
}
static void state_buffers(leo_api *a, leo_state *s, float **x, int32_t **p, int32_t **q, int32_t **r, float **lg) {
	a->state_buffers(s, x, p, q, r, lg);
}
static int forward(leo_api *a, leo_state *s, int n, int nout, char *err) { return a->forward(s, n, nout, err); }
static void state_free(leo_api *a, leo_state *s) { a->state_free(s); }
*/
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"unsafe"
)

// Library is a loaded libleo_cuda.so.
type Library struct {
	Path string
	api  *C.leo_api // in C memory: cgo passes it to C on every call
}

// dlopen loads the library at path (a bare name searches the loader's
// path) and checks its ABI version.
func dlopen(path string) (*Library, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	api := (*C.leo_api)(C.calloc(1, C.size_t(unsafe.Sizeof(C.leo_api{}))))
	var h unsafe.Pointer
	if msg := C.leo_open(cpath, api, &h); msg != nil { //nolint:gocritic // cgo's checks on pointer arguments read as duplicate expressions
		C.free(unsafe.Pointer(api))
		return nil, errors.New(C.GoString(msg))
	}
	if v := int(C.abi_version(api)); v != C.LEO_CUDA_ABI_VERSION {
		C.free(unsafe.Pointer(api))
		C.leo_close(h)
		return nil, fmt.Errorf("%s has ABI version %d; this leo-runtime needs %d (rebuild it with make cuda)", path, v, C.LEO_CUDA_ABI_VERSION)
	}
	return &Library{Path: path, api: api}, nil
}

// errBuf is room for the library's error messages.
type errBuf [C.LEO_ERR_LEN]C.char

func (e *errBuf) ptr() *C.char { return &e[0] }
func (e *errBuf) err(what string) error {
	return fmt.Errorf("%s: %s", what, C.GoString(&e[0]))
}

// DeviceCount is how many GPUs the library sees.
func (l *Library) DeviceCount() (int, error) {
	var e errBuf
	var n C.int
	if C.device_count(l.api, &n, e.ptr()) != 0 {
		return 0, e.err("no usable GPU")
	}
	return int(n), nil
}

// Device describes GPU i.
func (l *Library) Device(i int) (DeviceInfo, error) {
	var e errBuf
	var name [256]C.char
	var free, total C.size_t
	var major, minor C.int
	if C.device_info(l.api, C.int(i), &name[0], C.int(len(name)), &free, &total, &major, &minor, e.ptr()) != 0 {
		return DeviceInfo{}, e.err(fmt.Sprintf("GPU %d", i))
	}
	return DeviceInfo{Index: i, Name: C.GoString(&name[0]), FreeBytes: uint64(free), MemBytes: uint64(total),
		CCMajor: int(major), CCMinor: int(minor)}, nil
}

// CopyBandwidth measures GPU i's device-to-device copy bandwidth in GB/s
// (bytes read plus written), the median of iters copies of bytes bytes.
func (l *Library) CopyBandwidth(i int, bytes int64, iters int) (float64, error) {
	var e errBuf
	var g C.double
	if C.copy_bandwidth(l.api, C.int(i), C.size_t(bytes), C.int(iters), &g, e.ptr()) != 0 {
		return 0, e.err("copy bandwidth")
	}
	return float64(g), nil
}

// deviceModel is a model's weights on a GPU. The states made from it hold
// it: it is freed when it was released and its last state is.
type deviceModel struct {
	lib      *Library
	p        *C.leo_model
	mu       sync.Mutex
	states   int
	released bool
}

func (l *Library) newModel(device int, c config) (*deviceModel, error) {
	var e errBuf
	cc := C.leo_config{
		dim: C.int32_t(c.dim), hidden_dim: C.int32_t(c.hidden), layers: C.int32_t(c.layers),
		heads: C.int32_t(c.heads), kv_heads: C.int32_t(c.kvHeads), vocab: C.int32_t(c.vocab),
		rope_dim: C.int32_t(c.ropeDim), context: C.int32_t(c.context), norm_eps: C.float(c.eps),
	}
	var p *C.leo_model
	if C.model_new(l.api, C.int(device), &cc, &p, e.ptr()) != 0 { //nolint:gocritic // cgo's checks on pointer arguments read as duplicate expressions
		return nil, e.err("CUDA model")
	}
	return &deviceModel{lib: l, p: p}, nil
}

func (m *deviceModel) matrix(layer, which, typ, act, rows, cols int, data []byte) error {
	var e errBuf
	if C.model_matrix(m.lib.api, m.p, C.int(layer), C.int(which), C.int(typ), C.int(act), C.int(rows), C.int(cols),
		unsafe.Pointer(unsafe.SliceData(data)), C.size_t(len(data)), e.ptr()) != 0 {
		return e.err("upload")
	}
	return nil
}

func (m *deviceModel) vector(layer, which int, v []float32) error {
	var e errBuf
	if C.model_vector(m.lib.api, m.p, C.int(layer), C.int(which), (*C.float)(unsafe.SliceData(v)), C.int(len(v)), e.ptr()) != 0 {
		return e.err("upload")
	}
	return nil
}

func (m *deviceModel) rope(cos, sin []float32) error {
	var e errBuf
	if C.model_rope(m.lib.api, m.p, (*C.float)(unsafe.SliceData(cos)), (*C.float)(unsafe.SliceData(sin)), C.int(len(cos)), e.ptr()) != 0 {
		return e.err("upload")
	}
	return nil
}

func (m *deviceModel) bytes() uint64 { return uint64(C.model_bytes(m.lib.api, m.p)) }

// free frees the weights at once (a model no state was made from).
func (m *deviceModel) free() {
	if m.p != nil {
		C.model_free(m.lib.api, m.p)
		m.p = nil
	}
}

// release frees the weights once no state uses them.
func (m *deviceModel) release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.released = true
	if m.states == 0 {
		m.free()
	}
}

// stateFreed notes that a state of the model is gone.
func (m *deviceModel) stateFreed() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states--
	if m.released && m.states == 0 {
		m.free()
	}
}

func (m *deviceModel) stateBytes(slots, length, maxBatch int) (uint64, error) {
	var e errBuf
	var n C.size_t
	if C.state_bytes(m.lib.api, m.p, C.int(slots), C.int(length), C.int(maxBatch), &n, e.ptr()) != 0 {
		return 0, e.err("CUDA state")
	}
	return uint64(n), nil
}

// deviceState is a KV cache and buffers on the GPU, with page-locked host
// buffers the library reads and writes (views, not Go memory).
type deviceState struct {
	m              *deviceModel
	p              *C.leo_state
	x, logits      []float32
	pos, seq, rows []int32
	dim, vocab     int
}

func (m *deviceModel) newState(slots, length, maxBatch, dim, vocab int) (*deviceState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.released {
		return nil, errors.New("the model on the GPU was closed")
	}
	var e errBuf
	var p *C.leo_state
	if C.state_new(m.lib.api, m.p, C.int(slots), C.int(length), C.int(maxBatch), &p, e.ptr()) != 0 { //nolint:gocritic // cgo's checks on pointer arguments read as duplicate expressions
		return nil, e.err("CUDA state")
	}
	var x, lg *C.float
	var pos, seq, rows *C.int32_t
	C.state_buffers(m.lib.api, p, &x, &pos, &seq, &rows, &lg) //nolint:gocritic // as above
	m.states++
	return &deviceState{
		m: m, p: p, dim: dim, vocab: vocab,
		x:      unsafe.Slice((*float32)(unsafe.Pointer(x)), maxBatch*dim),
		logits: unsafe.Slice((*float32)(unsafe.Pointer(lg)), maxBatch*vocab),
		pos:    unsafe.Slice((*int32)(unsafe.Pointer(pos)), maxBatch),
		seq:    unsafe.Slice((*int32)(unsafe.Pointer(seq)), maxBatch),
		rows:   unsafe.Slice((*int32)(unsafe.Pointer(rows)), maxBatch),
	}, nil
}

func (s *deviceState) forward(n, nout int) error {
	if s.p == nil {
		return errors.New("CUDA forward: the state was closed")
	}
	var e errBuf
	if C.forward(s.m.lib.api, s.p, C.int(n), C.int(nout), e.ptr()) != 0 {
		return e.err("CUDA forward")
	}
	return nil
}

func (s *deviceState) free() {
	if s.p != nil {
		C.state_free(s.m.lib.api, s.p)
		s.p = nil
		s.x, s.logits, s.pos, s.seq, s.rows = nil, nil, nil, nil, nil
		s.m.stateFreed()
	}
}

// find loads the first library of candidates(path) that loads.
func find(path string) (*Library, error) {
	var why []string
	for _, p := range candidates(path) {
		lib, err := dlopen(p)
		if err == nil {
			return lib, nil
		}
		why = append(why, err.Error())
	}
	return nil, fmt.Errorf("no %s could be loaded (%s)", LibraryName, strings.Join(why, "; "))
}
