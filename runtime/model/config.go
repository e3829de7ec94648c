// Package model is the Llama forward pass: token embeddings, then for each
// layer RMSNorm → attention with rotary positions and grouped-query heads →
// residual → RMSNorm → SwiGLU feed-forward → residual, then a final RMSNorm
// and the output projection to logits. Heavy kernels run on a Backend.
package model

import (
	"errors"
	"fmt"
)

// Config is the shape of a Llama model.
type Config struct {
	Dim           int     // embedding width (llama.embedding_length)
	HiddenDim     int     // feed-forward width (llama.feed_forward_length)
	Layers        int     // transformer blocks (llama.block_count)
	Heads         int     // query heads (llama.attention.head_count)
	KVHeads       int     // key/value heads; fewer than Heads is grouped-query attention
	VocabSize     int     // rows of token_embd.weight
	ContextLength int     // positions the model was trained for (llama.context_length)
	RopeBase      float32 // llama.rope.freq_base, 10000 unless the file says otherwise
	RopeDim       int     // dimensions of each head that rotate (llama.rope.dimension_count), even
	NormEps       float32 // llama.attention.layer_norm_rms_epsilon
}

// HeadDim is the width of one attention head.
func (c Config) HeadDim() int { return c.Dim / c.Heads }

// KVDim is the width of the keys (and values) of one position.
func (c Config) KVDim() int { return c.HeadDim() * c.KVHeads }

// Validate reports the first inconsistency in the shape, naming the field.
func (c Config) Validate() error {
	var errs []error
	positive := func(name string, v int) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", name, v))
		}
	}
	positive("embedding_length", c.Dim)
	positive("feed_forward_length", c.HiddenDim)
	positive("block_count", c.Layers)
	positive("attention.head_count", c.Heads)
	positive("attention.head_count_kv", c.KVHeads)
	positive("vocab_size", c.VocabSize)
	positive("context_length", c.ContextLength)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	switch {
	case c.Dim%c.Heads != 0:
		return fmt.Errorf("embedding_length %d is not a multiple of attention.head_count %d", c.Dim, c.Heads)
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("attention.head_count %d is not a multiple of attention.head_count_kv %d", c.Heads, c.KVHeads)
	case c.RopeDim <= 0 || c.RopeDim > c.HeadDim() || c.RopeDim%2 != 0:
		return fmt.Errorf("rope.dimension_count %d must be even and in (0, head size %d]", c.RopeDim, c.HeadDim())
	case !(c.RopeBase > 0):
		return fmt.Errorf("rope.freq_base must be positive, got %g", c.RopeBase)
	case !(c.NormEps > 0):
		return fmt.Errorf("attention.layer_norm_rms_epsilon must be positive, got %g", c.NormEps)
	}
	return nil
}
