//go:build cgo

package ggmlref

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

// From ggml/include/ggml.h of ggml 0.23.0 (llama.cpp as bundled by
// node-llama-cpp 3.21.1). Open checks the layout against known entries.
typedef void (*ggml_to_float_t)(const void * x, float * y, int64_t k);
typedef void (*ggml_from_float_t)(const float * x, void * y, int64_t k);
struct ggml_type_traits {
	const char * type_name;
	int64_t blck_size;
	int64_t blck_size_interleave;
	size_t type_size;
	bool is_quantized;
	ggml_to_float_t to_float;
	ggml_from_float_t from_float_ref;
};

typedef const char * (*str_fn)(void);
typedef const struct ggml_type_traits * (*traits_fn)(int type);
typedef bool (*requires_imatrix_fn)(int type);
typedef size_t (*quantize_chunk_fn)(int type, const float * src, void * dst, int64_t start, int64_t nrows, int64_t n_per_row, const float * imatrix);
typedef float (*half_to_f32_fn)(uint16_t);
typedef uint16_t (*f32_to_half_fn)(float);

static const char * call_str(void * f) { return ((str_fn)f)(); }
static const struct ggml_type_traits * call_traits(void * f, int type) { return ((traits_fn)f)(type); }
static bool call_requires_imatrix(void * f, int type) { return ((requires_imatrix_fn)f)(type); }
static size_t call_quantize_chunk(void * f, int type, const float * src, void * dst, int64_t n) {
	return ((quantize_chunk_fn)f)(type, src, dst, 0, 1, n, NULL);
}
static void call_to_float(void * f, const void * x, float * y, int64_t k) { ((ggml_to_float_t)f)(x, y, k); }
static void call_from_float(void * f, const float * x, void * y, int64_t k) { ((ggml_from_float_t)f)(x, y, k); }
// ggml_bf16_t is a struct {uint16_t bits;}, returned and passed in a
// register like a uint16_t on x86-64 and arm64.
static float call_half_to_f32(void * f, uint16_t h) { return ((half_to_f32_fn)f)(h); }
static uint16_t call_f32_to_half(void * f, float x) { return ((f32_to_half_fn)f)(x); }
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/leo-operator/leo/runtime/quant"
)

// WantVersion is the ggml version whose ggml.h this package's declarations
// were copied from (ggml_version() of node-llama-cpp 3.21.1's build, commit
// 5b4ebc5). Open refuses another version: the traits struct and the number
// of types may differ.
const WantVersion = "0.23.0"

// typeCount is GGML_TYPE_COUNT in that ggml.h; ggml_get_type_traits reads
// past its table for larger ids.
const typeCount = 43

// Lib is a loaded libggml-base.so. It stays loaded for the life of the
// process (unloading a C++ library with static state is not worth the risk
// in a test helper), and its functions are safe to call concurrently.
type Lib struct {
	path    string
	version string
	commit  string

	getTraits       unsafe.Pointer
	requiresImatrix unsafe.Pointer
	quantizeChunk   unsafe.Pointer
	fp16ToFP32      unsafe.Pointer
	fp32ToFP16      unsafe.Pointer
	bf16ToFP32      unsafe.Pointer
	fp32ToBF16      unsafe.Pointer
	// Q8_K's row functions: ggml-base's traits table leaves them out (the
	// CPU backend supplies a SIMD quantizer), but the symbols are exported.
	quantizeQ8K   unsafe.Pointer
	dequantizeQ8K unsafe.Pointer
}

