package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
)

var (
	inf  = float32(math.Inf(1))
	ninf = float32(math.Inf(-1))
	nan  = float32(math.NaN())
)

func ln(x float64) float32 { return float32(math.Log(x)) }

func seed(v uint64) *uint64 { return &v }

// params returns DefaultParams changed by f.
func params(f func(*Params)) Params {
	p := DefaultParams()
	f(&p)
	return p
}

func mustNew(t testing.TB, p Params, vocab int, eos []int32) *Sampler {
	t.Helper()
	s, err := New(p, vocab, eos)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// same compares scores bit for bit (NaN equal to NaN).
func same(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return x == y || x != x && y != y })
}

// warped runs Next on a copy of logits and returns the token and the
// scores Next left (the processed and warped ones).
func warped(t *testing.T, p Params, logits []float32, seq []int32, generated int, eos []int32) (int32, []float32) {
	t.Helper()
	s := mustNew(t, p, len(logits), eos)
	l := slices.Clone(logits)
	tok := s.Next(l, seq, generated)
	return tok, l
}

func TestRepetitionPenalty(t *testing.T) {
	// Token 0 occurs twice but is penalized once (HF gathers, then
	// scatters); negative scores are multiplied, positive divided, 0 and
	// -inf stay; ids outside the vocabulary are skipped.
	logits := []float32{2, -2, 0, 1, ninf, 3}
	seq := []int32{0, 1, 0, 2, 4, 99, -1}
	tok, got := warped(t, params(func(p *Params) { p.RepetitionPenalty = 2 }), logits, seq, 0, nil)
	want := []float32{1, -4, 0, 1, ninf, 3}
	if !same(got, want) {
		t.Errorf("scores = %v, want %v", got, want)
	}
	if tok != 5 {
		t.Errorf("token = %d, want 5", tok)
	}
	// A penalty < 1 favours repetition: divided by 0.5 is doubled.
	_, got = warped(t, params(func(p *Params) { p.RepetitionPenalty = 0.5 }), logits, seq, 0, nil)
	want = []float32{4, -1, 0, 1, ninf, 3}
	if !same(got, want) {
		t.Errorf("penalty 0.5: scores = %v, want %v", got, want)
	}
	// The same Sampler penalizes each call afresh (the seen marks reset).
	s := mustNew(t, params(func(p *Params) { p.RepetitionPenalty = 2 }), 3, nil)
	for i := range 3 {
		l := []float32{4, 4, 4}
		s.Next(l, []int32{int32(i)}, 0)
		w := []float32{4, 4, 4}
		w[i] = 2
		if !same(l, w) {
			t.Errorf("call %d: scores = %v, want %v", i, l, w)
		}
	}
}

func TestMinNewTokens(t *testing.T) {
	eos := []int32{2, 3}
	logits := []float32{1, 0, 5, 4}
	p := params(func(p *Params) { p.MinNewTokens = 2 })
	for _, c := range []struct {
		generated int
		want      []float32
		tok       int32
	}{
		{0, []float32{1, 0, ninf, ninf}, 0},
		{1, []float32{1, 0, ninf, ninf}, 0},
		{2, []float32{1, 0, 5, 4}, 2},
		{3, []float32{1, 0, 5, 4}, 2},
	} {
		tok, got := warped(t, p, logits, nil, c.generated, eos)
		if !same(got, c.want) || tok != c.tok {
			t.Errorf("generated %d: token %d scores %v, want %d %v", c.generated, tok, got, c.tok, c.want)
		}
	}
}

