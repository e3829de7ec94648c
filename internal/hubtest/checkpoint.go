package hubtest

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"

	"github.com/leo-operator/leo/runtime/safetensors"
	"github.com/leo-operator/leo/runtime/synth"
)

// Checkpoint is a small Hugging Face checkpoint, deterministic, as the Hub
// holds one: config.json, two safetensors shards (F16 tensors named as
// transformers names them, about 6 MB) and their index, the Llama 2
// SentencePiece tokenizer, a README. Its bytes are for download tests; its
// tensors do not make a whole model.
func Checkpoint() ([]File, error) {
	r := rand.New(rand.NewPCG(1, 2))
	f16 := func(n int) []byte {
		b := make([]byte, 2*n)
		for i := 0; i < n; i++ {
			// small normal halves: sign, exponent 10..14, any mantissa
			h := uint16(r.IntN(2))<<15 | uint16(10+r.IntN(5))<<10 | uint16(r.IntN(1024))
			binary.LittleEndian.PutUint16(b[2*i:], h)
		}
		return b
	}
	const dim, hidden, vocab, kv = 64, 160, 32000, 32
	shard := func(tensors []safetensors.Tensor) ([]byte, error) {
		var buf bytes.Buffer
		err := safetensors.Write(&buf, tensors, map[string]string{"format": "pt"})
		return buf.Bytes(), err
	}
	one, err := shard([]safetensors.Tensor{
		{Name: "model.embed_tokens.weight", DType: "F16", Shape: []int64{vocab, dim}, Data: f16(vocab * dim)},
		{Name: "model.layers.0.self_attn.q_proj.weight", DType: "F16", Shape: []int64{dim, dim}, Data: f16(dim * dim)},
		{Name: "model.layers.0.self_attn.k_proj.weight", DType: "F16", Shape: []int64{kv, dim}, Data: f16(kv * dim)},
	})
	if err != nil {
		return nil, err
	}
	two, err := shard([]safetensors.Tensor{
		{Name: "model.layers.0.mlp.up_proj.weight", DType: "F16", Shape: []int64{hidden, dim}, Data: f16(hidden * dim)},
		{Name: "lm_head.weight", DType: "F16", Shape: []int64{vocab / 2, dim}, Data: f16(vocab / 2 * dim)},
	})
	if err != nil {
		return nil, err
	}
	return []File{
		{Path: "config.json", Data: []byte(`{"architectures":["LlamaForCausalLM"],"hidden_size":64,"num_attention_heads":2,"num_key_value_heads":1}`)},
		{Path: "model-00001-of-00002.safetensors", Data: one},
		{Path: "model-00002-of-00002.safetensors", Data: two},
		{Path: "model.safetensors.index.json", Data: []byte(`{"metadata":{},"weight_map":{}}`)},
		{Path: "tokenizer.model", Data: bytes.Clone(synth.Llama2TokenizerModel())},
		{Path: "README.md", Data: []byte("# a test checkpoint\n")},
	}, nil
}
