package peer

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/synth"
)

// The tiny model is written once per test binary: every test reads it.
var shared struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// tinyShape is a small Llama with grouped-query attention (8 query heads,
// 4 kv heads) and the real Llama 2 vocabulary.
var tinyShape = model.Config{Dim: 64, HiddenDim: 172, Layers: 2, Heads: 8, KVHeads: 4, VocabSize: 32000,
	ContextLength: 512, RopeBase: 10000, RopeDim: 8, NormEps: 1e-5}

// sharedModel writes the tiny F32 model (leo's generator of random-weight
// models) once per test binary and returns its path.
func sharedModel(t testing.TB) string {
	t.Helper()
	shared.once.Do(func() {
		vocab, err := synth.Llama2Vocab()
		if err != nil {
			shared.err = err
			return
		}
		if shared.dir, err = os.MkdirTemp("", "leo-peer-test-"); err != nil {
			shared.err = err
			return
		}
		shared.path = filepath.Join(shared.dir, "tiny-llama.gguf")
		shared.err = synth.Write(shared.path, synth.Options{Name: "tiny", Config: tinyShape, Type: quant.F32, Seed: 1, Vocab: vocab})
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.path
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestInstall(t *testing.T) {
	dir, err := Install(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{
		"node_modules/node-llama-cpp/package.json",
		"node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/llama-addon.node",
	} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("install in %s: %v", dir, err)
		}
	}
	// No GPU builds: --omit=optional must have kept them out.
	if m, _ := filepath.Glob(filepath.Join(dir, "node_modules/@node-llama-cpp/*cuda*")); len(m) > 0 {
		t.Errorf("GPU builds were installed: %v", m)
	}
	again, err := Install(testContext(t))
	if err != nil || again != dir {
		t.Errorf("second Install = %q, %v; want %q", again, err, dir)
	}
}

func TestTokenize(t *testing.T) {
	t.Parallel()
	got, err := Tokenize(testContext(t), sharedModel(t), "Once upon a time", true)
	if err != nil {
		t.Fatal(err)
	}
	// What Meta's tokenizer gives (with BOS).
	if want := []int32{1, 9038, 2501, 263, 931}; !slices.Equal(got, want) {
		t.Errorf("Tokenize = %v, want %v", got, want)
	}
}

// TestLogitsAndGreedy checks the scores' shape and normalization, and that
// the greedy continuation, generated one token at a time, is the argmax of
// the scores of prompt+continuation evaluated in one batch: so row i is the
// prediction after tokens[0..i], neither before nor after.
func TestLogitsAndGreedy(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	model := sharedModel(t)
	prompt := []int32{1, 9038, 2501, 263, 931}
	const n = 12
	gen, err := Greedy(ctx, model, prompt, n, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(gen) != n {
		t.Fatalf("Greedy gave %d tokens, want %d", len(gen), n)
	}
	seq := append(slices.Clone(prompt), gen...)
	s, err := Logits(ctx, model, seq, 1)
	if err != nil {
		t.Fatal(err)
	}
	if s.Kind != KindLogProbs || s.Vocab != 32000 || len(s.Rows) != len(seq) {
		t.Fatalf("Logits: kind %q, vocab %d, %d rows; want %q, 32000, %d", s.Kind, s.Vocab, len(s.Rows), KindLogProbs, len(seq))
	}
	for i, row := range s.Rows {
		if len(row) != s.Vocab {
			t.Fatalf("row %d has %d scores, want %d", i, len(row), s.Vocab)
		}
		var sum float64
		for _, v := range row {
			sum += math.Exp(float64(v))
		}
		// llama.cpp normalizes in float32 over 32000 terms: sums are off
		// by up to about 1e-4 on peaked distributions.
		if math.Abs(sum-1) > 1e-3 {
			t.Errorf("row %d: probabilities sum to %.7f, want 1", i, sum)
		}
	}
	// Rows at different positions differ: each is the model's answer to a
	// different prefix, not one row repeated.
	if slices.Equal(s.Rows[0], s.Rows[1]) {
		t.Error("rows 0 and 1 are equal")
	}
	for j, tok := range gen {
		row := s.Rows[len(prompt)-1+j]
		if am := int32(argmax(row)); am != tok {
			t.Errorf("greedy token %d is %d, but the argmax of the scores after it is %d (%.6f vs %.6f)", j, tok, am, row[tok], row[am])
		}
	}

}

func TestBench(t *testing.T) {
	t.Parallel()
	r, err := Bench(testContext(t), sharedModel(t), 1, 16, 8)
	if err != nil {
		t.Fatal(err)
	}
	if r.Threads != 1 || r.Prompt != 16 || r.Gen != 8 || len(r.PromptRuns) != r.Reps || len(r.GenRuns) != r.Reps || r.BatchSize < 128 {
		t.Errorf("Bench = %+v", r)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	model := sharedModel(t)
	// Checked in Go, before node runs.
	if _, err := Logits(ctx, model, nil, 0); err == nil {
		t.Error("Logits with no tokens: no error")
	}
	if _, err := Greedy(ctx, model, []int32{1, -5}, 3, 0); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Errorf("Greedy with a negative token: %v", err)
	}
	if _, err := Tokenize(ctx, filepath.Join(t.TempDir(), "missing.gguf"), "hi", false); err == nil {
		t.Error("Tokenize of a missing file: no error")
	}
	// Checked by peer.mjs: the error carries its stderr.
	_, err := Logits(ctx, model, []int32{1, 32000}, 0)
	if err == nil || !strings.Contains(err.Error(), "outside the vocabulary") {
		t.Errorf("Logits with token 32000 of a 32000-token vocabulary: %v", err)
	}
}

func argmax(row []float32) int {
	best := 0
	for i, v := range row {
		if v > row[best] {
			best = i
		}
	}
	return best
}

// encodeScores writes rows as peer.mjs does: metadata and a float32 file.
func encodeScores(kind string, vocab int, rows [][]float32) (meta, data []byte) {
	meta = fmt.Appendf(nil, `{"kind":%q,"dtype":"float32le","positions":%d,"vocab":%d}`, kind, len(rows), vocab)
	for _, r := range rows {
		for _, v := range r {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
		}
	}
	return meta, data
}

func TestDecodeScores(t *testing.T) {
	rows := [][]float32{{-1, -2, float32(math.Inf(-1))}, {-0.5, -3, -1}}
	meta, data := encodeScores(KindLogProbs, 3, rows)
	s, err := decodeScores(meta, data, 2)
	if err != nil {
		t.Fatal(err)
	}
	if s.Kind != KindLogProbs || s.Vocab != 3 || len(s.Rows) != 2 || !slices.Equal(s.Rows[0], rows[0]) || !slices.Equal(s.Rows[1], rows[1]) {
		t.Errorf("decodeScores = %+v, want rows %v", s, rows)
	}
	// Appending to a row must not write into the next one.
	_ = append(s.Rows[0], 42)
	if s.Rows[1][0] != -0.5 {
		t.Error("rows share capacity")
	}
	for name, c := range map[string]struct {
		meta, data []byte
		n          int
	}{
		"short data":     {meta, data[:len(data)-4], 2},
		"odd bytes":      {meta, data[:len(data)-1], 2},
		"wrong count":    {meta, data, 3},
		"bad kind":       {[]byte(`{"kind":"probs","dtype":"float32le","positions":2,"vocab":3}`), data, 2},
		"bad dtype":      {[]byte(`{"kind":"logits","dtype":"float16","positions":2,"vocab":3}`), data, 2},
		"zero vocab":     {[]byte(`{"kind":"logits","dtype":"float32le","positions":2,"vocab":0}`), data, 2},
		"not json":       {[]byte(`peer.mjs: oops`), data, 2},
		"NaN":            {meta, binary.LittleEndian.AppendUint32(data[:len(data)-4], 0x7fc00000), 2},
		"huge positions": {[]byte(`{"kind":"logits","dtype":"float32le","positions":4611686018427387904,"vocab":3}`), data, 4611686018427387904},
	} {
		if _, err := decodeScores(c.meta, c.data, c.n); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func FuzzDecodeScores(f *testing.F) {
	meta, data := encodeScores(KindLogProbs, 3, [][]float32{{-1, -2, -3}, {-0.5, -3, -1}})
	f.Add(meta, data, 2)
	meta, data = encodeScores(KindLogits, 1, [][]float32{{7}})
	f.Add(meta, data, 1)
	f.Add([]byte(`{"kind":"logits","dtype":"float32le","positions":1,"vocab":4194304}`), []byte{}, 1)
	f.Fuzz(func(t *testing.T, meta, data []byte, n int) {
		s, err := decodeScores(meta, data, n)
		if err != nil {
			return
		}
		if len(s.Rows) != n || n*s.Vocab*4 != len(data) {
			t.Fatalf("decoded %d rows of %d from %d bytes, asked for %d", len(s.Rows), s.Vocab, len(data), n)
		}
		for _, r := range s.Rows {
			if len(r) != s.Vocab {
				t.Fatalf("row of %d, vocab %d", len(r), s.Vocab)
			}
		}
	})
}

// BenchmarkPeer reports llama.cpp's speed on the tiny test model: prompt
// processing of 128 tokens in one batch and generation of 64 tokens, on
// 1 and 2 threads. Each iteration is one peer run (a warm-up and 3 timed
// repetitions, medians reported).
func BenchmarkPeer(b *testing.B) {
	model := sharedModel(b)
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			var r BenchResult
			for b.Loop() {
				var err error
				if r, err = Bench(context.Background(), model, threads, 128, 64); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(r.PromptTokS, "prompt_tok/s")
			b.ReportMetric(r.GenTokS, "gen_tok/s")
		})
	}
}