func TestTemperature(t *testing.T) {
	p := params(func(p *Params) { p.DoSample = true; p.Temperature = 0.5; p.Seed = seed(1) })
	_, got := warped(t, p, []float32{1, 2, -3, 0, ninf}, nil, 0, nil)
	if want := []float32{2, 4, -6, 0, ninf}; !same(got, want) {
		t.Errorf("T=0.5: scores = %v, want %v", got, want)
	}
	// float32 division, as torch divides a float32 tensor by a scalar.
	p.Temperature = 0.7
	_, got = warped(t, p, []float32{1, 2}, nil, 0, nil)
	if want := []float32{float32(1) / float32(0.7), float32(2) / float32(0.7)}; !same(got, want) {
		t.Errorf("T=0.7: scores = %v, want %v", got, want)
	}
	// Greedy decoding applies no warper.
	_, got = warped(t, params(func(p *Params) { p.Temperature = 0.5 }), []float32{1, 2}, nil, 0, nil)
	if want := []float32{1, 2}; !same(got, want) {
		t.Errorf("greedy: scores = %v, want %v", got, want)
	}
}

func TestTopK(t *testing.T) {
	cases := []struct {
		k            int
		logits, want []float32
	}{
		// Ties at the threshold stay: k=2 keeps both 3s, k=1 too.
		{2, []float32{1, 3, 3, 2, ninf, 0}, []float32{ninf, 3, 3, ninf, ninf, ninf}},
		{1, []float32{1, 3, 3, 2, ninf, 0}, []float32{ninf, 3, 3, ninf, ninf, ninf}},
		{3, []float32{1, 3, 3, 2, ninf, 0}, []float32{ninf, 3, 3, 2, ninf, ninf}},
		{4, []float32{1, 3, 3, 2, ninf, 0}, []float32{1, 3, 3, 2, ninf, ninf}},
		// Negative scores.
		{2, []float32{-1, -2, -3}, []float32{-1, -2, ninf}},
		// All equal: all tie at the threshold.
		{1, []float32{5, 5, 5, 5}, []float32{5, 5, 5, 5}},
		// The k-th largest is -inf: nothing more is removed.
		{2, []float32{ninf, ninf, 1}, []float32{ninf, ninf, 1}},
		// NaN counts as -inf.
		{2, []float32{nan, 1, 2, nan}, []float32{ninf, 1, 2, ninf}},
		// k ≥ vocabulary: off.
		{3, []float32{2, 1, 0}, []float32{2, 1, 0}},
		{100, []float32{2, 1, 0}, []float32{2, 1, 0}},
		// The largest last, for the heap.
		{2, []float32{0, 1, 2, 3, 4, 5, 6, 7}, []float32{ninf, ninf, ninf, ninf, ninf, ninf, 6, 7}},
	}
	for _, c := range cases {
		p := params(func(p *Params) { p.DoSample = true; p.TopK = c.k; p.Seed = seed(1) })
		tok, got := warped(t, p, c.logits, nil, 0, nil)
		if !same(got, c.want) {
			t.Errorf("top_k %d of %v: scores %v, want %v", c.k, c.logits, got, c.want)
		}
		if got[tok] == ninf {
			t.Errorf("top_k %d of %v: sampled the removed token %d", c.k, c.logits, tok)
		}
	}
}

