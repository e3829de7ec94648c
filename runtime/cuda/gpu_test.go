//go:build cuda && cgo && linux

// The tests and benchmarks of this file need libleo_cuda.so and a GPU;
// hack/gpu/check.sh builds them with -tags cuda and runs them on a GPU
// machine (see docs/cuda.md). CI runs the rest of the package.

package cuda_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leo-operator/leo/runtime/cpu"
	"github.com/leo-operator/leo/runtime/cuda"
	"github.com/leo-operator/leo/runtime/engine"
	"github.com/leo-operator/leo/runtime/loader"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/sample"
)

func openBoth(t testing.TB, path string) (cpuL, gpuL *loader.Loaded) {
	t.Helper()
	var err error
	if cpuL, err = loader.OpenWith(path, loader.Options{Threads: runtime.NumCPU(), Backend: loader.CPU}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cpuL.Close)
	if gpuL, err = loader.OpenWith(path, loader.Options{Threads: runtime.NumCPU(), Backend: loader.CUDA}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gpuL.Close)
	return cpuL, gpuL
}

// heldOnCPU is l's model on the CPU with its weights as the GPU holds them
// (cuda.HostConverted: K-quants as Q8_0), the reference the GPU's kernels
// are measured against.
func heldOnCPU(t *testing.T, l *loader.Loaded) *model.Model {
	t.Helper()
	w, err := cuda.HostConverted(l.Model.Weights)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(l.Model.Config, w, cpu.Backend{Pool: l.Pool})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// feed runs the prompts through st as the schedule says: each step is a
// list of (prompt, position) pairs; every token wants its logits, which
// are returned per prompt and position.
func feed(t *testing.T, st *model.State, prompts [][]int32, steps [][][2]int, vocab int) [][][]float32 {
	t.Helper()
	out := make([][][]float32, len(prompts))
	for p := range prompts {
		out[p] = make([][]float32, len(prompts[p]))
	}
	for _, step := range steps {
		b := model.Batch{}
		for _, pp := range step {
			b.Tokens = append(b.Tokens, prompts[pp[0]][pp[1]])
			b.Pos = append(b.Pos, pp[1])
			b.Seq = append(b.Seq, pp[0])
			b.Logits = append(b.Logits, true)
		}
		logits, err := st.Forward(&b)
		if err != nil {
			t.Fatal(err)
		}
		for i, pp := range step {
			out[pp[0]][pp[1]] = append([]float32(nil), logits[i*vocab:(i+1)*vocab]...)
		}
	}
	return out
}

// kernelPath is a setting of LEO_CUDA_MMQ_TOKENS to run a schedule under.
type kernelPath struct{ label, mmqTokens string }

// kernelPaths are the settings schedule name runs under for weights of
// type typ: batches of 9 to 64 tokens both on mmq and as before (quantized
// weights on the matvec kernels, F16 on cuBLAS), whichever is the default;
// whole prompts (100 tokens: two groups of 64) both on cuBLAS and on mmq;
// the rest as is.
func kernelPaths(name string, typ quant.Type) []kernelPath {
	before := " (matvec)"
	if typ == quant.F16 {
		before = " (cuBLAS)"
	}
	switch {
	case strings.HasPrefix(name, "20 tokens") || strings.HasPrefix(name, "50 tokens"):
		return []kernelPath{{before, "0"}, {" (mmq)", "64"}}
	case name == "whole prompts":
		return []kernelPath{{" (cuBLAS)", "0"}, {" (mmq)", "512"}}
	}
	return []kernelPath{{"", os.Getenv("LEO_CUDA_MMQ_TOKENS")}}
}

// schedules are the batchings the GPU must agree with the CPU under: the
// matvec kernels (1 to 8 tokens), mmq (quantized weights, 9 to 64 tokens:
// one and four tiles of 16 tokens, with tokens past the batch in the
// last), cuBLAS (more), several sequences in one batch, graphs and direct
// launches.
func schedules(prompts [][]int32) map[string][][][2]int {
	s := map[string][][][2]int{}
	chunked := func(name string, size int) {
		for p, pr := range prompts {
			for i := 0; i < len(pr); i += size {
				var step [][2]int
				for j := i; j < min(i+size, len(pr)); j++ {
					step = append(step, [2]int{p, j})
				}
				s[name] = append(s[name], step)
			}
		}
	}
	chunked("whole prompts", 1<<30)
	chunked("one token a step", 1)
	chunked("7 tokens a step", 7)
	chunked("20 tokens a step", 20)
	chunked("50 tokens a step", 50)
	for i := range prompts[0] { // every sequence's token i in one step
		var step [][2]int
		for p := range prompts {
			step = append(step, [2]int{p, i})
		}
		s["all sequences a step"] = append(s["all sequences a step"], step)
	}
	return s
}

// minTop1 is the share of positions whose top token GPU and CPU must agree
// on, per batching and over all of them.
var minTop1 = [2]float64{0.97, 0.99}

// agreement is how often GPU and CPU agree, over many positions.
type agreement struct {
	same, all int
	worst     float64
}

func (a *agreement) add(got, want [][][]float32) {
	for p := range want {
		for i := range want[p] {
			a.all++
			if argmax(got[p][i]) == argmax(want[p][i]) {
				a.same++
			}
			a.worst = max(a.worst, relErr(got[p][i], want[p][i]))
		}
	}
}

func (a agreement) String() string {
	return fmt.Sprintf("top-1 %d/%d (%.2f%%), rel err max %.2e", a.same, a.all, 100*float64(a.same)/float64(a.all), a.worst)
}

// TestGPUMatchesCPU runs 4 prompts of 100 tokens through three shapes
// (grouped-query and multi-head attention, head sizes 32, 64 and 48) in
// F16, Q8_0, Q4_0 and Q4_K, batched five ways, on the GPU and the CPU: per
// type, the top tokens must agree on at least 99% of all positions, and the
// logits within maxRelErr everywhere. The CPU computes with the weights as
// the GPU holds them (cuda.HostConverted: K-quants, such as Q4_0 files'
// Q6_K classifier, as Q8_0), so that this measures the GPU's kernels;
// TestKQuantsAsQ8_0OnCPU measures what the conversion itself costs.
func TestGPUMatchesCPU(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	byType := map[quant.Type]*agreement{}
	types := []quant.Type{quant.F16, quant.Q8_0, quant.Q4_0, quant.Q4K}
	for _, typ := range types {
		byType[typ] = &agreement{}
	}
	for _, shape := range []string{"test-gqa", "test-mha", "stories15M"} {
		for _, typ := range types {
			t.Run(shape+"/"+typ.String(), func(t *testing.T) {
				cpuL, gpuL := openBoth(t, writeModel(t, shape, typ))
				c := cpuL.Model.Config
				prompts := make([][]int32, 4)
				for p := range prompts {
					prompts[p] = []int32{1}
					for range 99 { // past kQuantMatvecTokens (64): quantized prompts take cuBLAS too
						prompts[p] = append(prompts[p], int32(3+rng.IntN(c.VocabSize-3)))
					}
				}
				cst, err := heldOnCPU(t, cpuL).NewStateKV(4, 128, 128, quant.F16)
				if err != nil {
					t.Fatal(err)
				}
				scheds := schedules(prompts)
				want := feed(t, cst, prompts, scheds["whole prompts"], c.VocabSize)
				names := make([]string, 0, len(scheds))
				for n := range scheds {
					names = append(names, n)
				}
				sort.Strings(names)
				for _, name := range names {
					for _, path := range kernelPaths(name, typ) {
						t.Setenv("LEO_CUDA_MMQ_TOKENS", path.mmqTokens) // read when a state is made
						gst, err := gpuL.Model.NewStateKV(4, 128, 128, quant.F16)
						if err != nil {
							t.Fatal(err)
						}
						got := feed(t, gst, prompts, scheds[name], c.VocabSize)
						if err := gst.Close(); err != nil {
							t.Fatal(err)
						}
						var a agreement
						a.add(got, want)
						byType[typ].add(got, want)
						label := name + path.label
						t.Logf("%-30s %s", label, a)
						if float64(a.same) < minTop1[0]*float64(a.all) || a.worst > maxRelErr[typ] {
							t.Errorf("%s: %s; want top-1 equal on >= %.0f%% here (%.0f%% over all) and rel err <= %g",
								label, a, 100*minTop1[0], 100*minTop1[1], maxRelErr[typ])
						}
					}
				}
			})
		}
	}
	for _, typ := range types {
		a := byType[typ]
		t.Logf("%-5s over all shapes and batchings: %s", typ, a)
		if float64(a.same) < minTop1[1]*float64(a.all) {
			t.Errorf("%s: %s; want top-1 equal on >= %.0f%% of positions", typ, a, 100*minTop1[1])
		}
	}
}

// TestGPUFusedPrepSameBits checks LEO_CUDA_FUSE_PREP=1 (attention and the
// SwiGLU epilogues make O's and down's activations, instead of prep)
// against prep: the same bits, on every kernel path (matvec, mmq split
// along K or not, mmq over two token groups, cuBLAS), for heads whose size
// is a multiple of 32 and one that is not (stories15M: 48, where attention
// leaves O's activations to prep), for a K-quant file (held as Q8_0 on
// the GPU), and on a model wide enough (test-wide) that the gate/up matvec
// takes several waves of thread blocks, so that a block writing down's
// activations early would race others still reading gate/up's. It also
// checks that fusion happened: fewer prep launches.
func TestGPUFusedPrepSameBits(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, shape := range []string{"test-gqa", "stories15M", "test-wide"} {
		for _, typ := range []quant.Type{quant.F16, quant.Q8_0, quant.Q4_0, quant.Q4K} {
			t.Run(shape+"/"+typ.String(), func(t *testing.T) {
				_, gpuL := openBoth(t, writeModel(t, shape, typ))
				c := gpuL.Model.Config
				// One prompt of 80 tokens: one token a step (matvec), 20 (matvec
				// for quantized weights, cuBLAS for F16, or mmq of one tile
				// group), 50 (mmq, four tiles), whole (cuBLAS or mmq).
				prompts := [][]int32{{1}}
				for range 79 {
					prompts[0] = append(prompts[0], int32(3+rng.IntN(c.VocabSize-3)))
				}
				scheds := schedules(prompts)
				mmqSettings := []string{"0", "64", "512"} // 512: whole prompts through mmq too
				for _, name := range []string{"one token a step", "20 tokens a step", "50 tokens a step", "whole prompts"} {
					for _, mmq := range mmqSettings {
						t.Setenv("LEO_CUDA_MMQ_TOKENS", mmq)
						var runs [2][][][]float32
						for i, fuse := range []string{"0", "1"} {
							t.Setenv("LEO_CUDA_FUSE_PREP", fuse)
							st, err := gpuL.Model.NewStateKV(2, 128, 128, quant.F16)
							if err != nil {
								t.Fatal(err)
							}
							runs[i] = feed(t, st, prompts, scheds[name], c.VocabSize)
							if err := st.Close(); err != nil {
								t.Fatal(err)
							}
						}
						diff := 0
						for p := range runs[0] {
							for pos := range runs[0][p] {
								for k, v := range runs[0][p][pos] {
									if math.Float32bits(v) != math.Float32bits(runs[1][p][pos][k]) {
										diff++
									}
								}
							}
						}
						if diff > 0 {
							t.Errorf("%s, LEO_CUDA_MMQ_TOKENS=%s: %d logits differ with LEO_CUDA_FUSE_PREP=1", name, mmq, diff)
						}
					}
				}
				// Fusion happened: count prep's launches in the profile (which
				// runs without graphs and prints when the state is freed),
				// also with LEO_CUDA_FUSE_PREP=2 (O's and down's matvec
				// making the normalized activations: not the same bits, so
				// TestGPUMatchesCPU checks it under the CPU's bounds).
				t.Setenv("LEO_CUDA_MMQ_TOKENS", "0")
				t.Setenv("LEO_CUDA_PROFILE", "1")
				var preps [3]int
				var logits [3][][][]float32
				for i, fuse := range []string{"0", "1", "2"} {
					t.Setenv("LEO_CUDA_FUSE_PREP", fuse)
					st, err := gpuL.Model.NewStateKV(2, 128, 128, quant.F16)
					if err != nil {
						t.Fatal(err)
					}
					logits[i] = feed(t, st, prompts[:1], scheds["one token a step"][:8], c.VocabSize)
					preps[i] = profiledCalls(t, "prep", func() {
						if err := st.Close(); err != nil {
							t.Fatal(err)
						}
					})
				}
				// Per step and layer: prep before QKV, O, gate/up and down;
				// fused, O's goes where the head size is a multiple of 32,
				// down's always.
				perLayer := 2
				if c.Dim/c.Heads%32 != 0 {
					perLayer = 1
				}
				if want := preps[0] - 8*c.Layers*perLayer; preps[1] != want {
					t.Errorf("prep launched %d times fused, %d not: want %d fused", preps[1], preps[0], want)
				}
				// With norm_next too, per step: prep before the first QKV and
				// the logits, and before O where attention cannot make its
				// activations.
				want2 := 8 * 2
				if perLayer == 1 {
					want2 += 8 * c.Layers
				}
				if preps[2] != want2 {
					t.Errorf("prep launched %d times with LEO_CUDA_FUSE_PREP=2: want %d", preps[2], want2)
				}
				// Not the same bits, but the same logits within the bounds
				// the GPU keeps against the CPU.
				for pos := range 8 {
					if e := relErr(logits[2][0][pos], logits[0][0][pos]); e > maxRelErr[typ] {
						t.Errorf("position %d: LEO_CUDA_FUSE_PREP=2 differs from 0 by rel err %.3g, want <= %g", pos, e, maxRelErr[typ])
					}
				}
			})
		}
	}
}

// profiledCalls runs f, which frees a state made with LEO_CUDA_PROFILE set,
// and returns the calls of kernel label in the profile it prints on stderr.
func profiledCalls(t *testing.T, label string, f func()) int {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved, err := syscall.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Dup2(int(w.Fd()), 2); err != nil {
		t.Fatal(err)
	}
	f()
	if err := syscall.Dup2(saved, 2); err != nil {
		t.Fatal(err)
	}
	_ = syscall.Close(saved)
	_ = w.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(label) + `\s.*\s(\d+) calls$`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no %q in the profile:\n%s", label, out)
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestGPUSomeLogits asks for the logits of some tokens only, on a state
// whose batches stay on the matvec kernels (8 tokens: no cuBLAS at all).
func TestGPUSomeLogits(t *testing.T) {
	cpuL, gpuL := openBoth(t, writeModel(t, "test-gqa", quant.Q8_0))
	vocab := cpuL.Model.Config.VocabSize
	b := model.Batch{
		Tokens: []int32{1, 450, 4996, 17354, 1, 1576, 11203, 338},
		Pos:    []int{0, 1, 2, 3, 0, 1, 2, 3},
		Seq:    []int{0, 0, 0, 0, 1, 1, 1, 1},
		Logits: []bool{false, true, false, true, false, false, false, true},
	}
	var out [][]float32
	for _, l := range []*loader.Loaded{cpuL, gpuL} {
		st, err := l.Model.NewStateKV(2, 16, 8, quant.F16)
		if err != nil {
			t.Fatal(err)
		}
		logits, err := st.Forward(&b)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]float32(nil), logits...))
		_ = st.Close() // freeing device memory fails only with a broken device
	}
	if len(out[1]) != 3*vocab {
		t.Fatalf("GPU returned %d logits, want 3 rows of %d", len(out[1]), vocab)
	}
	for r := 0; r < 3; r++ {
		got, want := out[1][r*vocab:(r+1)*vocab], out[0][r*vocab:(r+1)*vocab]
		if argmax(got) != argmax(want) || relErr(got, want) > maxRelErr[quant.Q8_0] {
			t.Errorf("row %d: top %d vs CPU's %d, rel err %.3g", r, argmax(got), argmax(want), relErr(got, want))
		}
	}
}

