package model

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/leo-operator/leo/runtime/quant"
)

// naiveBackend multiplies F32 matrices the obvious way. The forward pass is
// tested with it against an independent float64 implementation; the CPU
// backend's kernels have their own tests against the same semantics.
type naiveBackend struct{}

func (naiveBackend) Supports(t quant.Type) bool { return t == quant.F32 }
func (naiveBackend) Threads() int               { return 1 }
func (naiveBackend) DotRows(out, q, rows []float32, stride int) {
	for t := range out {
		out[t] = dot(q, rows[t*stride:t*stride+len(q)])
	}
}
func (naiveBackend) AxpyRows(dst, w, rows []float32, stride int) {
	for t, a := range w {
		axpy(dst, a, rows[t*stride:t*stride+len(dst)])
	}
}
func (naiveBackend) Parallel(n int, body Ranger) {
	// Uneven pieces, to catch ranges that depend on each other.
	for start := 0; start < n; start += 3 {
		body.Range(start, min(start+3, n))
	}
}
func (naiveBackend) MatMul(dst []float32, w *Weight, x []float32, n int) error {
	for t := 0; t < n; t++ {
		for r := 0; r < w.Rows; r++ {
			var s float32
			for c := 0; c < w.Cols; c++ {
				s += f32At(w.Data, r*w.Cols+c) * x[t*w.Cols+c]
			}
			dst[t*w.Rows+r] = s
		}
	}
	return nil
}

func f32At(b []byte, i int) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])) }

// randomWeights makes F32 weights of shape c with values in ±scale/√cols,
// norm gains around 1, and a separate classifier.
func randomWeights(c Config, seed uint64) Weights {
	rng := rand.New(rand.NewPCG(seed, 1))
	w := Weights{Layers: make([]Layer, c.Layers)}
	for _, s := range w.specs(c) {
		if s.vector != nil {
			v := make([]float32, s.cols)
			for i := range v {
				v[i] = 0.8 + 0.4*rng.Float32()
			}
			*s.vector = v
			continue
		}
		data := make([]byte, 4*s.rows*s.cols)
		amp := 2 / math.Sqrt(float64(s.cols))
		if s.name == "token_embd.weight" {
			amp = 1
		}
		for i := 0; i < s.rows*s.cols; i++ {
			binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(float32(amp*(2*rng.Float64()-1))))
		}
		*s.matrix = Weight{Name: s.name, Type: quant.F32, Rows: s.rows, Cols: s.cols, Data: data}
	}
	return w
}

var tinyShape = Config{Dim: 48, HiddenDim: 80, Layers: 2, Heads: 6, KVHeads: 2, VocabSize: 37,
	ContextLength: 32, RopeBase: 10000, RopeDim: 8, NormEps: 1e-5}

