// Package hfgen writes Hugging Face Llama checkpoints with deterministic
// random weights, as transformers saves them (config.json, safetensors
// shards with an index, the Llama 2 tokenizer.model), for conversion
// tests and benchmarks.
package hfgen

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/safetensors"
	"github.com/leo-operator/leo/runtime/synth"
)

// Model is a Llama checkpoint in transformers' layout, its weights held in
// float64 (for a reference forward pass) by transformers' tensor names.
type Model struct {
	Dim, Hidden, Layers, Heads, KVHeads, Vocab int
	Eps, Theta                                 float64
	Tied                                       bool
	W                                          map[string][]float64
}

// Small is a grouped-query model of 2 layers, 4 query and 2 key/value
// heads of 16, with the Llama 2 vocabulary.
func Small(seed uint64, tied bool) *Model {
	m := &Model{Dim: 64, Hidden: 96, Layers: 2, Heads: 4, KVHeads: 2, Vocab: 32000, Eps: 1e-5, Theta: 10000, Tied: tied}
	m.randomize(seed)
	return m
}

func (m *Model) randomize(seed uint64) {
	m.W = map[string][]float64{}
	r := rand.New(rand.NewPCG(seed, 99))
	hd := m.Dim / m.Heads
	mat := func(name string, rows, cols int, scale float64) {
		v := make([]float64, rows*cols)
		for i := range v {
			v[i] = r.NormFloat64() * scale
		}
		m.W[name] = v
	}
	norm := func(name string) {
		v := make([]float64, m.Dim)
		for i := range v {
			v[i] = 1 + 0.1*r.NormFloat64()
		}
		m.W[name] = v
	}
	mat("model.embed_tokens.weight", m.Vocab, m.Dim, 1)
	for l := 0; l < m.Layers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		norm(p + "input_layernorm.weight")
		mat(p+"self_attn.q_proj.weight", m.Dim, m.Dim, 0.2)
		mat(p+"self_attn.k_proj.weight", m.KVHeads*hd, m.Dim, 0.2)
		mat(p+"self_attn.v_proj.weight", m.KVHeads*hd, m.Dim, 0.2)
		mat(p+"self_attn.o_proj.weight", m.Dim, m.Dim, 0.2)
		norm(p + "post_attention_layernorm.weight")
		mat(p+"mlp.gate_proj.weight", m.Hidden, m.Dim, 0.2)
		mat(p+"mlp.up_proj.weight", m.Hidden, m.Dim, 0.2)
		mat(p+"mlp.down_proj.weight", m.Dim, m.Hidden, 0.2)
	}
	norm("model.norm.weight")
	if !m.Tied {
		mat("lm_head.weight", m.Vocab, m.Dim, 0.2)
	}
}

// Cols is a tensor's row length.
func (m *Model) Cols(name string) int {
	if strings.HasSuffix(name, "down_proj.weight") {
		return m.Hidden
	}
	return m.Dim
}

// Write saves m in dir as transformers does, in dtype ("F32", "F16" or
// "BF16"), over two shards. The weights in m are rounded to dtype first,
// so that a reference runs on exactly the stored values.
func (m *Model) Write(dir, dtype string) error {
	names := make([]string, 0, len(m.W))
	for n := range m.W {
		names = append(names, n)
	}
	sort.Strings(names)
	shards := [][]safetensors.Tensor{nil, nil}
	index := map[string]string{}
	for i, n := range names {
		v := m.W[n]
		var data []byte
		switch dtype {
		case "F32":
			data = make([]byte, 4*len(v))
			for k, x := range v {
				f := float32(x)
				v[k] = float64(f)
				binary.LittleEndian.PutUint32(data[4*k:], math.Float32bits(f))
			}
		case "F16", "BF16":
			data = make([]byte, 2*len(v))
			for k, x := range v {
				var h uint16
				if dtype == "F16" {
					h = quant.Float32ToFP16(float32(x))
					v[k] = float64(quant.FP16ToFloat32(h))
				} else {
					h = quant.Float32ToBF16(float32(x))
					v[k] = float64(quant.BF16ToFloat32(h))
				}
				binary.LittleEndian.PutUint16(data[2*k:], h)
			}
		default:
			return fmt.Errorf("dtype %q: want F32, F16 or BF16", dtype)
		}
		shape := []int64{int64(len(v))}
		if !strings.HasSuffix(n, "norm.weight") {
			shape = []int64{int64(len(v) / m.Cols(n)), int64(m.Cols(n))}
		}
		s := i % 2
		shards[s] = append(shards[s], safetensors.Tensor{Name: n, DType: dtype, Shape: shape, Data: data})
		index[n] = fmt.Sprintf("model-%05d-of-00002.safetensors", s+1)
	}
	for s, ts := range shards {
		if err := writeShard(filepath.Join(dir, fmt.Sprintf("model-%05d-of-00002.safetensors", s+1)), ts); err != nil {
			return err
		}
	}
	if err := writeJSON(filepath.Join(dir, "model.safetensors.index.json"), map[string]any{"metadata": map[string]any{}, "weight_map": index}); err != nil {
		return err
	}
	torchDtype := map[string]string{"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype]
	if err := writeJSON(filepath.Join(dir, "config.json"), map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama", "hidden_size": m.Dim,
		"intermediate_size": m.Hidden, "num_hidden_layers": m.Layers, "num_attention_heads": m.Heads,
		"num_key_value_heads": m.KVHeads, "vocab_size": m.Vocab, "max_position_embeddings": 2048,
		"rms_norm_eps": m.Eps, "rope_theta": m.Theta, "tie_word_embeddings": m.Tied, "torch_dtype": torchDtype,
		"rope_scaling": nil, "hidden_act": "silu",
	}); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "tokenizer.model"), synth.Llama2TokenizerModel(), 0o644)
}