// Open loads the libggml-base.so at path and checks that it is ggml
// WantVersion with the traits layout this package expects.
func Open(path string) (*Lib, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	h := C.dlopen(cpath, C.RTLD_NOW|C.RTLD_LOCAL)
	if h == nil {
		return nil, fmt.Errorf("ggmlref: dlopen %s: %s", path, C.GoString(C.dlerror()))
	}
	l := &Lib{path: path}
	ok := false
	defer func() {
		if !ok {
			C.dlclose(h)
		}
	}()
	var version, commit unsafe.Pointer
	for _, s := range []struct {
		name string
		p    *unsafe.Pointer
	}{
		{"ggml_version", &version},
		{"ggml_commit", &commit},
		{"ggml_get_type_traits", &l.getTraits},
		{"ggml_quantize_requires_imatrix", &l.requiresImatrix},
		{"ggml_quantize_chunk", &l.quantizeChunk},
		{"ggml_fp16_to_fp32", &l.fp16ToFP32},
		{"ggml_fp32_to_fp16", &l.fp32ToFP16},
		{"ggml_bf16_to_fp32", &l.bf16ToFP32},
		{"ggml_fp32_to_bf16", &l.fp32ToBF16},
		{"quantize_row_q8_K_ref", &l.quantizeQ8K},
		{"dequantize_row_q8_K", &l.dequantizeQ8K},
	} {
		cname := C.CString(s.name)
		*s.p = C.dlsym(h, cname)
		C.free(unsafe.Pointer(cname))
		if *s.p == nil {
			return nil, fmt.Errorf("ggmlref: %s has no symbol %s; is it libggml-base.so of ggml %s?", path, s.name, WantVersion)
		}
	}
	l.version = C.GoString(C.call_str(version))
	l.commit = C.GoString(C.call_str(commit))
	if l.version != WantVersion {
		return nil, fmt.Errorf("ggmlref: %s is ggml %s (commit %s), want %s: check ggml.h's struct ggml_type_traits and GGML_TYPE_COUNT, then update this package", path, l.version, l.commit, WantVersion)
	}
	// A wrong struct layout would show here rather than as odd test failures.
	for _, c := range []struct {
		t          quant.Type
		name       string
		elems, siz int
	}{{quant.F16, "f16", 1, 2}, {quant.Q4K, "q4_K", 256, 144}, {quant.Q8_0, "q8_0", 32, 34}} {
		name, elems, size, _, ok := l.Traits(c.t)
		if !ok || name != c.name || elems != c.elems || size != c.siz {
			return nil, fmt.Errorf("ggmlref: %s: traits of type %d read as %q, %d elements, %d bytes; want %q, %d, %d: the ggml_type_traits layout differs from ggml.h %s", path, c.t, name, elems, size, c.name, c.elems, c.siz, WantVersion)
		}
	}
	ok = true
	return l, nil
}

// Version returns ggml_version() and ggml_commit() of the loaded library.
func (l *Lib) Version() (version, commit string) { return l.version, l.commit }

// Path returns the path the library was loaded from.
func (l *Lib) Path() string { return l.path }

func (l *Lib) traits(t quant.Type) *C.struct_ggml_type_traits {
	if uint32(t) >= typeCount {
		return nil
	}
	tr := C.call_traits(l.getTraits, C.int(t))
	if tr == nil || tr.blck_size == 0 { // a retired id: an empty table entry
		return nil
	}
	return tr
}

// Traits returns GGML's name and block layout for type t, and whether it is
// quantized; ok is false for an id GGML does not define.
func (l *Lib) Traits(t quant.Type) (name string, blockElems, blockBytes int, quantized, ok bool) {
	tr := l.traits(t)
	if tr == nil {
		return "", 0, 0, false, false
	}
	return C.GoString(tr.type_name), int(tr.blck_size), int(tr.type_size), bool(tr.is_quantized), true
}

// rowBytes checks that n elements are whole blocks of t and returns their size.
func (l *Lib) rowBytes(t quant.Type, n int) (*C.struct_ggml_type_traits, int, error) {
	tr := l.traits(t)
	if tr == nil {
		return nil, 0, fmt.Errorf("ggmlref: GGML has no type %d", t)
	}
	be := int(tr.blck_size)
	if n <= 0 || n%be != 0 {
		return nil, 0, fmt.Errorf("ggmlref: %s: %d elements is not a positive whole number of %d-element blocks", t, n, be)
	}
	return tr, n / be * int(tr.type_size), nil
}