func TestTopP(t *testing.T) {
	// Worked by hand as HF does: sort ascending, cumulative softmax,
	// remove where ≤ 1-top_p, keep the last.
	probs := []float32{ln(0.1), ln(0.2), ln(0.3), ln(0.4)}
	neg := []float32{-1, -2, -3} // softmax 0.665, 0.245, 0.090
	cases := []struct {
		p            float64
		logits, want []float32
	}{
		// cumulative .1 .3 .6 1 ≤ .5: ids 0, 1 removed.
		{0.5, probs, []float32{ninf, ninf, ln(0.3), ln(0.4)}},
		// ≤ .4: ids 0, 1.
		{0.6, probs, []float32{ninf, ninf, ln(0.3), ln(0.4)}},
		// ≤ .25: id 0.
		{0.75, probs, []float32{ninf, ln(0.2), ln(0.3), ln(0.4)}},
		// ≤ .95: all but the last, which is always kept.
		{0.05, probs, []float32{ninf, ninf, ninf, ln(0.4)}},
		// ≤ 0.001: nothing.
		{0.999, probs, probs},
		// Negative scores: cumulative .090 .335 1 ≤ .3: id 2.
		{0.7, neg, []float32{-1, -2, ninf}},
		// cumulative ≤ .6: ids 2, 1.
		{0.4, neg, []float32{-1, ninf, ninf}},
		// All equal: the stable ascending sort puts the lower id first,
		// so it goes first. cumulative .25 .5 .75 1 ≤ .5: ids 0, 1.
		{0.5, []float32{0, 0, 0, 0}, []float32{ninf, ninf, 0, 0}},
		// cumulative ≤ .8: ids 0, 1, 2.
		{0.2, []float32{0, 0, 0, 0}, []float32{ninf, ninf, ninf, 0}},
		// cumulative ≤ .7: ids 0, 1 (top-p .3 is over .25: two stay).
		{0.3, []float32{0, 0, 0, 0}, []float32{ninf, ninf, 0, 0}},
		{1e-9, []float32{7, 7, 7}, []float32{ninf, ninf, 7}},
		// -inf has probability 0 and cumulative 0: removed (already).
		// cumulative 0 .5 1 ≤ .5: ids 0, 1.
		{0.5, []float32{ninf, 0, 0}, []float32{ninf, ninf, 0}},
		// Ties not at the boundary both stay: .1 .1 .4 .4: cumulative
		// .1 .2 .6 1 ≤ .3: ids 0, 1.
		{0.7, []float32{ln(0.1), ln(0.1), ln(0.4), ln(0.4)}, []float32{ninf, ninf, ln(0.4), ln(0.4)}},
		// +inf takes all the probability: the rest is removed.
		{0.9, []float32{1, inf, 2}, []float32{ninf, inf, ninf}},
	}
	for _, c := range cases {
		p := params(func(p *Params) { p.DoSample = true; p.TopP = c.p; p.Seed = seed(1) })
		tok, got := warped(t, p, c.logits, nil, 0, nil)
		if !same(got, c.want) {
			t.Errorf("top_p %v of %v: scores %v, want %v", c.p, c.logits, got, c.want)
		}
		if got[tok] == ninf {
			t.Errorf("top_p %v of %v: sampled the removed token %d", c.p, c.logits, tok)
		}
	}
}

func TestGreedy(t *testing.T) {
	cases := []struct {
		logits []float32
		want   int32
	}{
		{[]float32{1, 5, 5, 2}, 1},       // the first on ties, as torch.argmax
		{[]float32{-3, -1, -2}, 1},       // negative
		{[]float32{nan, 1, nan}, 1},      // NaN never wins
		{[]float32{ninf, ninf, ninf}, 0}, // nothing to choose: 0
		{[]float32{nan, nan}, 0},
		{[]float32{1, inf, inf}, 1},
		{[]float32{0}, 0},
		{[]float32{2, 2, 2, 2}, 0},
	}
	for _, c := range cases {
		tok, got := warped(t, DefaultParams(), c.logits, nil, 0, nil)
		if tok != c.want {
			t.Errorf("argmax %v = %d, want %d", c.logits, tok, c.want)
		}
		if !same(got, c.logits) {
			t.Errorf("greedy with no processor changed %v to %v", c.logits, got)
		}
	}
	// Greedy over the processed scores: the penalty moves the argmax.
	tok, _ := warped(t, params(func(p *Params) { p.RepetitionPenalty = 2 }), []float32{3, 2}, []int32{0}, 0, nil)
	if tok != 1 {
		t.Errorf("greedy after penalty = %d, want 1", tok)
	}
	// Every score -inf when sampling too: no distribution, the argmax.
	tok, _ = warped(t, params(func(p *Params) { p.DoSample = true; p.Seed = seed(1) }), []float32{ninf, nan, ninf}, nil, 0, nil)
	if tok != 0 {
		t.Errorf("sampling all -inf = %d, want 0", tok)
	}
}

