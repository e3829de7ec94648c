//go:build cgo && linux

package cuda_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/leo-operator/leo/runtime/cpu"
	"github.com/leo-operator/leo/runtime/cuda"
	"github.com/leo-operator/leo/runtime/loader"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
)

// buildEmuLibrary builds forward.cu with the kernels and the CUDA runtime
// and cuBLAS emulated on the host (emu/cuda_runtime_emu.h) into a
// libleo_cuda.so, with g++ ($CXX overrides), never nvcc.
func buildEmuLibrary(t *testing.T) string {
	t.Helper()
	cxx := os.Getenv("CXX")
	if cxx == "" {
		cxx = "g++"
	}
	if _, err := exec.LookPath(cxx); err != nil {
		t.Fatalf("%s not found (%v): the CUDA backend's CPU emulation needs a C++20 compiler; "+
			"install Debian's g++ package (apt-get install g++), or set $CXX", cxx, err)
	}
	lib := filepath.Join(t.TempDir(), cuda.LibraryName)
	// -fno-strict-aliasing: the kernels read halves and int8s through
	// 16-byte vector types, as CUDA allows.
	args := []string{"-std=c++20", "-O2", "-fPIC", "-shared", "-pthread", "-fno-strict-aliasing", "-DLEO_CUDA_EMU",
		"-x", "c++", "-o", lib, "forward.cu"}
	if b, err := exec.Command(cxx, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", cxx, strings.Join(args, " "), err, b)
	}
	return lib
}

// emuStep is one forward pass: tokens of one sequence from position pos,
// the logits of the last want of them.
type emuStep struct {
	seq, pos, n, want int
}

// emuFeed runs steps through st and returns the logits they asked for, by
// sequence and position.
func emuFeed(t *testing.T, st *model.State, prompts [][]int32, steps []emuStep, vocab int) map[[2]int][]float32 {
	t.Helper()
	out := map[[2]int][]float32{}
	for _, s := range steps {
		b := model.Batch{Logits: make([]bool, s.n)}
		for i := range s.n {
			b.Tokens = append(b.Tokens, prompts[s.seq][s.pos+i])
			b.Pos = append(b.Pos, s.pos+i)
			b.Seq = append(b.Seq, s.seq)
			b.Logits[i] = i >= s.n-s.want
		}
		logits, err := st.Forward(&b)
		if err != nil {
			t.Fatalf("step %+v: %v", s, err)
		}
		for k, i := 0, s.n-s.want; i < s.n; i, k = i+1, k+1 {
			out[[2]int{s.seq, s.pos + i}] = append([]float32(nil), logits[k*vocab:(k+1)*vocab]...)
		}
	}
	return out
}