// Dequantize decodes n elements of type t from src with GGML's to_float
// (dequantize_row_q8_K for Q8_K; a copy for F32, which GGML never converts).
func (l *Lib) Dequantize(t quant.Type, src []byte, n int) ([]float32, error) {
	tr, size, err := l.rowBytes(t, n)
	if err != nil {
		return nil, err
	}
	if len(src) != size {
		return nil, fmt.Errorf("ggmlref: %s: %d elements take %d bytes, src has %d", t, n, size, len(src))
	}
	dst := make([]float32, n)
	switch {
	case t == quant.F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case t == quant.Q8K:
		C.call_to_float(l.dequantizeQ8K, unsafe.Pointer(unsafe.SliceData(src)), (*C.float)(unsafe.SliceData(dst)), C.int64_t(n))
	case tr.to_float != nil:
		C.call_to_float(unsafe.Pointer(tr.to_float), unsafe.Pointer(unsafe.SliceData(src)), (*C.float)(unsafe.SliceData(dst)), C.int64_t(n))
	default:
		return nil, fmt.Errorf("ggmlref: GGML has no dequantizer for %s", t)
	}
	return dst, nil
}

// Quantize encodes src as type t with ggml_quantize_chunk (one row, no
// importance matrix: the reference quantizers), or quantize_row_q8_K_ref for
// Q8_K. The output buffer starts zeroed, which matters where GGML leaves
// bytes unwritten (an all-zero Q8_K block's bsums).
func (l *Lib) Quantize(t quant.Type, src []float32) ([]byte, error) {
	tr, size, err := l.rowBytes(t, len(src))
	if err != nil {
		return nil, err
	}
	dst := make([]byte, size)
	in := (*C.float)(unsafe.SliceData(src))
	out := unsafe.Pointer(unsafe.SliceData(dst))
	switch {
	case t == quant.Q8K:
		C.call_from_float(l.quantizeQ8K, in, out, C.int64_t(len(src)))
	case t == quant.F32 || t == quant.F16 || t == quant.BF16 ||
		(bool(tr.is_quantized) && tr.from_float_ref != nil && !bool(C.call_requires_imatrix(l.requiresImatrix, C.int(t)))):
		// ggml_quantize_chunk aborts the process on a type it cannot do, so
		// only those it can reach get here.
		got := int(C.call_quantize_chunk(l.quantizeChunk, C.int(t), in, out, C.int64_t(len(src))))
		if got != size {
			return nil, fmt.Errorf("ggmlref: ggml_quantize_chunk(%s) wrote %d bytes, want %d", t, got, size)
		}
	default:
		return nil, fmt.Errorf("ggmlref: GGML has no reference quantizer for %s", t)
	}
	return dst, nil
}

// FP16ToFloat32 is ggml_fp16_to_fp32.
func (l *Lib) FP16ToFloat32(h uint16) float32 {
	return float32(C.call_half_to_f32(l.fp16ToFP32, C.uint16_t(h)))
}

// Float32ToFP16 is ggml_fp32_to_fp16.
func (l *Lib) Float32ToFP16(f float32) uint16 {
	return uint16(C.call_f32_to_half(l.fp32ToFP16, C.float(f)))
}

// BF16ToFloat32 is ggml_bf16_to_fp32.
func (l *Lib) BF16ToFloat32(h uint16) float32 {
	return float32(C.call_half_to_f32(l.bf16ToFP32, C.uint16_t(h)))
}

// Float32ToBF16 is ggml_fp32_to_bf16.
func (l *Lib) Float32ToBF16(f float32) uint16 {
	return uint16(C.call_f32_to_half(l.fp32ToBF16, C.float(f)))
}