// TestGPULongContext checks attention over several chunks (kAttnChunk is
// 128 positions), merged afterwards: there the GPU keeps the weights in
// float32 where the CPU rounds them to half, so the bound is looser.
func TestGPULongContext(t *testing.T) {
	for _, typ := range []quant.Type{quant.F16, quant.Q4_0} {
		t.Run(typ.String(), func(t *testing.T) {
			cpuL, gpuL := openBoth(t, writeModel(t, "test-gqa", typ))
			c := cpuL.Model.Config
			rng := rand.New(rand.NewPCG(3, 4))
			prompts := [][]int32{{1}}
			for range 299 {
				prompts[0] = append(prompts[0], int32(3+rng.IntN(c.VocabSize-3)))
			}
			cst, err := heldOnCPU(t, cpuL).NewStateKV(1, 320, 320, quant.F16)
			if err != nil {
				t.Fatal(err)
			}
			scheds := schedules(prompts)
			want := feed(t, cst, prompts, scheds["whole prompts"], c.VocabSize)
			for _, name := range []string{"whole prompts", "one token a step"} {
				gst, err := gpuL.Model.NewStateKV(1, 320, 320, quant.F16)
				if err != nil {
					t.Fatal(err)
				}
				got := feed(t, gst, prompts, scheds[name], c.VocabSize)
				_ = gst.Close() // freeing device memory fails only with a broken device
				same, worst := 0, 0.0
				for i := range prompts[0] {
					if argmax(got[0][i]) == argmax(want[0][i]) {
						same++
					}
					worst = max(worst, relErr(got[0][i], want[0][i]))
				}
				t.Logf("%-18s top-1 %d/%d  rel err max %.2e", name, same, len(prompts[0]), worst)
				if float64(same) < 0.97*float64(len(prompts[0])) || worst > 2e-2 {
					t.Errorf("%s: top-1 equal on %d of %d positions (want >= 97%%), rel err max %.3g (want <= 0.02)", name, same, len(prompts[0]), worst)
				}
			}
		})
	}
}

