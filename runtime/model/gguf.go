package model

import (
	"errors"
	"fmt"
	"slices"

	"github.com/leo-operator/leo/runtime/gguf"
	"github.com/leo-operator/leo/runtime/quant"
)

// The GGUF metadata keys of a Llama model, as llama.cpp writes them.
const (
	keyArch          = "general.architecture"
	keyContextLength = "llama.context_length"
	keyDim           = "llama.embedding_length"
	keyLayers        = "llama.block_count"
	keyHidden        = "llama.feed_forward_length"
	keyHeads         = "llama.attention.head_count"
	keyKVHeads       = "llama.attention.head_count_kv"
	keyRopeBase      = "llama.rope.freq_base"
	keyRopeDim       = "llama.rope.dimension_count"
	keyNormEps       = "llama.attention.layer_norm_rms_epsilon"
	keyVocabSize     = "llama.vocab_size"
)

// WriteConfig records the shape c under llama.cpp's metadata keys.
func WriteConfig(w *gguf.Writer, c Config) {
	w.SetString(keyArch, "llama")
	w.SetUint32(keyContextLength, uint32(c.ContextLength))
	w.SetUint32(keyDim, uint32(c.Dim))
	w.SetUint32(keyLayers, uint32(c.Layers))
	w.SetUint32(keyHidden, uint32(c.HiddenDim))
	w.SetUint32(keyHeads, uint32(c.Heads))
	w.SetUint32(keyKVHeads, uint32(c.KVHeads))
	w.SetFloat32(keyRopeBase, c.RopeBase)
	w.SetUint32(keyRopeDim, uint32(c.RopeDim))
	w.SetFloat32(keyNormEps, c.NormEps)
	w.SetUint32(keyVocabSize, uint32(c.VocabSize))
}

// ConfigFromGGUF reads a Llama model's shape from a GGUF file's metadata.
// Keys llama.cpp treats as optional get its defaults: kv heads = heads,
// rope base 10000, rope dimensions = head size, vocabulary size from
// token_embd.weight.
func ConfigFromGGUF(f *gguf.File) (Config, error) {
	arch, err := f.String(keyArch)
	if err != nil {
		return Config{}, err
	}
	if arch != "llama" {
		return Config{}, fmt.Errorf("%s is %q; leo runs Llama models (\"llama\")", keyArch, arch)
	}
	var c Config
	var errs []error
	required := func(key string, dst *int) {
		v, err := f.Uint(key)
		if err != nil {
			errs = append(errs, err)
			return
		}
		if v > 1<<31 {
			errs = append(errs, fmt.Errorf("%s = %d is too large", key, v))
			return
		}
		*dst = int(v)
	}
	optional := func(key string, dst *int, def int) {
		if _, ok := f.Lookup(key); !ok {
			*dst = def
			return
		}
		required(key, dst)
	}
	required(keyContextLength, &c.ContextLength)
	required(keyDim, &c.Dim)
	required(keyLayers, &c.Layers)
	required(keyHidden, &c.HiddenDim)
	required(keyHeads, &c.Heads)
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	optional(keyKVHeads, &c.KVHeads, c.Heads)
	if c.Heads > 0 {
		optional(keyRopeDim, &c.RopeDim, c.Dim/c.Heads)
	}
	c.RopeBase, c.NormEps = 10000, 1e-5
	if _, ok := f.Lookup(keyRopeBase); ok {
		v, err := f.Float(keyRopeBase)
		errs = append(errs, err)
		c.RopeBase = float32(v)
	}
	if _, ok := f.Lookup(keyNormEps); ok {
		v, err := f.Float(keyNormEps)
		errs = append(errs, err)
		c.NormEps = float32(v)
	}
	switch emb, ok := f.Tensor("token_embd.weight"); {
	case !ok:
		errs = append(errs, errors.New("the file has no token_embd.weight tensor"))
	case len(emb.Shape) != 2:
		errs = append(errs, fmt.Errorf("token_embd.weight has %d dimensions, want 2", len(emb.Shape)))
	case emb.Shape[1] > 1<<31:
		errs = append(errs, fmt.Errorf("token_embd.weight has %d rows", emb.Shape[1]))
	default:
		c.VocabSize = int(emb.Shape[1])
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

// WeightsFromGGUF maps the file's tensors onto the model's weights without
// copying matrices: they stay views of the file's memory. Norm gains are
// converted to float32.
func WeightsFromGGUF(f *gguf.File, c Config) (Weights, error) {
	w := Weights{Layers: make([]Layer, c.Layers)}
	for _, s := range w.specs(c) {
		t, ok := f.Tensor(s.name)
		if !ok {
			if s.optional {
				continue
			}
			return Weights{}, fmt.Errorf("the file has no tensor %s, which a Llama model of %d layers needs", s.name, c.Layers)
		}
		want := []uint64{uint64(s.cols), uint64(s.rows)}
		if s.vector != nil {
			want = want[:1]
		}
		if !slices.Equal(t.Shape, want) {
			return Weights{}, fmt.Errorf("tensor %s has shape %v, want %v for this model's shape", s.name, t.Shape, want)
		}
		data := f.TensorData(t)
		if s.vector != nil {
			v := make([]float32, s.cols)
			if err := quant.Dequantize(t.Type, data, v); err != nil {
				return Weights{}, fmt.Errorf("tensor %s: %w", s.name, err)
			}
			*s.vector = v
			continue
		}
		*s.matrix = Weight{Name: s.name, Type: t.Type, Rows: s.rows, Cols: s.cols, Data: data}
	}
	return w, nil
}

// Load reads a Llama model from a GGUF file for the backend. The model's
// matrices are views of the file, which must stay open while it is used.
func Load(f *gguf.File, b Backend) (*Model, error) {
	c, err := ConfigFromGGUF(f)
	if err != nil {
		return nil, err
	}
	w, err := WeightsFromGGUF(f, c)
	if err != nil {
		return nil, err
	}
	return New(c, w, b)
}