// TestForwardOnCPUEmulation runs the whole CUDA backend on the CPU:
// forward.cu's host code (the paths of step and product, the activation
// sets, the L2 ranges fetched ahead, the matvec splits, CUDA graph capture
// and replay, the state's buffers) and kernels.cuh's kernels, built with
// g++ against emu/cuda_runtime_emu.h and emu/cuda_emu.h. A tiny model
// (test-gqa) in F16, Q8_0 and Q4_0 must give the CPU backend's logits
// within TestGPUMatchesCPU's bounds: a prompt of 12 tokens as one batch
// (cuBLAS for F16, the matvec kernels' passes of 8 tokens or mmq for the
// quantized types), then one-token decode steps (the matvec kernels; the
// first captures the step's graph, the others replay it), and, for the
// quantized types, a second sequence's 20 tokens as one batch. Each
// runs under the default settings, under LEO_CUDA_FUSE_PREP=2 with the
// matvec splits and LEO_CUDA_L2_AHEAD (whose prefetches the emulation
// checks against the ranges), and under LEO_CUDA_MMQ_TOKENS=64 without
// graphs (LEO_CUDA_PROFILE).
func TestForwardOnCPUEmulation(t *testing.T) {
	lib := buildEmuLibrary(t)
	settings := []struct {
		name string
		env  map[string]string
	}{
		{"defaults", nil},
		{"fused", map[string]string{"LEO_CUDA_FUSE_PREP": "2", "LEO_CUDA_MATVEC_SPLIT": "4",
			"LEO_CUDA_MATVEC_SPLIT_QKV": "2", "LEO_CUDA_L2_AHEAD": "1"}},
		// LEO_CUDA_PROFILE: steps without graphs, launch by launch, with
		// events between them (the totals go to stderr).
		{"mmq", map[string]string{"LEO_CUDA_MMQ_TOKENS": "64", "LEO_CUDA_PROFILE": "1"}},
	}
	for _, typ := range []quant.Type{quant.F16, quant.Q8_0, quant.Q4_0} {
		t.Run(typ.String(), func(t *testing.T) {
			path := writeModel(t, "test-gqa", typ)
			cpuL, err := loader.OpenWith(path, loader.Options{Threads: runtime.NumCPU(), Backend: loader.CPU})
			if err != nil {
				t.Fatal(err)
			}
			defer cpuL.Close()
			gpuL, err := loader.OpenWith(path, loader.Options{Threads: runtime.NumCPU(), Backend: loader.CUDA,
				CUDA: cuda.Options{Library: lib}})
			if err != nil {
				t.Fatal(err)
			}
			defer gpuL.Close()
			c := cpuL.Model.Config
			prompts := [][]int32{{1}, {1}}
			for p := range prompts {
				for i := range 19 {
					prompts[p] = append(prompts[p], int32(3+(p*7919+i*104729)%(c.VocabSize-3)))
				}
			}
			// The prompt, three decode steps, and (quantized) the second
			// sequence in one batch.
			steps := []emuStep{{0, 0, 12, 1}, {0, 12, 1, 1}, {0, 13, 1, 1}, {0, 14, 1, 1}}
			if typ != quant.F16 {
				steps = append(steps, emuStep{1, 0, 20, 2})
			}
			// The reference: the CPU, with the weights as the GPU holds them
			// (Q4_0 files' Q6_K classifier as Q8_0), each sequence in one batch.
			w, err := cuda.HostConverted(cpuL.Model.Weights)
			if err != nil {
				t.Fatal(err)
			}
			held, err := model.New(c, w, cpu.Backend{Pool: cpuL.Pool})
			if err != nil {
				t.Fatal(err)
			}
			cst, err := held.NewStateKV(2, 32, 32, quant.F16)
			if err != nil {
				t.Fatal(err)
			}
			refSteps := []emuStep{{0, 0, 15, 4}}
			if typ != quant.F16 {
				refSteps = append(refSteps, emuStep{1, 0, 20, 2})
			}
			want := emuFeed(t, cst, prompts, refSteps, c.VocabSize)
			for _, set := range settings {
				t.Run(set.name, func(t *testing.T) {
					for k, v := range set.env {
						t.Setenv(k, v) // read when a state is made
					}
					gst, err := gpuL.Model.NewStateKV(2, 32, 32, quant.F16)
					if err != nil {
						t.Fatal(err)
					}
					got := emuFeed(t, gst, prompts, steps, c.VocabSize)
					if err := gst.Close(); err != nil {
						t.Fatal(err)
					}
					var worst float64
					var diff []string
					for k, g := range got {
						e := relErr(g, want[k])
						worst = max(worst, e)
						if e > maxRelErr[typ] {
							diff = append(diff, fmt.Sprintf("seq %d pos %d: rel err %.3g", k[0], k[1], e))
						}
						if a, b := argmax(g), argmax(want[k]); a != b {
							diff = append(diff, fmt.Sprintf("seq %d pos %d: top token %d, CPU %d", k[0], k[1], a, b))
						}
					}
					t.Logf("%d positions, rel err max %.2e", len(got), worst)
					if len(diff) > 0 {
						t.Errorf("the emulated GPU differs from the CPU (rel err bound %g):\n%s", maxRelErr[typ],
							strings.Join(diff, "\n"))
					}
				})
			}
		})
	}
}
