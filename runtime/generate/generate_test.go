package generate_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/leo-operator/leo/runtime/cpu"
	"github.com/leo-operator/leo/runtime/generate"
	"github.com/leo-operator/leo/runtime/gguf"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/sample"
	"github.com/leo-operator/leo/runtime/synth"
	"github.com/leo-operator/leo/runtime/tokenizer"
)

// tinyShape is a Llama with grouped-query attention and the real Llama 2
// vocabulary, small enough that a token takes well under a millisecond.
var tinyShape = model.Config{
	Dim: 64, HiddenDim: 128, Layers: 2, Heads: 4, KVHeads: 2, VocabSize: 32000,
	ContextLength: 64, RopeBase: 10000, RopeDim: 16, NormEps: 1e-5,
}

const prompt = "Once upon a time, there was a little robot"

// loaded is a model file opened and loaded on the CPU backend, as
// cmd/leo-runtime loads one.
type loaded struct {
	file  *gguf.File
	pool  *cpu.Pool
	model *model.Model
	tok   *tokenizer.Tokenizer
}

var fixtures struct {
	dir    string
	mu     sync.Mutex
	models map[quant.Type]*loaded
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "leo-generate-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fixtures.dir = dir
	code := m.Run()
	for _, l := range fixtures.models {
		l.pool.Close()
		_ = l.file.Close()
	}
	_ = os.RemoveAll(dir) // a temporary directory; the OS cleans up what is left
	os.Exit(code)
}