// TestOrder checks that the processors and warpers run in generate()'s
// order, with cases where another order gives another result.
func TestOrder(t *testing.T) {
	sampling := func(f func(*Params)) Params {
		return params(func(p *Params) { p.DoSample = true; p.Seed = seed(3); f(p) })
	}
	cases := []struct {
		name   string
		p      Params
		logits []float32
		seq    []int32
		eos    []int32
		want   []float32
	}{
		// Penalty before top-k: 3/4 = .75 falls below 2, so top-k keeps
		// token 1 (top-k first would keep token 0).
		{"repetition_penalty before top_k", sampling(func(p *Params) { p.RepetitionPenalty = 4; p.TopK = 1 }),
			[]float32{3, 2, 1}, []int32{0}, nil, []float32{ninf, 2, ninf}},
		// EOS masked before top-k: top-k then keeps token 1 (top-k first
		// would keep only EOS, then mask it: nothing left).
		{"min_new_tokens before top_k", sampling(func(p *Params) { p.MinNewTokens = 1; p.TopK = 1 }),
			[]float32{5, 1, 0}, nil, []int32{0}, []float32{ninf, 1, ninf}},
		// Temperature before top-p: at T=100 the softmax is almost flat
		// (.337 .333 .330), so top_p .8 keeps all three; at T=1 (.665
		// .245 .090) it would keep two.
		{"temperature before top_p", sampling(func(p *Params) { p.Temperature = 100; p.TopP = 0.8 }),
			[]float32{2, 1, 0}, nil, nil, []float32{0.02, 0.01, 0}},
		// Top-k before top-p: over the two left, .731 ≥ .7 so top-p keeps
		// one; top-p over all four (.644 .237 .087 .032) keeps two.
		{"top_k before top_p", sampling(func(p *Params) { p.TopK = 2; p.TopP = 0.7 }),
			[]float32{2, 1, 0, -1}, nil, nil, []float32{2, ninf, ninf, ninf}},
		// Penalty, then temperature, then top-k, then top-p, all at once.
		// Penalty: 4→2, -1→-2; T=.5: 4 2 -4 2 6; top-k 3 keeps 4 2 2 6
		// (ties at 2); their softmax (of 6 4 2 2) is .853 .116 .016 .016,
		// which reaches top_p .9 after two: 6 and 4 stay.
		{"all", sampling(func(p *Params) {
			p.RepetitionPenalty = 2
			p.Temperature = 0.5
			p.TopK = 3
			p.TopP = 0.9
		}), []float32{4, 1, -1, 1, 3}, []int32{0, 2}, nil, []float32{4, ninf, ninf, ninf, 6}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok, got := warped(t, c.p, c.logits, c.seq, 0, c.eos)
			if !same(got, c.want) {
				t.Errorf("scores %v, want %v", got, c.want)
			}
			if got[tok] == ninf {
				t.Errorf("sampled the removed token %d", tok)
			}
		})
	}
}

// hfReference is a direct transcription of generate()'s processors and
// warpers as HF writes them (full sorts, no shortcuts), for checking the
// Sampler's partial sorts and fused passes against.
func hfReference(p Params, logits []float32, seq []int32, generated int, eos []int32) []float32 {
	s := slices.Clone(logits)
	if p.RepetitionPenalty != 1 {
		pen := float32(p.RepetitionPenalty)
		penalized := map[int32]float32{}
		for _, id := range seq {
			if v := logits[id]; v < 0 {
				penalized[id] = v * pen
			} else {
				penalized[id] = v / pen
			}
		}
		for id, v := range penalized {
			s[id] = v
		}
	}
	if generated < p.MinNewTokens {
		for _, id := range eos {
			s[id] = ninf
		}
	}
	if !p.DoSample {
		return s
	}
	for i, v := range s {
		if v != v {
			s[i] = ninf
		}
	}
	if p.Temperature != 1 {
		for i := range s {
			s[i] /= float32(p.Temperature)
		}
	}
	if p.TopK > 0 {
		k := min(p.TopK, len(s))
		sorted := slices.Clone(s)
		slices.Sort(sorted)
		kth := sorted[len(s)-k]
		for i, v := range s {
			if v < kth {
				s[i] = ninf
			}
		}
	}
	if p.TopP < 1 {
		idx := make([]int, len(s))
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(a, b int) bool { return s[idx[a]] < s[idx[b]] })
		probs := softmax64(s)
		var cum float64
		remove := make([]bool, len(s))
		for j, i := range idx {
			cum += probs[i]
			remove[i] = cum <= 1-p.TopP && j < len(idx)-1
		}
		for i := range s {
			if remove[i] {
				s[i] = ninf
			}
		}
	}
	return s
}