// refForward is a float64 Llama forward pass over a whole sequence written
// from the paper's equations, independent of the package's code paths: it
// recomputes every key and value, uses a two-pass softmax and rotates with
// math.Pow frequencies. It returns the logits of every position.
func refForward(c Config, w Weights, tokens []int32) [][]float64 {
	mat := func(m Weight) [][]float64 {
		out := make([][]float64, m.Rows)
		for r := range out {
			out[r] = make([]float64, m.Cols)
			for k := range out[r] {
				out[r][k] = float64(f32At(m.Data, r*m.Cols+k))
			}
		}
		return out
	}
	mul := func(m [][]float64, x []float64) []float64 {
		y := make([]float64, len(m))
		for r := range m {
			for k, v := range m[r] {
				y[r] += v * x[k]
			}
		}
		return y
	}
	norm := func(x []float64, g []float32) []float64 {
		var ss float64
		for _, v := range x {
			ss += v * v
		}
		s := 1 / math.Sqrt(ss/float64(len(x))+float64(c.NormEps))
		y := make([]float64, len(x))
		for i := range x {
			y[i] = x[i] * s * float64(g[i])
		}
		return y
	}
	rope := func(v []float64, pos int) {
		hd := c.HeadDim()
		for h := 0; h < len(v); h += hd {
			for i := 0; i < c.RopeDim/2; i++ {
				theta := float64(pos) * math.Pow(float64(c.RopeBase), -2*float64(i)/float64(c.RopeDim))
				a, b := v[h+2*i], v[h+2*i+1]
				v[h+2*i] = a*math.Cos(theta) - b*math.Sin(theta)
				v[h+2*i+1] = a*math.Sin(theta) + b*math.Cos(theta)
			}
		}
	}
	emb := mat(w.TokenEmbedding)
	out := mat(w.Output)
	if w.Output.Data == nil {
		out = emb
	}
	hd, group := c.HeadDim(), c.Heads/c.KVHeads
	xs := make([][]float64, len(tokens))
	for i, t := range tokens {
		xs[i] = append([]float64(nil), emb[t]...)
	}
	for _, l := range w.Layers {
		wq, wk, wv, wo := mat(l.Q), mat(l.K), mat(l.V), mat(l.O)
		wg, wu, wd := mat(l.Gate), mat(l.Up), mat(l.Down)
		qs, ks, vs := make([][]float64, len(xs)), make([][]float64, len(xs)), make([][]float64, len(xs))
		for i, x := range xs {
			h := norm(x, l.AttnNorm)
			qs[i], ks[i], vs[i] = mul(wq, h), mul(wk, h), mul(wv, h)
			rope(qs[i], i)
			rope(ks[i], i)
		}
		for i := range xs {
			att := make([]float64, c.Dim)
			for h := 0; h < c.Heads; h++ {
				kvh := h / group
				scores := make([]float64, i+1)
				maxS := math.Inf(-1)
				for t := 0; t <= i; t++ {
					for d := 0; d < hd; d++ {
						scores[t] += qs[i][h*hd+d] * ks[t][kvh*hd+d]
					}
					scores[t] /= math.Sqrt(float64(hd))
					maxS = math.Max(maxS, scores[t])
				}
				var sum float64
				for t := range scores {
					scores[t] = math.Exp(scores[t] - maxS)
					sum += scores[t]
				}
				for t := range scores {
					for d := 0; d < hd; d++ {
						att[h*hd+d] += scores[t] / sum * vs[t][kvh*hd+d]
					}
				}
			}
			o := mul(wo, att)
			for d := range xs[i] {
				xs[i][d] += o[d]
			}
			h := norm(xs[i], l.FFNNorm)
			g, u := mul(wg, h), mul(wu, h)
			for j := range g {
				g[j] = g[j] / (1 + math.Exp(-g[j])) * u[j]
			}
			dn := mul(wd, g)
			for d := range xs[i] {
				xs[i][d] += dn[d]
			}
		}
	}
	logits := make([][]float64, len(xs))
	for i, x := range xs {
		logits[i] = mul(out, norm(x, w.OutputNorm))
	}
	return logits
}

func maxRelErr(got []float32, want []float64) float64 {
	var maxAbs, maxDiff float64
	for i := range want {
		maxAbs = math.Max(maxAbs, math.Abs(want[i]))
		maxDiff = math.Max(maxDiff, math.Abs(float64(got[i])-want[i]))
	}
	return maxDiff / maxAbs
}

