//go:build cgo && linux

package cuda_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/leo-operator/leo/runtime/cpu"
	"github.com/leo-operator/leo/runtime/cuda"
	"github.com/leo-operator/leo/runtime/loader"
	"github.com/leo-operator/leo/runtime/quant"
)

// fakeLibrary builds testdata/fakelib.c into a shared library with the C
// compiler cgo uses, with the given -D flags.
func fakeLibrary(t *testing.T, defs ...string) string {
	t.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	out := filepath.Join(t.TempDir(), cuda.LibraryName)
	args := append([]string{"-shared", "-fPIC", "-o", out, filepath.Join("testdata", "fakelib.c")}, defs...)
	if b, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", cc, strings.Join(args, " "), err, b)
	}
	return out
}

func TestOpenWithoutLibrary(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nowhere", cuda.LibraryName)
	_, err := cuda.Open(cpu.Backend{}, cuda.Options{Library: missing})
	if !errors.Is(err, cuda.ErrUnavailable) {
		t.Fatalf("Open of a missing library: %v; want ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), missing) {
		t.Errorf("error %q does not name the path it tried", err)
	}
}

func TestOpenSearchesEnvironment(t *testing.T) {
	lib := fakeLibrary(t)
	t.Setenv(cuda.LibraryEnv, lib)
	_, err := cuda.Open(cpu.Backend{}, cuda.Options{})
	if !errors.Is(err, cuda.ErrUnavailable) || !strings.Contains(err.Error(), lib) {
		t.Fatalf("Open with $%s set: %v; want ErrUnavailable naming %s", cuda.LibraryEnv, err, lib)
	}
}

func TestOpenWithoutGPU(t *testing.T) {
	lib := fakeLibrary(t)
	_, err := cuda.Open(cpu.Backend{}, cuda.Options{Library: lib})
	if !errors.Is(err, cuda.ErrUnavailable) {
		t.Fatalf("Open without a GPU: %v; want ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), "no CUDA-capable device") {
		t.Errorf("error %q does not pass on the library's reason", err)
	}
}

func TestOpenRefusesOtherABI(t *testing.T) {
	lib := fakeLibrary(t, "-DFAKE_ABI=999")
	_, err := cuda.Open(cpu.Backend{}, cuda.Options{Library: lib})
	if err == nil || !strings.Contains(err.Error(), "ABI version 999") || !strings.Contains(err.Error(), "make cuda") {
		t.Fatalf("Open of a library of another ABI: %v; want an error naming the version and the fix", err)
	}
}

// TestLoaderFallsBackToCPU is the path every CI run and every CPU pod
// takes: asked for the GPU if there is one, the loader says why there is
// none and runs the model on the CPU; asked for the GPU only, it fails.
func TestLoaderFallsBackToCPU(t *testing.T) {
	path := writeModel(t, "test-gqa", quant.Q8_0)
	lib := fakeLibrary(t)
	l, err := loader.OpenWith(path, loader.Options{Threads: 1, Backend: loader.Auto, CUDA: cuda.Options{Library: lib}})
	if err != nil {
		t.Fatalf("auto without a GPU: %v", err)
	}
	defer l.Close()
	if l.Backend != loader.CPU || !strings.Contains(l.CPUReason, "no CUDA-capable device") {
		t.Errorf("auto without a GPU runs on %q because %q; want the CPU and the library's reason", l.Backend, l.CPUReason)
	}
	st, err := l.Model.NewState(1, 8, 8)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Forward(&synthBatch); err != nil {
		t.Fatalf("the CPU fallback does not run: %v", err)
	}

	_, err = loader.OpenWith(path, loader.Options{Threads: 1, Backend: loader.CUDA, CUDA: cuda.Options{Library: lib}})
	if !errors.Is(err, cuda.ErrUnavailable) {
		t.Errorf("backend cuda without a GPU: %v; want ErrUnavailable", err)
	}
}