func softmax64(s []float32) []float64 {
	m := math.Inf(-1)
	for _, v := range s {
		m = max(m, float64(v))
	}
	out := make([]float64, len(s))
	var z float64
	for i, v := range s {
		out[i] = math.Exp(float64(v) - m)
		z += out[i]
	}
	for i := range out {
		out[i] /= z
	}
	return out
}

// TestAgainstReference compares the Sampler's scores with hfReference's on
// random logits (with ties, -inf and NaN) and random parameters.
func TestAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 400 {
		v := 1 + r.IntN(300)
		logits := make([]float32, v)
		for i := range logits {
			switch x := r.IntN(20); {
			case x == 0:
				logits[i] = ninf
			case x == 1 && trial%2 == 0:
				logits[i] = nan
			case x < 8:
				logits[i] = float32(r.IntN(8)) / 2 // ties
			default:
				logits[i] = float32(r.NormFloat64() * 3)
			}
		}
		seq := make([]int32, r.IntN(2*v))
		for i := range seq {
			seq[i] = int32(r.IntN(v))
		}
		eos := []int32{int32(r.IntN(v))}
		p := DefaultParams()
		p.DoSample = r.IntN(4) != 0
		p.Seed = seed(uint64(trial))
		if r.IntN(2) == 0 {
			p.RepetitionPenalty = 0.5 + 2*r.Float64()
		}
		if r.IntN(2) == 0 {
			p.Temperature = 0.1 + 2*r.Float64()
		}
		if r.IntN(2) == 0 {
			p.TopK = 1 + r.IntN(v+5)
		}
		if r.IntN(2) == 0 {
			p.TopP = 0.01 + 0.98*r.Float64()
		}
		p.MinNewTokens = r.IntN(3)
		generated := r.IntN(3)

		tok, got := warped(t, p, logits, seq, generated, eos)
		want := hfReference(p, logits, seq, generated, eos)
		if !same(got, want) {
			t.Fatalf("trial %d, %+v:\nlogits %v\nseq %v\ngot  %v\nwant %v", trial, p, logits, seq, got, want)
		}
		if p.DoSample {
			if got[tok] == ninf && slices.ContainsFunc(got, func(x float32) bool { return x > ninf }) {
				t.Fatalf("trial %d: sampled removed token %d", trial, tok)
			}
		} else if g := argmax(want); tok != g {
			t.Fatalf("trial %d: greedy %d, want %d", trial, tok, g)
		}
	}
}

// chiSquareCritical is the chi-square quantile for df degrees of freedom
// and upper tail 0.001 (z = 3.0902), by Wilson and Hilferty's
// approximation (within 1% for df ≥ 1 at this tail).
func chiSquareCritical(df int) float64 {
	d := float64(df)
	a := 2 / (9 * d)
	return d * math.Pow(1-a+3.0902*math.Sqrt(a), 3)
}