// TestGPUSanitizerSmall runs a few steps of a small model: check.sh runs it
// under compute-sanitizer's memcheck, which is too slow for the rest.
func TestGPUSanitizerSmall(t *testing.T) {
	for _, c := range []struct {
		shape   string
		typ     quant.Type
		batches []int
	}{
		{"test-gqa", quant.Q4_0, []int{3, 12, 70}}, // matvec kernels, mmq, cuBLAS
		{"test-gqa", quant.Q8_0, []int{12, 40}},    // mmq: one tile of 16 tokens, then three
		{"stories15M", quant.Q4_0, []int{12}},      // mmq with partial row groups and chunks of K
	} {
		// prep, or attention and SwiGLU making activations; and on the
		// first model, O's and down's making the normalized ones too
		// (LEO_CUDA_FUSE_PREP=2), the matvec kernels' column split, and
		// fetches of the next weights into L2 (a whole matrix of these
		// small models).
		settings := [][3]string{{"0", "1", "0"}, {"1", "1", "0"}}
		if c.shape == "test-gqa" && c.typ == quant.Q4_0 {
			settings = append(settings, [3]string{"2", "4", "1"}, [3]string{"0", "2", "1"})
		}
		for _, set := range settings {
			t.Run(fmt.Sprintf("%s/%s/fuse=%s,split=%s,ahead=%s", c.shape, c.typ, set[0], set[1], set[2]), func(t *testing.T) {
				t.Setenv("LEO_CUDA_FUSE_PREP", set[0])
				t.Setenv("LEO_CUDA_MATVEC_SPLIT", set[1])
				t.Setenv("LEO_CUDA_MATVEC_SPLIT_QKV", set[1])
				t.Setenv("LEO_CUDA_L2_AHEAD", set[2])
				sanitizerRun(t, c.shape, c.typ, c.batches)
			})
		}
	}
}

