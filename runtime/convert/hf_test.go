package convert

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/leo-operator/leo/internal/hfgen"
	"github.com/leo-operator/leo/runtime/llama2c"
	"github.com/leo-operator/leo/runtime/loader"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/synth"
	"github.com/leo-operator/leo/runtime/tokenizer"
)

// forward is transformers' LlamaForCausalLM in float64 on the checkpoint's
// own layout: rotate-half RoPE on un-permuted q and k. It is written from
// the modeling code, independently of leo's model package, so that a
// wrong permutation in the converter cannot cancel out.
func forward(m *hfgen.Model, tokens []int) [][]float64 {
	hd := m.Dim / m.Heads
	group := m.Heads / m.KVHeads
	matvec := func(name string, x []float64, rows int) []float64 {
		w := m.W[name]
		cols := len(x)
		out := make([]float64, rows)
		for r := range out {
			s := 0.0
			for c := 0; c < cols; c++ {
				s += w[r*cols+c] * x[c]
			}
			out[r] = s
		}
		return out
	}
	rms := func(x []float64, w []float64) []float64 {
		ss := 0.0
		for _, v := range x {
			ss += v * v
		}
		k := 1 / math.Sqrt(ss/float64(len(x))+m.Eps)
		out := make([]float64, len(x))
		for i := range x {
			out[i] = x[i] * k * w[i]
		}
		return out
	}
	rope := func(v []float64, pos int) {
		for h := 0; h < len(v)/hd; h++ {
			for j := 0; j < hd/2; j++ {
				ang := float64(pos) * math.Pow(m.Theta, -2*float64(j)/float64(hd))
				a, b := v[h*hd+j], v[h*hd+j+hd/2]
				v[h*hd+j] = a*math.Cos(ang) - b*math.Sin(ang)
				v[h*hd+j+hd/2] = b*math.Cos(ang) + a*math.Sin(ang)
			}
		}
	}
	keys := make([][][]float64, m.Layers)
	vals := make([][][]float64, m.Layers)
	var out [][]float64
	for pos, tok := range tokens {
		x := append([]float64(nil), m.W["model.embed_tokens.weight"][tok*m.Dim:(tok+1)*m.Dim]...)
		for l := 0; l < m.Layers; l++ {
			p := fmt.Sprintf("model.layers.%d.", l)
			h := rms(x, m.W[p+"input_layernorm.weight"])
			q := matvec(p+"self_attn.q_proj.weight", h, m.Dim)
			k := matvec(p+"self_attn.k_proj.weight", h, m.KVHeads*hd)
			v := matvec(p+"self_attn.v_proj.weight", h, m.KVHeads*hd)
			rope(q, pos)
			rope(k, pos)
			keys[l] = append(keys[l], k)
			vals[l] = append(vals[l], v)
			att := make([]float64, m.Dim)
			for hh := 0; hh < m.Heads; hh++ {
				kv := hh / group
				scores := make([]float64, pos+1)
				mx := math.Inf(-1)
				for t := 0; t <= pos; t++ {
					s := 0.0
					for i := 0; i < hd; i++ {
						s += q[hh*hd+i] * keys[l][t][kv*hd+i]
					}
					scores[t] = s / math.Sqrt(float64(hd))
					mx = math.Max(mx, scores[t])
				}
				sum := 0.0
				for t := range scores {
					scores[t] = math.Exp(scores[t] - mx)
					sum += scores[t]
				}
				for t := range scores {
					for i := 0; i < hd; i++ {
						att[hh*hd+i] += scores[t] / sum * vals[l][t][kv*hd+i]
					}
				}
			}
			o := matvec(p+"self_attn.o_proj.weight", att, m.Dim)
			for i := range x {
				x[i] += o[i]
			}
			h = rms(x, m.W[p+"post_attention_layernorm.weight"])
			g := matvec(p+"mlp.gate_proj.weight", h, m.Hidden)
			u := matvec(p+"mlp.up_proj.weight", h, m.Hidden)
			for i := range g {
				g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
			}
			d := matvec(p+"mlp.down_proj.weight", g, m.Dim)
			for i := range x {
				x[i] += d[i]
			}
		}
		h := rms(x, m.W["model.norm.weight"])
		head := "lm_head.weight"
		if m.Tied {
			head = "model.embed_tokens.weight"
		}
		out = append(out, matvec(head, h, m.Vocab))
	}
	return out
}

// TestHFToGGUF converts generated grouped-query checkpoints (F32 and F16,
// tied and separate classifiers) and compares leo's logits on the GGUF
// file with transformers' forward pass on the checkpoint's own weights.
func TestHFToGGUF(t *testing.T) {
	tokens := []int{1, 450, 4996, 17354, 1701, 29916, 432, 17204}
	for _, c := range []struct {
		dtype string
		tied  bool
		tol   float64 // relative to the largest logit
	}{
		{"F32", false, 1e-4},
		{"F16", true, 5e-3}, // leo rounds activations to F16 for F16 weights, as llama.cpp does
	} {
		t.Run(fmt.Sprintf("%s/tied=%v", c.dtype, c.tied), func(t *testing.T) {
			dir := t.TempDir()
			m := hfgen.Small(7, c.tied)
			if err := m.Write(dir, c.dtype); err != nil {
				t.Fatal(err)
			}
			l := convertAndLoad(t, dir)
			if l.Model.Config.KVHeads != 2 || l.Model.Config.Heads != 4 {
				t.Fatalf("config %+v", l.Model.Config)
			}
			want := forward(m, tokens)
			s, err := l.Model.NewState(1, 64, len(tokens))
			if err != nil {
				t.Fatal(err)
			}
			toks := make([]int32, len(tokens))
			pos := make([]int, len(tokens))
			logitsAll := make([]bool, len(tokens))
			for i, tk := range tokens {
				toks[i], pos[i], logitsAll[i] = int32(tk), i, true
			}
			got, err := s.Forward(&model.Batch{Tokens: toks, Pos: pos, Seq: make([]int, len(tokens)), Logits: logitsAll})
			if err != nil {
				t.Fatal(err)
			}
			worst := 0.0
			for p := range tokens {
				scale := 0.0
				for _, v := range want[p] {
					scale = math.Max(scale, math.Abs(v))
				}
				for i, v := range want[p] {
					worst = math.Max(worst, math.Abs(float64(got[p*m.Vocab+i])-v)/scale)
				}
			}
			t.Logf("largest difference from transformers' logits: %.2g of the largest logit", worst)
			if worst > c.tol {
				t.Errorf("logits differ by %.2g of the largest logit (tolerance %.2g)", worst, c.tol)
			}
		})
	}
}