// TestSamplingFrequencies draws many tokens with a fixed seed and checks
// that the frequencies match the softmax of the warped scores (from
// hfReference, not from the Sampler) by a chi-square test at p = 0.001,
// and that filtered tokens are never drawn.
func TestSamplingFrequencies(t *testing.T) {
	logits := []float32{1.0, 2.5, 0.3, -1.2, 2.5, 0.0, ninf, 1.7, 3.1, -0.5}
	seq := []int32{8, 1, 8}
	cases := []struct {
		name string
		p    Params
	}{
		// No top-p: the draw walks the tokens in id order.
		{"temperature", params(func(p *Params) { p.Temperature = 0.8 })},
		{"penalty top_k", params(func(p *Params) { p.RepetitionPenalty = 1.2; p.TopK = 6 })},
		// Top-p: the draw walks the heap's order.
		{"all", params(func(p *Params) { p.Temperature = 1.3; p.RepetitionPenalty = 1.2; p.TopK = 8; p.TopP = 0.9 })},
		{"top_p", params(func(p *Params) { p.TopP = 0.95 })},
	}
	const n = 40000
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.p.DoSample = true
			c.p.Seed = seed(12345)
			want := softmax64(hfReference(c.p, logits, seq, 0, nil))
			s := mustNew(t, c.p, len(logits), nil)
			counts := make([]int, len(logits))
			l := make([]float32, len(logits))
			for range n {
				copy(l, logits)
				counts[s.Next(l, seq, 0)]++
			}
			var chi2 float64
			df := -1
			for i, p := range want {
				if p == 0 {
					if counts[i] != 0 {
						t.Errorf("token %d has probability 0 but was drawn %d times", i, counts[i])
					}
					continue
				}
				e := p * n
				chi2 += (float64(counts[i]) - e) * (float64(counts[i]) - e) / e
				df++
			}
			if df < 1 {
				t.Fatalf("test case keeps %d tokens; it needs at least 2", df+1)
			}
			if crit := chiSquareCritical(df); chi2 > crit {
				t.Errorf("chi-square %.1f > %.1f (df %d): counts %v, want probabilities %.4f", chi2, crit, df, counts, want)
			}
		})
	}
}

// TestSeed checks reproducibility: the same seed gives the same tokens;
// the tokens are exactly the documented derivation from
// rand.NewPCG(seed, seedStream), one Float64 per token, so they are the
// same in every process (Go keeps PCG's output fixed); another seed gives
// others.
func TestSeed(t *testing.T) {
	logits := []float32{0.5, 1, 0, 1.5, -0.5, 1}
	p := params(func(p *Params) { p.DoSample = true; p.Seed = seed(42) })
	run := func(p Params) []int32 {
		s := mustNew(t, p, len(logits), nil)
		toks := make([]int32, 200)
		l := make([]float32, len(logits))
		for i := range toks {
			copy(l, logits)
			toks[i] = s.Next(l, nil, i)
		}
		return toks
	}
	a, b := run(p), run(p)
	if !slices.Equal(a, b) {
		t.Fatalf("same seed, different tokens:\n%v\n%v", a, b)
	}

	// The derivation, done independently.
	r := rand.New(rand.NewPCG(42, seedStream))
	w := softmax64(logits)
	for i, tok := range a {
		u, acc, want := r.Float64(), 0.0, int32(-1)
		for id, x := range w {
			if acc += x; u < acc {
				want = int32(id)
				break
			}
		}
		if tok != want {
			t.Fatalf("token %d = %d, want %d from PCG(42, seedStream)", i, tok, want)
		}
	}

	p.Seed = seed(43)
	if c := run(p); slices.Equal(a, c) {
		t.Errorf("seeds 42 and 43 gave the same 200 tokens")
	}

	// Without a seed, Seed reports the one drawn, which reproduces.
	p.Seed = nil
	s := mustNew(t, p, len(logits), nil)
	l := make([]float32, len(logits))
	var unseeded []int32
	for i := range 200 {
		copy(l, logits)
		unseeded = append(unseeded, s.Next(l, nil, i))
	}
	p.Seed = seed(s.Seed())
	if again := run(p); !slices.Equal(unseeded, again) {
		t.Errorf("Seed() = %d does not reproduce the unseeded run", s.Seed())
	}

	// Greedy decoding draws nothing from the stream.
	g := mustNew(t, params(func(p *Params) { p.Seed = seed(42) }), len(logits), nil)
	for range 10 {
		copy(l, logits)
		g.Next(l, nil, 0)
	}
	if g.rng.Uint64() != rand.New(rand.NewPCG(42, seedStream)).Uint64() {
		t.Errorf("greedy decoding consumed random numbers")
	}
}