func sanitizerRun(t *testing.T, shape string, typ quant.Type, batches []int) {
	t.Setenv("LEO_CUDA_MMQ_TOKENS", "64") // mmq for 9 to 64 tokens, whatever the default
	_, gpuL := openBoth(t, writeModel(t, shape, typ))
	for _, batch := range batches {
		st, err := gpuL.Model.NewStateKV(2, 200, 80, quant.F16)
		if err != nil {
			t.Fatal(err)
		}
		for pos := 0; pos+batch <= 150; pos += batch { // past one attention chunk
			b := model.Batch{}
			for i := 0; i < batch; i++ {
				b.Tokens = append(b.Tokens, int32(100+pos+i))
				b.Pos = append(b.Pos, pos+i)
				b.Seq = append(b.Seq, 1)
			}
			logits, err := st.Forward(&b)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range logits {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("position %d: logit %v", pos, v)
				}
			}
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// benchModels are the GGUF files BenchmarkGPU measures ($LEO_GPU_MODELS,
// comma-separated), made by leo-runtime gen-model on the GPU machine.
func benchModels(b *testing.B) []string {
	v := os.Getenv("LEO_GPU_MODELS")
	if v == "" {
		b.Fatal("set LEO_GPU_MODELS to the comma-separated GGUF files to measure")
	}
	return strings.Split(v, ",")
}

// weightBytes is what one decode step reads of the file's weights: every
// matrix but the embedding table, of which it reads a row (unless the
// table is also the classifier).
func weightBytes(l *loader.Loaded) int64 {
	var n int64
	tied := true
	for _, ti := range l.File.Tensors {
		if ti.Name == "output.weight" {
			tied = false
		}
	}
	for _, ti := range l.File.Tensors {
		if len(ti.Shape) < 2 || (ti.Name == "token_embd.weight" && !tied) {
			continue
		}
		n += int64(ti.Size)
	}
	return n
}

var bandwidth float64

// decodeDigest is an FNV-1a digest of the tokens the last measureDecode
// generated: equal digests across settings (LEO_CUDA_FUSE_PREP=0 and 1,
// say) mean the same greedy decode, at sizes the tests do not reach.
var decodeDigest uint64

// BenchmarkGPU measures, per model: prompt processing of 512 tokens, decode
// at batch 1 (greedy, logits to the host each step) as a share of the
// bandwidth bound, and continuous batching through the engine at 1 and 32
// concurrent sequences. Run it with -test.benchtime=1x: each figure is a
// fixed amount of work, repeated inside.
func BenchmarkGPU(b *testing.B) {
	for _, path := range benchModels(b) {
		b.Run(filepath.Base(path), func(b *testing.B) {
			start := time.Now()
			l, err := loader.OpenWith(path, loader.Options{Threads: runtime.NumCPU(), Backend: loader.CUDA})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			load := time.Since(start)
			if bandwidth == 0 {
				g, err := cuda.Open(cpu.Backend{}, cuda.Options{})
				if err != nil {
					b.Fatal(err)
				}
				if bandwidth, err = g.Lib.CopyBandwidth(0, 2<<30, 20); err != nil {
					b.Fatal(err)
				}
			}
			wb := weightBytes(l)
			bound := bandwidth * 1e9 / float64(wb)
			var dec, prefill, e1, e32 float64
			switch {
			case os.Getenv("LEO_GPU_SWEEP") != "": // decode under several settings, on one loaded model
				sweepDecode(b, l, filepath.Base(path), bound)
				return
			case os.Getenv("LEO_GPU_ENGINE32") != "": // the engine at 32 sequences alone, to profile or compare it
				e32 = measureEngine(b, l, 32, 128)
			case os.Getenv("LEO_GPU_PREFILL") != "": // prompt processing alone, to compare it
				prefill = measurePrefill(b, l, 512)
			case os.Getenv("LEO_GPU_QUICK") != "": // decode alone, for the biggest models
				dec = measureDecode(b, l, decodeSteps(b))
			default:
				dec = measureDecode(b, l, decodeSteps(b))
				prefill = measurePrefill(b, l, 512)
				e1 = measureEngine(b, l, 1, 256)
				e32 = measureEngine(b, l, 32, 128)
			}
			b.ReportMetric(dec, "decode_tok/s")
			b.ReportMetric(100*dec/bound, "%bound")
			b.ReportMetric(prefill, "prefill512_tok/s")
			b.ReportMetric(e1, "engine1_tok/s")
			b.ReportMetric(e32, "engine32_tok/s")
			fmt.Printf("RESULT %s: load %.1fs, %.2f GB/token, copy %.0f GB/s, bound %.1f tok/s | decode b1 %.1f tok/s (%.1f%% of bound, tokens %016x) | prefill 512 %.0f tok/s | engine b1 %.1f tok/s, b32 %.0f tok/s\n",
				filepath.Base(path), load.Seconds(), float64(wb)/1e9, bandwidth, bound, dec, 100*dec/bound, decodeDigest, prefill, e1, e32)
		})
	}
}

// sweepDecode measures decode at batch 1 under each setting of
// $LEO_GPU_SWEEP: settings separated by ";", each a space-separated list of
// VAR=VALUE (an empty one: the defaults). The library reads its settings
// when a state is made, so one loaded model serves them all. Two rounds,
// the second in reverse order; a SWEEP line per run, with the digest of
// the tokens generated (equal where a setting computes the same bits).
func sweepDecode(b *testing.B, l *loader.Loaded, name string, bound float64) {
	settings := strings.Split(os.Getenv("LEO_GPU_SWEEP"), ";")
	vars := map[string]bool{}
	for _, set := range settings {
		for _, kv := range strings.Fields(set) {
			k, _, ok := strings.Cut(kv, "=")
			if !ok {
				b.Fatalf("LEO_GPU_SWEEP: %q is not VAR=VALUE", kv)
			}
			if !vars[k] {
				b.Setenv(k, os.Getenv(k)) // restored when the benchmark ends
				vars[k] = true
			}
		}
	}
	for round := range 2 {
		for i := range settings {
			set := settings[i]
			if round == 1 {
				set = settings[len(settings)-1-i]
			}
			for k := range vars {
				if err := os.Unsetenv(k); err != nil {
					b.Fatal(err)
				}
			}
			for _, kv := range strings.Fields(set) {
				k, v, _ := strings.Cut(kv, "=")
				if err := os.Setenv(k, v); err != nil {
					b.Fatal(err)
				}
			}
			label := strings.TrimSpace(set)
			if label == "" {
				label = "defaults"
			}
			dec := measureDecode(b, l, decodeSteps(b))
			fmt.Printf("SWEEP %s, round %d: %s: decode b1 %.1f tok/s (%.1f%% of bound, tokens %016x)\n",
				name, round+1, label, dec, 100*dec/bound, decodeDigest)
		}
	}
}

// decodeSteps is how many steps measureDecode times: 256, or
// $LEO_GPU_DECODE_STEPS (a dry run of check.sh on the CPU emulation of
// docs/cuda.md takes a few).
func decodeSteps(b *testing.B) int {
	v := os.Getenv("LEO_GPU_DECODE_STEPS")
	if v == "" {
		return 256
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("LEO_GPU_DECODE_STEPS=%q: want a number of steps", v)
	}
	return n
}

func measurePrefill(b *testing.B, l *loader.Loaded, n int) float64 {
	st, err := l.Model.NewStateKV(1, 1024, n, quant.F16)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = st.Close() }() // freeing device memory fails only with a broken device
	bt := model.Batch{}
	for i := 0; i < n; i++ {
		bt.Tokens = append(bt.Tokens, int32(100+i))
		bt.Pos = append(bt.Pos, i)
		bt.Seq = append(bt.Seq, 0)
	}
	var times []float64
	for i := 0; i < 4; i++ {
		t0 := time.Now()
		if _, err := st.Forward(&bt); err != nil {
			b.Fatal(err)
		}
		if i > 0 { // the first warms up
			times = append(times, time.Since(t0).Seconds())
		}
	}
	sort.Float64s(times)
	return float64(n) / times[len(times)/2]
}

func measureDecode(b *testing.B, l *loader.Loaded, steps int) float64 {
	// (min: the small shapes of a dry run have shorter contexts)
	st, err := l.Model.NewStateKV(1, min(1024, l.Model.Config.ContextLength), 16, quant.F16)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = st.Close() }() // freeing device memory fails only with a broken device
	vocab := l.Model.Config.VocabSize
	prompt := model.Batch{Tokens: []int32{1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889, 13, 1576, 11203, 338}}
	for i := range prompt.Tokens {
		prompt.Pos = append(prompt.Pos, i)
		prompt.Seq = append(prompt.Seq, 0)
	}
	logits, err := st.Forward(&prompt)
	if err != nil {
		b.Fatal(err)
	}
	tok := argmax(logits[:vocab])
	pos := len(prompt.Tokens)
	decodeDigest = 14695981039346656037
	step := func() {
		bt := model.Batch{Tokens: []int32{tok}, Pos: []int{pos}, Seq: []int{0}}
		logits, err := st.Forward(&bt)
		if err != nil {
			b.Fatal(err)
		}
		tok = argmax(logits)
		decodeDigest = (decodeDigest ^ uint64(uint32(tok))) * 1099511628211
		pos++
	}
	for range 8 { // warm up: the graph is captured once
		step()
	}
	t0 := time.Now()
	for range steps {
		step()
	}
	return float64(steps) / time.Since(t0).Seconds()
}

