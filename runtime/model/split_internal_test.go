package model

import (
	"testing"
)

// splittingBackend is naiveBackend on two threads that can run a batch in
// parts.
type splittingBackend struct{ naiveBackend }

func (splittingBackend) Threads() int     { return 2 }
func (splittingBackend) Parts() []Backend { return []Backend{naiveBackend{}, naiveBackend{}} }

// A state runs batches in parts only when the weights a step reads fit
// splitMaxWeightBytes: above, each thread reading all of them would double
// the memory traffic of a step bound by it.
func TestPartsOnlyForSmallWeights(t *testing.T) {
	small := Config{Dim: 64, HiddenDim: 128, Layers: 2, Heads: 4, KVHeads: 2, VocabSize: 256, ContextLength: 32, RopeBase: 10000, RopeDim: 16, NormEps: 1e-5}
	big := small
	big.Dim, big.HiddenDim, big.Heads, big.KVHeads, big.RopeDim = 1024, 2048, 8, 8, 128 // 10.5M F32 parameters a layer: 40 MiB
	for _, c := range []struct {
		cfg   Config
		parts bool
	}{{small, true}, {big, false}} {
		w := randomWeights(c.cfg, 1)
		if got := w.matrixBytes(c.cfg) <= splitMaxWeightBytes; got != c.parts {
			t.Fatalf("dim %d: %d bytes of matrices; under the bound %v, want %v", c.cfg.Dim, w.matrixBytes(c.cfg), got, c.parts)
		}
		m, err := New(c.cfg, w, splittingBackend{})
		if err != nil {
			t.Fatal(err)
		}
		s, err := m.NewState(2, 16, 32)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.parts != nil; got != c.parts {
			t.Errorf("dim %d (%d MiB of matrices): parts %v, want %v", c.cfg.Dim, w.matrixBytes(c.cfg)>>20, got, c.parts)
		}
	}
}