func TestNewErrors(t *testing.T) {
	cases := []struct {
		vocab int
		eos   []int32
		want  string
	}{
		{0, nil, "sample: vocabulary size must be in [1, 2147483647] (got 0)"},
		{-5, nil, "sample: vocabulary size must be in [1, 2147483647] (got -5)"},
		{10, []int32{2, 10}, "sample: EOS token id 10 is outside the vocabulary [0, 10)"},
		{10, []int32{-1}, "sample: EOS token id -1 is outside the vocabulary [0, 10)"},
	}
	for _, c := range cases {
		if _, err := New(DefaultParams(), c.vocab, c.eos); err == nil || err.Error() != c.want {
			t.Errorf("New(vocab %d, eos %v) error = %v, want %q", c.vocab, c.eos, err, c.want)
		}
	}
}

func TestNextPanicsOnWrongLength(t *testing.T) {
	s := mustNew(t, DefaultParams(), 4, nil)
	defer func() {
		r := recover()
		if msg, _ := r.(string); !strings.Contains(msg, "got 3 logits for a vocabulary of 4 tokens") {
			t.Errorf("panic = %v", r)
		}
	}()
	s.Next(make([]float32, 3), nil, 0)
}

func TestFinish(t *testing.T) {
	p := params(func(p *Params) { p.MaxNewTokens = 3 })
	s := mustNew(t, p, 10, []int32{2, 7})
	cases := []struct {
		tok       int32
		generated int
		want      FinishReason
	}{
		{5, 1, FinishNone},
		{2, 1, FinishEOS},
		{7, 2, FinishEOS},
		{5, 3, FinishLength},
		{2, 3, FinishEOS}, // EOS wins: the model chose to stop
	}
	for _, c := range cases {
		if got := s.Finish(c.tok, c.generated); got != c.want {
			t.Errorf("Finish(%d, %d) = %q, want %q", c.tok, c.generated, got, c.want)
		}
	}
	// ignore_eos: EOS is an ordinary token, neither ending nor masked.
	p.IgnoreEOS = true
	s = mustNew(t, p, 3, []int32{2})
	if got := s.Finish(2, 1); got != FinishNone {
		t.Errorf("ignore_eos: Finish(EOS, 1) = %q, want none", got)
	}
	if got := s.Finish(2, 3); got != FinishLength {
		t.Errorf("ignore_eos: Finish(EOS, 3) = %q, want length", got)
	}
	if tok := s.Next([]float32{0, 1, 9}, nil, 0); tok != 2 {
		t.Errorf("ignore_eos: EOS was masked: Next = %d, want 2", tok)
	}
	if !s.IsEOS(2) || s.IsEOS(1) {
		t.Errorf("IsEOS is wrong")
	}
}

// benchLogits returns logits shaped like a language model's: most scores
// spread around 0, a few tokens well above.
func benchLogits(v int) []float32 {
	r := rand.New(rand.NewPCG(7, 7))
	l := make([]float32, v)
	for i := range l {
		l[i] = float32(r.NormFloat64() * 2.5)
	}
	for range 20 {
		l[r.IntN(v)] += 10 + float32(r.Float64()*5)
	}
	return l
}

var benchCases = []struct {
	name string
	p    Params
}{
	{"greedy", params(func(p *Params) {})},
	{"greedy+penalty", params(func(p *Params) { p.RepetitionPenalty = 1.1 })},
	{"sample", params(func(p *Params) { p.DoSample = true; p.Temperature = 0.8 })},
	{"top_k=40", params(func(p *Params) { p.DoSample = true; p.Temperature = 0.8; p.TopK = 40 })},
	{"top_p=0.9", params(func(p *Params) { p.DoSample = true; p.Temperature = 0.8; p.TopP = 0.9 })},
	{"top_p=0.9,flat", params(func(p *Params) { p.DoSample = true; p.Temperature = 3; p.TopP = 0.9 })},
	{"top_k=50+top_p=0.9+penalty", params(func(p *Params) {
		p.DoSample = true
		p.Temperature = 0.8
		p.TopK = 50
		p.TopP = 0.9
		p.RepetitionPenalty = 1.1
	})},
}

