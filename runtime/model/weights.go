package model

import (
	"fmt"

	"github.com/leo-operator/leo/runtime/quant"
)

// Weight is one weight matrix as the file stores it: Rows rows of Cols
// elements each (GGUF shape [Cols, Rows]), in GGML blocks of Type. Data is
// usually a view into the memory-mapped file.
type Weight struct {
	Name       string
	Type       quant.Type
	Rows, Cols int
	Data       []byte
	// Prepared is the backend's own form of the weight, made by its
	// Prepare at load time (nil when it needs none). Data stays as the
	// file has it: the embedding table is also read row by row.
	Prepared any
}

// Layer holds one transformer block's weights.
type Layer struct {
	AttnNorm []float32 // RMSNorm gain before attention [Dim]
	Q, K, V  Weight    // projections to queries [Dim×Dim], keys and values [KVDim×Dim]
	O        Weight    // attention output projection [Dim×Dim]
	FFNNorm  []float32 // RMSNorm gain before the feed-forward network [Dim]
	Gate, Up Weight    // SwiGLU input projections [HiddenDim×Dim]
	Down     Weight    // feed-forward output projection [Dim×HiddenDim]
}

// Weights holds all of a model's parameters.
type Weights struct {
	TokenEmbedding Weight    // one row per token [Vocab×Dim]
	Layers         []Layer   // transformer blocks
	OutputNorm     []float32 // final RMSNorm gain [Dim]
	Output         Weight    // classifier [Vocab×Dim]; the token embedding when tied
}

// tensorSpec names one tensor in a GGUF file and where it goes: a matrix
// (rows > 1) or a norm gain vector (rows == 1, always held as float32).
type tensorSpec struct {
	name       string
	rows, cols int
	matrix     *Weight
	vector     *[]float32
	optional   bool
}

// specs lists every tensor of a Llama model under its GGUF name (llama.cpp's
// naming), in one place, so loading and writing models agree.
func (w *Weights) specs(c Config) []tensorSpec {
	kv := c.KVDim()
	s := []tensorSpec{
		{name: "token_embd.weight", rows: c.VocabSize, cols: c.Dim, matrix: &w.TokenEmbedding},
	}
	for i := range w.Layers {
		l := &w.Layers[i]
		p := fmt.Sprintf("blk.%d.", i)
		s = append(s,
			tensorSpec{name: p + "attn_norm.weight", rows: 1, cols: c.Dim, vector: &l.AttnNorm},
			tensorSpec{name: p + "attn_q.weight", rows: c.Dim, cols: c.Dim, matrix: &l.Q},
			tensorSpec{name: p + "attn_k.weight", rows: kv, cols: c.Dim, matrix: &l.K},
			tensorSpec{name: p + "attn_v.weight", rows: kv, cols: c.Dim, matrix: &l.V},
			tensorSpec{name: p + "attn_output.weight", rows: c.Dim, cols: c.Dim, matrix: &l.O},
			tensorSpec{name: p + "ffn_norm.weight", rows: 1, cols: c.Dim, vector: &l.FFNNorm},
			tensorSpec{name: p + "ffn_gate.weight", rows: c.HiddenDim, cols: c.Dim, matrix: &l.Gate},
			tensorSpec{name: p + "ffn_up.weight", rows: c.HiddenDim, cols: c.Dim, matrix: &l.Up},
			tensorSpec{name: p + "ffn_down.weight", rows: c.Dim, cols: c.HiddenDim, matrix: &l.Down},
		)
	}
	return append(s,
		tensorSpec{name: "output_norm.weight", rows: 1, cols: c.Dim, vector: &w.OutputNorm},
		tensorSpec{name: "output.weight", rows: c.VocabSize, cols: c.Dim, matrix: &w.Output, optional: true},
	)
}

// TensorSpec is the public view of one tensor a Llama model of a given
// shape has: its GGUF name and shape ([Cols, Rows] in GGUF order), and
// whether it is a norm gain vector (kept in F32 when quantizing).
type TensorSpec struct {
	Name       string
	Rows, Cols int
	Vector     bool
}

// Tensors lists the tensors a model of shape c has under their GGUF names,
// in file order, with the classifier (output.weight) included.
func Tensors(c Config) []TensorSpec {
	w := Weights{Layers: make([]Layer, c.Layers)}
	var out []TensorSpec
	for _, s := range w.specs(c) {
		out = append(out, TensorSpec{Name: s.name, Rows: s.rows, Cols: s.cols, Vector: s.vector != nil})
	}
	return out
}

// matrixBytes is the bytes of the weights a forward pass reads in full:
// every layer's matrices and the classifier (the embedding table is read a
// row per token; when tied, New has made it the classifier too).
func (w *Weights) matrixBytes(c Config) int64 {
	var n int64
	for _, s := range w.specs(c) {
		if s.matrix != nil && s.matrix != &w.TokenEmbedding {
			n += int64(len(s.matrix.Data))
		}
	}
	return n
}