// TestForwardMatchesFloat64Reference runs a prompt three ways — all at once
// (matrix-matrix), one token at a time (KV cache), and in two sequences
// interleaved in one batch — and checks every position's logits against
// the float64 reference.
func TestForwardMatchesFloat64Reference(t *testing.T) {
	for _, tied := range []bool{false, true} {
		c := tinyShape
		w := randomWeights(c, 7)
		if tied {
			w.Output = Weight{}
		}
		m, err := New(c, w, naiveBackend{})
		if err != nil {
			t.Fatal(err)
		}
		tokens := []int32{1, 5, 9, 36, 0, 17, 17, 3, 22, 8}
		want := refForward(c, w, tokens)

		// Whole prompt in one batch, logits at every position.
		s, err := m.NewState(2, c.ContextLength, len(tokens)*2)
		if err != nil {
			t.Fatal(err)
		}
		b := &Batch{Tokens: tokens, Pos: seq(len(tokens)), Seq: make([]int, len(tokens)), Logits: all(len(tokens))}
		logits, err := s.Forward(b)
		if err != nil {
			t.Fatal(err)
		}
		for i := range tokens {
			if e := maxRelErr(logits[i*c.VocabSize:(i+1)*c.VocabSize], want[i]); e > 1e-5 {
				t.Errorf("tied=%v batched: position %d relative error %.2g", tied, i, e)
			}
		}

		// One token at a time, in slot 1, through the KV cache.
		for i, tok := range tokens {
			logits, err := s.Forward(&Batch{Tokens: []int32{tok}, Pos: []int{i}, Seq: []int{1}})
			if err != nil {
				t.Fatal(err)
			}
			if e := maxRelErr(logits, want[i]); e > 1e-5 {
				t.Errorf("tied=%v incremental: position %d relative error %.2g", tied, i, e)
			}
		}

		// Two sequences in one batch: the first 4 tokens of the prompt in
		// slot 0 (fresh) next to tokens 4..7 continuing slot 1's cache.
		s2, _ := m.NewState(2, c.ContextLength, 8)
		if _, err := s2.Forward(&Batch{Tokens: tokens[:4], Pos: seq(4), Seq: []int{1, 1, 1, 1}}); err != nil {
			t.Fatal(err)
		}
		mixed := &Batch{
			Tokens: []int32{tokens[0], tokens[4], tokens[1], tokens[5], tokens[2], tokens[3]},
			Pos:    []int{0, 4, 1, 5, 2, 3},
			Seq:    []int{0, 1, 0, 1, 0, 0},
			Logits: all(6),
		}
		logits, err = s2.Forward(mixed)
		if err != nil {
			t.Fatal(err)
		}
		for j, pos := range mixed.Pos {
			if e := maxRelErr(logits[j*c.VocabSize:(j+1)*c.VocabSize], want[pos]); e > 1e-5 {
				t.Errorf("tied=%v mixed batch: entry %d (slot %d pos %d) relative error %.2g", tied, j, mixed.Seq[j], pos, e)
			}
		}
	}
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func all(n int) []bool {
	b := make([]bool, n)
	for i := range b {
		b[i] = true
	}
	return b
}

func TestForwardRejectsBadBatches(t *testing.T) {
	c := tinyShape
	m, err := New(c, randomWeights(c, 1), naiveBackend{})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := m.NewState(1, 8, 4)
	for _, tc := range []struct {
		name string
		b    Batch
		want string
	}{
		{"empty", Batch{}, "no tokens"},
		{"too big", Batch{Tokens: make([]int32, 5), Pos: seq(5), Seq: make([]int, 5)}, "at most 4"},
		{"token out of vocab", Batch{Tokens: []int32{37}, Pos: []int{0}, Seq: []int{0}}, "vocabulary of 37"},
		{"negative token", Batch{Tokens: []int32{-1}, Pos: []int{0}, Seq: []int{0}}, "not in the vocabulary"},
		{"past context", Batch{Tokens: []int32{1}, Pos: []int{8}, Seq: []int{0}}, "context is full"},
		{"bad slot", Batch{Tokens: []int32{1}, Pos: []int{0}, Seq: []int{1}}, "not one of the 1 slots"},
		{"mismatched lengths", Batch{Tokens: []int32{1, 2}, Pos: []int{0}, Seq: []int{0, 0}}, "2 tokens but 1 positions"},
	} {
		_, err := s.Forward(&tc.b)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := m.NewState(1, c.ContextLength+1, 1); err == nil {
		t.Error("a state longer than the context length was accepted")
	}
}

// preparingBackend records which weights the model asks it to prepare.
type preparingBackend struct {
	naiveBackend
	prepared map[string]int
}

func (b *preparingBackend) Prepare(w *Weight) error {
	b.prepared[w.Name]++
	return nil
}

// TestPrepare checks that every matrix the forward pass multiplies is
// prepared once, and the embedding table (only read row by row) is not —
// unless it is also the classifier, which is then prepared as output.
func TestPrepare(t *testing.T) {
	for _, tied := range []bool{false, true} {
		w := randomWeights(tinyShape, 3)
		if tied {
			w.Output = Weight{}
		}
		b := &preparingBackend{prepared: map[string]int{}}
		if _, err := New(tinyShape, w, b); err != nil {
			t.Fatal(err)
		}
		want := 7*tinyShape.Layers + 1 // q k v o gate up down per layer, the classifier
		if len(b.prepared) != want {
			t.Errorf("tied=%v: %d weights prepared, want %d: %v", tied, len(b.prepared), want, b.prepared)
		}
		for name, n := range b.prepared {
			if n != 1 {
				t.Errorf("tied=%v: %s prepared %d times", tied, name, n)
			}
		}
		if tied && b.prepared["token_embd.weight"] != 1 {
			t.Errorf("tied classifier (the embedding) was not prepared: %v", b.prepared)
		}
		if !tied && b.prepared["token_embd.weight"] != 0 {
			t.Errorf("the embedding table was prepared although only its rows are read")
		}
	}
}

// dot and axpy are the test backend's vector kernels.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// axpy adds a·x to dst.
func axpy(dst []float32, a float32, x []float32) {
	x = x[:len(dst)]
	for i := range dst {
		dst[i] += a * x[i]
	}
}