// benchSeq is a 1024-token prompt and generation, for the penalty.
func benchSeq(v int) []int32 {
	r := rand.New(rand.NewPCG(8, 8))
	seq := make([]int32, 1024)
	for i := range seq {
		seq[i] = int32(r.IntN(v))
	}
	return seq
}

func TestNextDoesNotAllocate(t *testing.T) {
	const v = 32000
	orig, seq := benchLogits(v), benchSeq(v)
	l := make([]float32, v)
	for _, c := range benchCases {
		c.p.Seed = seed(1)
		s := mustNew(t, c.p, v, []int32{2})
		allocs := testing.AllocsPerRun(20, func() {
			copy(l, orig)
			s.Next(l, seq, 0)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per Next, want 0", c.name, allocs)
		}
	}
}

// BenchmarkNext reports the time to pick one token from a 32,000-token
// vocabulary (Llama 2's), including restoring the logits Next changes.
func BenchmarkNext(b *testing.B) {
	const v = 32000
	orig, seq := benchLogits(v), benchSeq(v)
	l := make([]float32, v)
	for _, c := range benchCases {
		b.Run(fmt.Sprintf("V=%d/%s", v, c.name), func(b *testing.B) {
			c.p.Seed = seed(1)
			s := mustNew(b, c.p, v, []int32{2})
			b.ReportAllocs()
			for b.Loop() {
				copy(l, orig)
				s.Next(l, seq, 0)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/token")
		})
	}
}

// TestArgmaxMatchesScan: the eight-lane argmax picks what a plain scan
// picks (the first of ties, NaN never), on sizes around its stride.
func TestArgmaxMatchesScan(t *testing.T) {
	scan := func(l []float32) int32 {
		best, at := float32(math.Inf(-1)), 0
		for i, v := range l {
			if v > best {
				best, at = v, i
			}
		}
		return int32(at)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for n := 1; n < 70; n++ {
		for range 50 {
			l := make([]float32, n)
			for i := range l {
				switch r.IntN(10) {
				case 0:
					l[i] = float32(math.NaN())
				case 1:
					l[i] = float32(math.Inf(-1))
				default:
					l[i] = float32(r.IntN(5)) // many ties
				}
			}
			if got, want := argmax(l), scan(l); got != want {
				t.Fatalf("argmax %v = %d, a scan gives %d", l, got, want)
			}
		}
	}
}

// TestArgmaxMatchesGo: argmax (assembly where the CPU has it) picks what
// argmaxGo picks on vocabulary-sized and odd-sized scores: ties, NaN, -inf,
// +inf, signed zeros, the maximum in the tail or the first lanes.
func TestArgmaxMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	for _, n := range []int{31, 32, 33, 39, 40, 63, 64, 65, 100, 255, 1000, 32000, 32001, 32007} {
		for trial := range 60 {
			l := make([]float32, n)
			for i := range l {
				switch k := r.IntN(20); {
				case trial%6 == 0 && k < 19:
					l[i] = nan
				case trial%6 == 1 && k < 19:
					l[i] = -inf
				case trial%6 == 2:
					l[i] = float32(r.IntN(3)) - 1 // ties, zeros
					if l[i] == 0 && r.IntN(2) == 0 {
						l[i] = float32(math.Copysign(0, -1))
					}
				case k == 0:
					l[i] = nan
				case k == 1:
					l[i] = -inf
				default:
					l[i] = float32(r.NormFloat64())
				}
			}
			switch trial % 5 {
			case 3:
				l[n-1-r.IntN(min(n, 7))] = inf // in the tail
			case 4:
				l[r.IntN(n)] = 1e30
				l[r.IntN(n)] = 1e30
			}
			if got, want := argmax(l), argmaxGo(l); got != want {
				t.Fatalf("n=%d trial %d: argmax = %d (%g), argmaxGo = %d (%g)", n, trial, got, l[got], want, l[want])
			}
		}
	}
}