// measureEngine runs n concurrent greedy requests of tokens new tokens each
// through the engine (continuous batching) and returns the aggregate rate.
func measureEngine(b *testing.B, l *loader.Loaded, n, tokens int) float64 {
	e, err := engine.New(l.Model, l.Tokenizer, engine.Config{MaxConcurrent: n, ContextSize: 512, BatchTokens: max(n, 64), KVType: quant.F16})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go e.Run(ctx)
	defer func() { // Run frees the state (and, profiling, prints its figures)
		e.Close()
		<-e.Done()
		cancel()
	}()
	run := func(tokens int) float64 {
		var reqs []engine.Request
		for i := 0; i < n; i++ {
			reqs = append(reqs, engine.Request{
				Prompt: []int32{1, 450, int32(1000 + i), 17354, 1701, 432, 17204, 975},
				Params: sample.Params{MaxNewTokens: tokens, MinNewTokens: tokens, Temperature: 1, TopP: 1, RepetitionPenalty: 1},
			})
		}
		t0 := time.Now()
		streams, err := e.Submit(ctx, reqs...)
		if err != nil {
			b.Fatal(err)
		}
		total := 0
		for _, s := range streams {
			r, err := s.Wait(ctx)
			if err != nil {
				b.Fatal(err)
			}
			total += len(r.Tokens)
		}
		return float64(total) / time.Since(t0).Seconds()
	}
	run(8) // warm up: graphs are captured once per batch shape
	return run(tokens)
}