func writeShard(path string, ts []safetensors.Tensor) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = safetensors.Write(bw, ts, map[string]string{"format": "pt"})
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// WriteShape writes a checkpoint of shape c in dtype ("F16" or "BF16")
// with random weights, streamed: memory stays small whatever the model's
// size (for conversion benchmarks on billion-parameter shapes). Shards
// hold at most 2 GiB (transformers splits at 5 GB by default; smaller
// shards keep several in play for a 1B model).
func WriteShape(dir string, c model.Config, dtype string, seed uint64) error {
	if dtype != "F16" && dtype != "BF16" {
		return fmt.Errorf("dtype %q: want F16 or BF16", dtype)
	}
	hd := c.Dim / c.Heads
	var specs []safetensors.Spec
	add := func(name string, shape ...int64) {
		specs = append(specs, safetensors.Spec{Name: name, DType: dtype, Shape: shape})
	}
	add("model.embed_tokens.weight", int64(c.VocabSize), int64(c.Dim))
	for l := 0; l < c.Layers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		add(p+"input_layernorm.weight", int64(c.Dim))
		add(p+"self_attn.q_proj.weight", int64(c.Dim), int64(c.Dim))
		add(p+"self_attn.k_proj.weight", int64(c.KVHeads*hd), int64(c.Dim))
		add(p+"self_attn.v_proj.weight", int64(c.KVHeads*hd), int64(c.Dim))
		add(p+"self_attn.o_proj.weight", int64(c.Dim), int64(c.Dim))
		add(p+"post_attention_layernorm.weight", int64(c.Dim))
		add(p+"mlp.gate_proj.weight", int64(c.HiddenDim), int64(c.Dim))
		add(p+"mlp.up_proj.weight", int64(c.HiddenDim), int64(c.Dim))
		add(p+"mlp.down_proj.weight", int64(c.Dim), int64(c.HiddenDim))
	}
	add("model.norm.weight", int64(c.Dim))
	add("lm_head.weight", int64(c.VocabSize), int64(c.Dim))

	const shardBytes = 2 << 30
	var shards [][]safetensors.Spec
	var size int64
	for _, s := range specs {
		n, _ := s.Bytes()
		if len(shards) == 0 || size+n > shardBytes {
			shards = append(shards, nil)
			size = 0
		}
		shards[len(shards)-1] = append(shards[len(shards)-1], s)
		size += n
	}
	r := rand.New(rand.NewPCG(seed, 7))
	index := map[string]string{}
	for i, sh := range shards {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		if err := writeStreamed(filepath.Join(dir, name), sh, dtype, r); err != nil {
			return err
		}
		for _, s := range sh {
			index[s.Name] = name
		}
	}
	if err := writeJSON(filepath.Join(dir, "model.safetensors.index.json"), map[string]any{"metadata": map[string]any{}, "weight_map": index}); err != nil {
		return err
	}
	torchDtype := map[string]string{"F16": "float16", "BF16": "bfloat16"}[dtype]
	if err := writeJSON(filepath.Join(dir, "config.json"), map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama", "hidden_size": c.Dim,
		"intermediate_size": c.HiddenDim, "num_hidden_layers": c.Layers, "num_attention_heads": c.Heads,
		"num_key_value_heads": c.KVHeads, "vocab_size": c.VocabSize, "max_position_embeddings": c.ContextLength,
		"rms_norm_eps": c.NormEps, "rope_theta": c.RopeBase, "tie_word_embeddings": false, "torch_dtype": torchDtype,
	}); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "tokenizer.model"), synth.Llama2TokenizerModel(), 0o644)
}

// writeStreamed writes one shard, generating each tensor's values (normal,
// scaled by 1/√cols; norm gains near 1) a MiB at a time.
func writeStreamed(path string, specs []safetensors.Spec, dtype string, r *rand.Rand) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	h, err := safetensors.Header(specs, map[string]string{"format": "pt"})
	if err == nil {
		_, err = bw.Write(h)
	}
	buf := make([]byte, 1<<20)
	for _, s := range specs {
		if err != nil {
			break
		}
		n, _ := s.Bytes()
		scale := 1.0
		if len(s.Shape) == 2 {
			scale = 1 / math.Sqrt(float64(s.Shape[1]))
		}
		for n > 0 && err == nil {
			k := min(int64(len(buf)), n)
			for i := int64(0); i < k; i += 2 {
				x := float32(r.NormFloat64() * scale)
				if len(s.Shape) == 1 {
					x = float32(1 + 0.1*r.NormFloat64())
				}
				var b uint16
				if dtype == "F16" {
					b = quant.Float32ToFP16(x)
				} else {
					b = quant.Float32ToBF16(x)
				}
				binary.LittleEndian.PutUint16(buf[i:], b)
			}
			_, err = bw.Write(buf[:k])
			n -= k
		}
	}
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