// load writes the tiny model in weight type typ (once per test binary)
// and loads it.
func load(tb testing.TB, typ quant.Type) *loaded {
	tb.Helper()
	fixtures.mu.Lock()
	defer fixtures.mu.Unlock()
	if l, ok := fixtures.models[typ]; ok {
		return l
	}
	vocab, err := synth.Llama2Vocab()
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(fixtures.dir, "tiny-"+typ.String()+".gguf")
	if err := synth.Write(path, synth.Options{Name: "tiny", Config: tinyShape, Type: typ, Seed: 7, Vocab: vocab}); err != nil {
		tb.Fatal(err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		_ = f.Close()
		tb.Fatal(err)
	}
	pool := cpu.NewPool(min(2, runtime.NumCPU()))
	m, err := model.Load(f, cpu.Backend{Pool: pool})
	if err != nil {
		pool.Close()
		_ = f.Close()
		tb.Fatal(err)
	}
	l := &loaded{file: f, pool: pool, model: m, tok: tok}
	if fixtures.models == nil {
		fixtures.models = map[quant.Type]*loaded{}
	}
	fixtures.models[typ] = l
	return l
}

func newGenerator(tb testing.TB, l *loaded, tok *tokenizer.Tokenizer, ctxLen, batch int) *generate.Generator {
	tb.Helper()
	g, err := generate.New(l.model, tok, ctxLen, batch)
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// greedy returns greedy parameters for n new tokens.
func greedy(n int) sample.Params {
	p := sample.DefaultParams()
	p.MaxNewTokens = n
	return p
}

func run(tb testing.TB, g *generate.Generator, in []int32, p sample.Params) (generate.Result, []string) {
	tb.Helper()
	var pieces []string
	res, err := g.Run(context.Background(), in, p, func(s string) error {
		pieces = append(pieces, s)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return res, pieces
}

// checkStream checks that the streamed pieces are whole, non-empty UTF-8
// and add up to the result's text.
func checkStream(t *testing.T, res generate.Result, pieces []string) {
	t.Helper()
	for i, s := range pieces {
		if s == "" || !utf8.ValidString(s) {
			t.Errorf("streamed piece %d is %q: want non-empty, valid UTF-8", i, s)
		}
	}
	if got := strings.Join(pieces, ""); got != res.Text {
		t.Errorf("streamed text %q != Result.Text %q", got, res.Text)
	}
}

var weightTypes = []quant.Type{quant.F32, quant.Q8_0}

func TestMaxNewTokens(t *testing.T) {
	for _, typ := range weightTypes {
		t.Run(typ.String(), func(t *testing.T) {
			l := load(t, typ)
			g := newGenerator(t, l, l.tok, 64, 4)
			in := l.tok.Encode(prompt, true)
			for _, n := range []int{1, 2, 7} {
				p := greedy(n)
				p.IgnoreEOS = true
				res, pieces := run(t, g, in, p)
				if len(res.Tokens) != n || res.Finish != sample.FinishLength {
					t.Errorf("max_new_tokens %d: got %d tokens, finish %q; want %d, %q", n, len(res.Tokens), res.Finish, n, sample.FinishLength)
				}
				if !slices.Equal(res.Prompt, in) {
					t.Errorf("Result.Prompt = %v, want %v", res.Prompt, in)
				}
				if want := l.tok.Decode(res.Tokens); res.Text != want {
					t.Errorf("text %q != Decode(tokens) %q", res.Text, want)
				}
				checkStream(t, res, pieces)
				if res.PromptTime <= 0 {
					t.Errorf("PromptTime = %v, want > 0", res.PromptTime)
				}
			}
		})
	}
}

// TestGreedyMatchesForward checks Run against a plain loop over
// State.Forward, one token at a time, with argmax: the batched prefill,
// the decode loop and the reuse of a generator between runs must not
// change the tokens.
func TestGreedyMatchesForward(t *testing.T) {
	const n = 20
	for _, typ := range weightTypes {
		t.Run(typ.String(), func(t *testing.T) {
			l := load(t, typ)
			in := l.tok.Encode(prompt, true)
			if len(in) <= 4 {
				t.Fatalf("the prompt has %d tokens; it must span several batches of 4", len(in))
			}
			g := newGenerator(t, l, l.tok, 64, 4)
			p := greedy(n)
			p.IgnoreEOS = true
			first, _ := run(t, g, in, p)
			second, _ := run(t, g, in, p)
			if !slices.Equal(first.Tokens, second.Tokens) || first.Text != second.Text {
				t.Errorf("greedy runs differ:\n%v %q\n%v %q", first.Tokens, first.Text, second.Tokens, second.Text)
			}

			st, err := l.model.NewState(1, 64, 1)
			if err != nil {
				t.Fatal(err)
			}
			var want []int32
			seq := slices.Clone(in)
			for pos := 0; len(want) < n; pos++ {
				logits, err := st.Forward(&model.Batch{Tokens: seq[pos : pos+1], Pos: []int{pos}, Seq: []int{0}})
				if err != nil {
					t.Fatal(err)
				}
				if pos < len(in)-1 {
					continue
				}
				next := int32(0)
				for i, v := range logits {
					if v > logits[next] {
						next = int32(i)
					}
				}
				want = append(want, next)
				seq = append(seq, next)
			}
			if !slices.Equal(first.Tokens, want) {
				t.Errorf("Run's greedy tokens %v\n   Forward/argmax tokens %v", first.Tokens, want)
			}
			if len(slices.Compact(slices.Clone(want))) < 3 {
				t.Logf("note: the random model repeats itself: %v", want)
			}
		})
	}
}

func TestStopString(t *testing.T) {
	l := load(t, quant.F32)
	g := newGenerator(t, l, l.tok, 64, 8)
	in := l.tok.Encode(prompt, true)
	p := greedy(24)
	p.IgnoreEOS = true
	full, pieces := run(t, g, in, p)
	checkStream(t, full, pieces)
	if len(pieces) < 4 {
		t.Fatalf("the first run streamed %d pieces (%q); need a few to take a stop string from", len(pieces), pieces)
	}
	// A stop string made of two pieces from the middle of the text; the
	// second run ends where it first occurs.
	k := len(pieces) / 2
	stop := pieces[k] + pieces[k+1]
	cut := strings.Index(full.Text, stop)
	t.Logf("text %q, stop %q", full.Text, stop)

	p.Stop = []string{"never in this text \x00", stop}
	res, got := run(t, g, in, p)
	checkStream(t, res, got)
	if res.Finish != sample.FinishStop {
		t.Errorf("finish %q, want %q", res.Finish, sample.FinishStop)
	}
	if want := full.Text[:cut]; res.Text != want {
		t.Errorf("with stop %q: text %q, want %q", stop, res.Text, want)
	}
	if strings.Contains(res.Text, stop) {
		t.Errorf("text %q contains the stop string %q", res.Text, stop)
	}
	if len(res.Tokens) == 0 || len(res.Tokens) >= len(full.Tokens) || !slices.Equal(res.Tokens, full.Tokens[:len(res.Tokens)]) {
		t.Errorf("tokens %v are not a shorter prefix of the first run's %v", res.Tokens, full.Tokens)
	}
	// The stop string's tokens are part of Tokens: decoding them gives
	// the text up to and including the stop string.
	if dec := l.tok.Decode(res.Tokens); !strings.HasPrefix(dec, full.Text[:cut]+stop) {
		t.Errorf("Decode(tokens) = %q, want it to start with %q", dec, full.Text[:cut]+stop)
	}
}

// TestEOS makes a token that the model generates greedily the EOS token
// (a random model hardly ever picks the real one): the model's logits are
// the same, so generation must end there.
func TestEOS(t *testing.T) {
	l := load(t, quant.F32)
	in := l.tok.Encode(prompt, true)
	p := greedy(10)
	p.IgnoreEOS = true
	full, _ := run(t, newGenerator(t, l, l.tok, 64, 8), in, p)
	k := -1
	for i := 2; i < len(full.Tokens)-1; i++ {
		if !slices.Contains(full.Tokens[:i], full.Tokens[i]) {
			k = i
			break
		}
	}
	if k < 0 {
		t.Skipf("the random model repeats one token (%v); no token to make EOS", full.Tokens)
	}
	eos := full.Tokens[k]
	t.Logf("greedy tokens %v; token %d (%q) becomes EOS", full.Tokens, eos, l.tok.Piece(eos))
	vocab, err := synth.Llama2Vocab()
	if err != nil {
		t.Fatal(err)
	}
	vocab.EOS = eos
	tok, err := tokenizer.New(vocab)
	if err != nil {
		t.Fatal(err)
	}
	g := newGenerator(t, l, tok, 64, 8)

	t.Run("ends", func(t *testing.T) {
		res, pieces := run(t, g, in, greedy(10))
		checkStream(t, res, pieces)
		if res.Finish != sample.FinishEOS || !slices.Equal(res.Tokens, full.Tokens[:k+1]) {
			t.Errorf("got %v, finish %q; want %v, finish %q", res.Tokens, res.Finish, full.Tokens[:k+1], sample.FinishEOS)
		}
		// The EOS token is in Tokens but its text is not in Text.
		if want := tok.Decode(full.Tokens[:k]); res.Text != want {
			t.Errorf("text %q, want %q (without the EOS token's text %q)", res.Text, want, tok.Decode(full.Tokens[k:k+1]))
		}
	})
	t.Run("min_new_tokens", func(t *testing.T) {
		p := greedy(10)
		p.MinNewTokens = k + 2
		res, _ := run(t, g, in, p)
		if i := slices.Index(res.Tokens, eos); i >= 0 && i < p.MinNewTokens {
			t.Errorf("EOS at index %d although min_new_tokens is %d: %v", i, p.MinNewTokens, res.Tokens)
		}
		if len(res.Tokens) <= p.MinNewTokens {
			t.Errorf("%d tokens (finish %q); want more than min_new_tokens %d", len(res.Tokens), res.Finish, p.MinNewTokens)
		}
		if !slices.Equal(res.Tokens[:k], full.Tokens[:k]) {
			t.Errorf("tokens before the masked EOS changed: %v, want %v", res.Tokens[:k], full.Tokens[:k])
		}
	})
	t.Run("ignore_eos", func(t *testing.T) {
		res, pieces := run(t, g, in, p)
		checkStream(t, res, pieces)
		if res.Finish != sample.FinishLength || !slices.Equal(res.Tokens, full.Tokens) {
			t.Errorf("got %v, finish %q; want %v, finish %q", res.Tokens, res.Finish, full.Tokens, sample.FinishLength)
		}
		// With ignore_eos, EOS is an ordinary token (here a Normal piece,
		// so its text shows).
		if want := tok.Decode(full.Tokens); res.Text != want {
			t.Errorf("text %q, want %q", res.Text, want)
		}
	})
}

func TestContextLimits(t *testing.T) {
	l := load(t, quant.F32)
	const ctxLen = 16
	g := newGenerator(t, l, l.tok, ctxLen, 4)
	tokens := func(n int) []int32 {
		s := make([]int32, n)
		s[0] = l.tok.BOS()
		for i := 1; i < n; i++ {
			s[i] = int32(100 + 37*i)
		}
		return s
	}
	p := greedy(100)
	p.IgnoreEOS = true

	for _, n := range []int{ctxLen, ctxLen + 5} {
		_, err := g.Run(context.Background(), tokens(n), p, nil)
		if err == nil || !strings.Contains(err.Error(), "context") {
			t.Errorf("prompt of %d tokens, context %d: error %v, want one about the context", n, ctxLen, err)
		}
	}
	if _, err := g.Run(context.Background(), nil, p, nil); err == nil {
		t.Error("empty prompt: no error")
	}
	// The generator still works after refusing.
	for _, n := range []int{5, ctxLen - 1} {
		res, err := g.Run(context.Background(), tokens(n), p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Tokens) != ctxLen-n || res.Finish != sample.FinishLength {
			t.Errorf("prompt %d, context %d: %d tokens, finish %q; want %d, %q", n, ctxLen, len(res.Tokens), res.Finish, ctxLen-n, sample.FinishLength)
		}
	}
	// Bad parameters are refused with Validate's message.
	bad := greedy(0)
	if _, err := g.Run(context.Background(), tokens(3), bad, nil); err == nil || !strings.Contains(err.Error(), "max_new_tokens") {
		t.Errorf("max_new_tokens 0: error %v, want one naming max_new_tokens", err)
	}
}

func TestSamplingSeed(t *testing.T) {
	l := load(t, quant.Q8_0)
	g := newGenerator(t, l, l.tok, 64, 8)
	in := l.tok.Encode(prompt, true)
	params := func(seed uint64) sample.Params {
		p := greedy(24)
		p.DoSample, p.Temperature, p.TopK, p.TopP, p.RepetitionPenalty = true, 1.5, 40, 0.95, 1.1
		p.IgnoreEOS = true
		p.Seed = &seed
		return p
	}
	a, _ := run(t, g, in, params(42))
	b, _ := run(t, g, in, params(42))
	if !slices.Equal(a.Tokens, b.Tokens) || a.Text != b.Text {
		t.Errorf("seed 42 twice:\n%v\n%v", a.Tokens, b.Tokens)
	}
	c, _ := run(t, g, in, params(43))
	if slices.Equal(a.Tokens, c.Tokens) {
		t.Errorf("seeds 42 and 43 gave the same %d tokens %v", len(a.Tokens), a.Tokens)
	}
}

func TestCancel(t *testing.T) {
	l := load(t, quant.F32)
	g := newGenerator(t, l, l.tok, 64, 4)
	in := l.tok.Encode(prompt, true)
	p := greedy(40)
	p.IgnoreEOS = true

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := g.Run(ctx, in, p, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled before Run: error %v, want %v", err, context.Canceled)
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	res, err := g.Run(ctx, in, p, func(string) error { cancel(); return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled while generating: error %v, want %v", err, context.Canceled)
	}
	if len(res.Tokens) == 0 || len(res.Tokens) >= p.MaxNewTokens {
		t.Errorf("cancelled while generating: %d tokens, want it to stop early", len(res.Tokens))
	}

	errStop := errors.New("client went away")
	calls := 0
	_, err = g.Run(context.Background(), in, p, func(string) error { calls++; return errStop })
	if !errors.Is(err, errStop) || calls != 1 {
		t.Errorf("emit failing: error %v after %d calls, want %v after 1", err, calls, errStop)
	}
}

// A closed generator refuses to run instead of using freed memory.
func TestClose(t *testing.T) {
	l := load(t, quant.F32)
	g := newGenerator(t, l, l.tok, 64, 4)
	in := l.tok.Encode(prompt, true)
	if _, err := g.Run(context.Background(), in, greedy(2), nil); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Run(context.Background(), in, greedy(2), nil); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Run after Close: %v, want an error saying the state was closed", err)
	}
}

func TestVocabMismatch(t *testing.T) {
	l := load(t, quant.F32)
	vocab, err := synth.Llama2Vocab()
	if err != nil {
		t.Fatal(err)
	}
	vocab.Tokens, vocab.Scores, vocab.Types = vocab.Tokens[:1000], vocab.Scores[:1000], vocab.Types[:1000]
	tok, err := tokenizer.New(vocab)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := generate.New(l.model, tok, 64, 4); err == nil {
		t.Error("a 1000-token tokenizer with a 32000-token model: no error")
	}
}

// decodeParams are the sampler settings the allocation test and the
// benchmark run: greedy, and sampling with every processor on.
func decodeParams() map[string]sample.Params {
	seed := uint64(1)
	s := sample.DefaultParams()
	s.DoSample, s.Temperature, s.TopK, s.TopP, s.RepetitionPenalty, s.MinNewTokens, s.Seed = true, 0.8, 40, 0.9, 1.1, 4, &seed
	return map[string]sample.Params{"greedy": greedy(sample.DefaultMaxNewTokens), "sampled": s}
}

// decodeLoop is the decode loop's per-token work, Step and Next, on a
// generator whose prompt was processed; step(i) runs the i-th token after
// the prompt, wrapping around before the context is full.
func decodeLoop(tb testing.TB, l *loaded, p sample.Params) (step func()) {
	tb.Helper()
	const ctxLen = 64
	g := newGenerator(tb, l, l.tok, ctxLen, 8)
	in := l.tok.Encode(prompt, true)
	logits, err := g.Prefill(context.Background(), in)
	if err != nil {
		tb.Fatal(err)
	}
	smp, err := sample.New(p, l.model.Config.VocabSize, []int32{l.tok.EOS()})
	if err != nil {
		tb.Fatal(err)
	}
	seq := make([]int32, len(in), ctxLen)
	copy(seq, in)
	tok := smp.Next(logits, seq, 0)
	return func() {
		if len(seq) == ctxLen {
			seq = seq[:len(in)]
		}
		seq = append(seq, tok)
		var err error
		if logits, err = g.Step(tok, len(seq)-1); err != nil {
			panic(err)
		}
		tok = smp.Next(logits, seq, len(seq)-len(in))
	}
}

func TestDecodeStepDoesNotAllocate(t *testing.T) {
	for _, typ := range weightTypes {
		for name, p := range decodeParams() {
			t.Run(typ.String()+"/"+name, func(t *testing.T) {
				step := decodeLoop(t, load(t, typ), p)
				if n := testing.AllocsPerRun(100, step); n != 0 {
					t.Errorf("Step + Sampler.Next: %v allocations per token, want 0", n)
				}
			})
		}
	}
}

// BenchmarkDecodeStep measures one generated token of the tiny model: the
// model's Step and the sampler's Next.
func BenchmarkDecodeStep(b *testing.B) {
	for _, typ := range weightTypes {
		for _, name := range []string{"greedy", "sampled"} {
			b.Run(typ.String()+"/"+name, func(b *testing.B) {
				step := decodeLoop(b, load(b, typ), decodeParams()[name])
				b.ReportAllocs()
				for b.Loop() {
					step()
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/token")
			})
		}
	}
}
