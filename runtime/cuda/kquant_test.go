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

// TestKQuantsAsQ8_0OnCPU measures, on the CPU, what the GPU's Q8_0 copy of
// K-quant weights costs: each model with its matrices as the GPU holds them
// (HostConverted: a Q4_K file's Q4_K and Q6_K matrices, a Q4_0 file's Q6_K
// classifier), against the file's own, over every position of four prompts
// of 100 tokens in the three shapes TestGPUMatchesCPU uses. (That test
// compares the GPU with the converted weights on the CPU, so that it
// measures the kernels alone.)
func TestKQuantsAsQ8_0OnCPU(t *testing.T) {
	for _, typ := range []quant.Type{quant.Q4K, quant.Q4_0} {
		same, all, worst := 0, 0, 0.0
		for _, shape := range []string{"test-gqa", "test-mha", "stories15M"} {
			l, err := loader.OpenWith(writeModel(t, shape, typ), loader.Options{Threads: 2, Backend: loader.CPU})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			c := l.Model.Config
			w, err := cuda.HostConverted(l.Model.Weights)
			if err != nil {
				t.Fatal(err)
			}
			if w.Output.Type != quant.Q8_0 || (typ == quant.Q4K && w.Layers[0].Q.Type != quant.Q8_0) {
				t.Fatalf("%s %s: the classifier is %s and Q %s on the GPU; want Q8_0 for K-quants", shape, typ, w.Output.Type, w.Layers[0].Q.Type)
			}
			held, err := model.New(c, w, cpu.Backend{Pool: l.Pool})
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			for range 4 {
				b := model.Batch{}
				for i := range 100 {
					tok := int32(1)
					if i > 0 {
						tok = int32(3 + rng.IntN(c.VocabSize-3))
					}
					b.Tokens = append(b.Tokens, tok)
					b.Pos = append(b.Pos, i)
					b.Seq = append(b.Seq, 0)
					b.Logits = append(b.Logits, true)
				}
				var out [2][]float32
				for i, m := range []*model.Model{l.Model, held} {
					st, err := m.NewState(1, 100, 100)
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
				for p := range 100 {
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
		}
		t.Logf("%s file, K-quants as Q8_0, against the file's: top-1 equal on %d/%d positions, rel err max %.2e", typ, same, all, worst)
		if float64(same) < 0.95*float64(all) || worst > 2.5e-2 {
			t.Errorf("%s: top-1 equal on %d/%d positions (want >= 95%%), rel err max %.3g (want <= 2.5e-2)", typ, same, all, worst)
		}
	}
}
