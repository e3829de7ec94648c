// Package cuda is leo's GPU backend: the Go side of libleo_cuda.so, the
// CUDA kernels built from this directory's .cu files by `make cuda`.
//
// The library is loaded at run time (dlopen), so leo-runtime builds, tests
// and runs without CUDA; Open says why when it cannot be used (no library,
// no GPU, a binary built without cgo), and the runtime then uses the CPU
// backend. The library runs the whole forward pass on the GPU; this
// package uploads the weights (converting types its kernels lack to F16)
// and moves tokens in and logits out. See docs/cuda.md.
package cuda

import (
	"errors"
	"os"
	"path/filepath"
)

// ErrUnavailable is wrapped by Open's error when there is no library or
// no GPU: the cases where running on the CPU is the answer.
var ErrUnavailable = errors.New("the CUDA backend is unavailable")

// LibraryName is the kernel library's file name.
const LibraryName = "libleo_cuda.so"

// LibraryEnv names an environment variable holding the library's path.
const LibraryEnv = "LEO_CUDA_LIB"

// Options choose the library and the GPU.
type Options struct {
	// Library is the path of libleo_cuda.so; "" tries $LEO_CUDA_LIB, then
	// the dynamic loader's search path, then the executable's directory.
	Library string
	Device  int
}

// DeviceInfo describes a GPU.
type DeviceInfo struct {
	Index               int
	Name                string
	FreeBytes, MemBytes uint64
	CCMajor, CCMinor    int
}

// config is the shape the library needs.
type config struct {
	dim, hidden, layers, heads, kvHeads, vocab, ropeDim, context int
	eps                                                          float32
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }

// candidates lists where to look for the library, in order.
func candidates(path string) []string {
	if path != "" {
		return []string{path}
	}
	if p := os.Getenv(LibraryEnv); p != "" {
		return []string{p}
	}
	c := []string{LibraryName}
	if exe, err := os.Executable(); err == nil {
		c = append(c, filepath.Join(filepath.Dir(exe), LibraryName))
	}
	return c
}