func TestHFErrors(t *testing.T) {
	dir := t.TempDir()
	if err := hfgen.Small(3, true).Write(dir, "F32"); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenHF(t.TempDir()); err == nil || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("empty dir: %v", err)
	}
	writeJSON(t, filepath.Join(dir, "config.json"), map[string]any{"architectures": []string{"MixtralForCausalLM"}, "model_type": "mixtral"})
	if _, err := OpenHF(dir); err == nil || !strings.Contains(err.Error(), "Llama") {
		t.Errorf("mixtral: %v", err)
	}
	writeJSON(t, filepath.Join(dir, "config.json"), map[string]any{"model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
		"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 3, "vocab_size": 32000})
	if _, err := OpenHF(dir); err == nil || !strings.Contains(err.Error(), "head_count_kv") {
		t.Errorf("4 heads, 3 kv heads: %v", err)
	}
	writeJSON(t, filepath.Join(dir, "config.json"), map[string]any{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
		"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 32000})
	ck, err := OpenHF(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ck.Close() }()
	if _, err := ck.Writer("x"); err == nil || !strings.Contains(err.Error(), "shape") {
		t.Errorf("intermediate_size that the tensors do not have: %v", err)
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestHFTokenizerJSONOnly: a checkpoint with tokenizer.json and no
// tokenizer.model converts, and its GGUF tokenizes as the SentencePiece
// model does; a byte-level one (Llama 3) is refused by name.
func TestHFTokenizerJSONOnly(t *testing.T) {
	dir := t.TempDir()
	if err := hfgen.Small(4, true).Write(dir, "F32"); err != nil {
		t.Fatal(err)
	}
	sp, err := synth.Llama2Vocab()
	if err != nil {
		t.Fatal(err)
	}
	js, err := tokenizer.HFTokenizerJSON(sp)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "tokenizer.model")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	l := convertAndLoad(t, dir)
	want, _ := tokenizer.New(sp)
	for _, text := range []string{"Once upon a time, there was a little girl named Lily.", "def f(x):\n    return x ** 2  # 平方"} {
		if got, w := l.Tokenizer.Encode(text, true), want.Encode(text, true); !slices.Equal(got, w) {
			t.Errorf("%q: %v from the converted tokenizer.json, %v from tokenizer.model", text, got, w)
		}
	}
	llama3 := `{"model":{"type":"BPE","byte_fallback":false,"vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"ByteLevel"}}`
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(llama3), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenHF(dir); err == nil || !strings.Contains(err.Error(), "Llama 3") {
		t.Errorf("a byte-level tokenizer.json: %v", err)
	}
}

// convertAndLoad converts the checkpoint in dir to dir/model.gguf and
// loads that (closed when the test ends).
func convertAndLoad(t *testing.T, dir string) *loader.Loaded {
	t.Helper()
	ck, err := OpenHF(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ck.Close() }()
	w, err := ck.Writer(filepath.Base(dir))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "model.gguf")
	if err := w.WriteFile(out); err != nil {
		t.Fatal(err)
	}
	l, err := loader.Open(out, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

// TestLlama2CFile: converting stories260K from its file, a piece at a
// time, writes the same bytes as converting it from memory.
func TestLlama2CFile(t *testing.T) {
	const path = "../llama2c/testdata/stories260K.bin"
	ck, err := llama2c.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	full, err := synth.Llama2Vocab()
	if err != nil {
		t.Fatal(err)
	}
	vocab := func(n int) (tokenizer.Vocab, error) { return TruncatedVocab(full, n) }
	v, _ := vocab(ck.Config.VocabSize)
	mem, err := Llama2C(ck, v, "stories260K")
	if err != nil {
		t.Fatal(err)
	}
	var a, b bytes.Buffer
	if _, err := mem.WriteTo(&a); err != nil {
		t.Fatal(err)
	}
	w, closeCk, err := Llama2CFile(path, vocab, "stories260K")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = closeCk() }()
	if _, err := w.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	if a.Len() == 0 || !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Errorf("streamed conversion: %d bytes, from memory %d, equal %v", b.Len(), a.Len(), bytes.Equal(a.Bytes(), b.Bytes()))
	}
	bad := filepath.Join(t.TempDir(), "short.bin")
	raw, _ := os.ReadFile(path)
	_ = os.WriteFile(bad, raw[:len(raw)-4], 0o644)
	if _, _, err := Llama2CFile(bad, vocab, "x"); err == nil || !strings.Contains(err.Error(), "implies a file of") {
		t.Errorf("a truncated checkpoint: %v", err)
	}
}
