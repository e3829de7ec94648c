//go:build cgo && linux

package cuda_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/leo-operator/leo/runtime/cpu"
	"github.com/leo-operator/leo/runtime/cuda"
	"github.com/leo-operator/leo/runtime/loader"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
)

// TestKQuantsAsQ8_0OnCPU measures, on the CPU, what the GPU's Q8_0 copy
// of K-quant weights costs: the same model with its Q4_K/Q6_K matrices as
// the GPU gets them (HostConverted), against the file's, over every
// position of four prompts. The GPU test (TestGPUMatchesCPU, Q4_K) sees
// this difference on top of the GPU's own from the CPU.
func TestKQuantsAsQ8_0OnCPU(t *testing.T) {
	l, err := loader.OpenWith(writeModel(t, "test-gqa", quant.Q4K), loader.Options{Threads: 2, Backend: loader.CPU})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	w, err := cuda.HostConverted(l.Model.Weights)
	if err != nil {
		t.Fatal(err)
	}
	converted := 0
	for _, m := range []model.Weight{w.Layers[0].Q, w.Layers[0].Down, w.Output} {
		if m.Type == quant.Q8_0 {
			converted++
		}
	}
	if converted != 3 {
		t.Fatalf("%d of Q, down and output are Q8_0 on the GPU; want all", converted)
	}
	c := l.Model.Config
	q8, err := model.New(c, w, cpu.Backend{Pool: l.Pool})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	same, all, worst := 0, 0, 0.0
	for range 4 {
		b := model.Batch{}
		for i := range 64 {
			b.Tokens = append(b.Tokens, int32(3+rng.IntN(c.VocabSize-3)))
			b.Pos = append(b.Pos, i)
			b.Seq = append(b.Seq, 0)
			b.Logits = append(b.Logits, true)
		}
		var out [2][]float32
		for i, m := range []*model.Model{l.Model, q8} {
			st, err := m.NewState(1, 64, 64)
			if err != nil {
				t.Fatal(err)
			}
			logits, err := st.Forward(&b)
			if err != nil {
				t.Fatal(err)
			}
			out[i] = append([]float32(nil), logits...)
		}
		v := c.VocabSize
		for p := range 64 {
			want, got := out[0][p*v:(p+1)*v], out[1][p*v:(p+1)*v]
			var d, n float64
			for k := range want {
				d += float64(got[k]-want[k]) * float64(got[k]-want[k])
				n += float64(want[k]) * float64(want[k])
			}
			worst = max(worst, math.Sqrt(d/n))
			if argmax(got) == argmax(want) {
				same++
			}
			all++
		}
	}
	t.Logf("K-quants as Q8_0, against the file's: top-1 equal on %d/%d positions, rel err max %.2e", same, all, worst)
	if float64(same) < 0.97*float64(all) || worst > 2e-2 {
		t.Errorf("top-1 equal on %d/%d positions (want >= 97%%), rel err max %.3g (want <= 2e-2)", same, all, worst)
	}
}
