//go:build linux

package cuda_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestKernelsOnCPUEmulation builds emu/kernels_test.cpp, which runs the
// real source of kernels.cuh on the CPU under emu/cuda_emu.h and checks
// the kernels against double-precision references, and runs it. Most
// sessions have no GPU, so this is where index, synchronization and logic
// bugs in the kernels show first (docs/cuda.md, "Checks without a GPU").
// It needs a C++20 compiler, g++ by default ($CXX overrides), never nvcc.
func TestKernelsOnCPUEmulation(t *testing.T) {
	cxx := os.Getenv("CXX")
	if cxx == "" {
		cxx = "g++"
	}
	if _, err := exec.LookPath(cxx); err != nil {
		t.Fatalf("%s not found (%v): the CUDA kernels' CPU emulation needs a C++20 compiler; "+
			"install Debian's g++ package (apt-get install g++), or set $CXX", cxx, err)
	}
	bin := filepath.Join(t.TempDir(), "kernels_test")
	// -fno-strict-aliasing: the kernels read halves and int8s through
	// 16-byte vector types, as CUDA allows.
	args := []string{"-std=c++20", "-O2", "-pthread", "-fno-strict-aliasing", "-DLEO_CUDA_EMU",
		"-o", bin, filepath.Join("emu", "kernels_test.cpp")}
	if b, err := exec.Command(cxx, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", cxx, strings.Join(args, " "), err, b)
	}
	out, err := exec.Command(bin).CombinedOutput()
	if err != nil {
		t.Fatalf("the kernels under emulation: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	// The emulation itself: kernels that break CUDA's rules must be
	// stopped, with a message that says which rule, or the checks above
	// prove less than they seem to.
	for name, want := range map[string]string{
		"barrier-after-exit": "deadlock",
		"divergent-shuffle":  "disagree on a shuffle",
		"prefetch-outside":   "outside the weights",
	} {
		out, err := exec.Command(bin, name).CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("self-test %s: %v, output %q; want a failure saying %q", name, err, out, want)
		}
	}
}
