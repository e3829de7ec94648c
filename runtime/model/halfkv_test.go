package model_test

import (
	"math"
	"testing"

	"github.com/leo-operator/leo/internal/testmodel"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
)

// An F16 KV cache gives the logits of an F32 one up to half-precision
// rounding of keys, values, queries and attention weights: correlated
// ≥ 0.9999 at every position of a prompt and of the tokens after it.
func TestHalfPrecisionKVCache(t *testing.T) {
	l := testmodel.Load(t, testmodel.Tiny, quant.Q8_0)
	full, err := l.Model.NewStateKV(1, 64, 16, quant.F32)
	if err != nil {
		t.Fatal(err)
	}
	half, err := l.Model.NewStateKV(1, 64, 16, quant.F16)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := half.Cache.Bytes(), full.Cache.Bytes()/2; got != want {
		t.Errorf("F16 cache holds %d bytes, want half of F32's: %d", got, want)
	}
	prompt := l.Tokenizer.Encode("Once upon a time, there was a little robot", true)
	batch := func(toks []int32, pos int) *model.Batch {
		b := &model.Batch{Tokens: toks, Pos: make([]int, len(toks)), Seq: make([]int, len(toks)), Logits: make([]bool, len(toks))}
		for i := range toks {
			b.Pos[i], b.Logits[i] = pos+i, true
		}
		return b
	}
	vocab := l.Model.Config.VocabSize
	check := func(what string, a, b []float32) {
		t.Helper()
		for row := 0; row < len(a)/vocab; row++ {
			if c := correlation(a[row*vocab:(row+1)*vocab], b[row*vocab:(row+1)*vocab]); c < 0.9999 {
				t.Errorf("%s, row %d: correlation of F16- and F32-cache logits %.6f < 0.9999", what, row, c)
			}
		}
	}
	a, err := full.Forward(batch(prompt, 0))
	if err != nil {
		t.Fatal(err)
	}
	a = append([]float32(nil), a...)
	b, err := half.Forward(batch(prompt, 0))
	if err != nil {
		t.Fatal(err)
	}
	check("prompt", a, b)
	next := argmax(a[len(a)-vocab:])
	for step := range 20 {
		pos := len(prompt) + step
		a, err := full.Forward(batch([]int32{next}, pos))
		if err != nil {
			t.Fatal(err)
		}
		a = append([]float32(nil), a...)
		b, err := half.Forward(batch([]int32{next}, pos))
		if err != nil {
			t.Fatal(err)
		}
		check("decode", a, b)
		next = argmax(a)
	}
}

func argmax(v []float32) int32 {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return int32(best)
}

func correlation(a, b []float32) float64 {
	var ma, mb float64
	for i := range a {
		ma += float64(a[i])
		mb += float64(b[i])
	}
	ma /= float64(len(a))
	mb /= float64(len(b))
	var sab, saa, sbb float64
	for i := range a {
		da, db := float64(a[i])-ma, float64(b[i])-mb
		sab += da * db
		saa += da * da
		sbb += db * db
	}
	return sab / math.Sqrt(saa*sbb)
}
