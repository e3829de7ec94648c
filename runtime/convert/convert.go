// Package convert turns model files into leo's GGUF: Hugging Face Llama
// checkpoints (safetensors) and llama2.c checkpoints into GGUF, and GGUF
// files into other weight types (quantization).
package convert

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/leo-operator/leo/runtime/gguf"
	"github.com/leo-operator/leo/runtime/llama2c"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/synth"
	"github.com/leo-operator/leo/runtime/tokenizer"
)

// Llama2C converts a llama2.c checkpoint into an F32 GGUF writer. llama2.c
// stores matrices as [out][in] rows and rotates adjacent pairs, exactly
// the GGUF layout, so weights are copied without permutation. A shared
// classifier is written as no output.weight (tied to the embedding), as
// llama.cpp expects.
//
// llama2.c keeps its tokenizer in a separate file; vocab supplies one of
// the checkpoint's vocabulary size (see TruncatedVocab).
func Llama2C(ck *llama2c.Checkpoint, vocab tokenizer.Vocab, name string) (*gguf.Writer, error) {
	cc := ck.Config
	if len(vocab.Tokens) != cc.VocabSize {
		return nil, fmt.Errorf("the checkpoint has a vocabulary of %d tokens but the tokenizer has %d", cc.VocabSize, len(vocab.Tokens))
	}
	c := model.Config{
		Dim: cc.Dim, HiddenDim: cc.HiddenDim, Layers: cc.Layers, Heads: cc.Heads, KVHeads: cc.KVHeads,
		VocabSize: cc.VocabSize, ContextLength: cc.SeqLen, RopeBase: 10000, RopeDim: cc.Dim / cc.Heads, NormEps: 1e-5,
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	w := gguf.NewWriter()
	w.SetString("general.architecture", "llama")
	w.SetString("general.name", name)
	w.SetUint32("general.file_type", 0)
	model.WriteConfig(w, c)
	tokenizer.WriteGGUF(w, vocab)

	data := map[string][]float32{
		"token_embd.weight":  ck.TokenEmbedding,
		"output_norm.weight": ck.RMSFinal,
	}
	if !cc.SharedClassifier {
		data["output.weight"] = ck.WCls
	}
	for i, l := range ck.Layers {
		p := fmt.Sprintf("blk.%d.", i)
		data[p+"attn_norm.weight"] = l.RMSAtt
		data[p+"attn_q.weight"] = l.WQ
		data[p+"attn_k.weight"] = l.WK
		data[p+"attn_v.weight"] = l.WV
		data[p+"attn_output.weight"] = l.WO
		data[p+"ffn_norm.weight"] = l.RMSFFN
		data[p+"ffn_gate.weight"] = l.W1
		data[p+"ffn_down.weight"] = l.W2
		data[p+"ffn_up.weight"] = l.W3
	}
	for _, s := range model.Tensors(c) {
		v, ok := data[s.Name]
		if !ok {
			continue // the tied classifier
		}
		if len(v) != s.Rows*s.Cols {
			return nil, fmt.Errorf("checkpoint tensor for %s has %d values, want %d", s.Name, len(v), s.Rows*s.Cols)
		}
		if err := w.AddTensor(s.Name, quant.F32, shapeOf(s), func(out io.Writer) error { return writeF32(out, v) }); err != nil {
			return nil, err
		}
	}
	return w, nil
}

func shapeOf(s model.TensorSpec) []uint64 {
	if s.Vector {
		return []uint64{uint64(s.Cols)}
	}
	return []uint64{uint64(s.Cols), uint64(s.Rows)}
}

func writeF32(out io.Writer, v []float32) error {
	buf := make([]byte, 4*min(len(v), 1<<16))
	for len(v) > 0 {
		n := min(len(v), len(buf)/4)
		for i, x := range v[:n] {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(x))
		}
		if _, err := out.Write(buf[:4*n]); err != nil {
			return err
		}
		v = v[n:]
	}
	return nil
}

// TruncatedVocab keeps the first n tokens of a SentencePiece vocabulary.
// The Llama 2 vocabulary begins as every SentencePiece vocabulary trained
// with byte fallback does (<unk>, <s>, </s>, 256 byte tokens, then merges
// by rank), so its first 512 tokens have the structure of llama2.c's
// tok512 tokenizer, which is not available here; token ids line up, texts
// do not.
func TruncatedVocab(v tokenizer.Vocab, n int) (tokenizer.Vocab, error) {
	if n > len(v.Tokens) || n < 3 {
		return tokenizer.Vocab{}, fmt.Errorf("cannot keep %d of %d tokens", n, len(v.Tokens))
	}
	t := v
	t.Tokens, t.Scores, t.Types = v.Tokens[:n], v.Scores[:n], v.Types[:n]
	return t, nil
}

// Quantize writes src's model with its weights converted to file type ft
// (as synth.TensorType chooses per tensor), keeping all metadata but
// general.file_type. Every tensor is converted through float32.
func Quantize(src *gguf.File, ft quant.Type) (*gguf.Writer, error) {
	c, err := model.ConfigFromGGUF(src)
	if err != nil {
		return nil, err
	}
	w := gguf.NewWriter()
	for _, kv := range src.KVs {
		switch kv.Key {
		case "general.file_type", "general.quantization_version", "general.alignment":
			continue
		}
		w.Set(kv.Key, kv.Value)
	}
	w.SetUint32("general.file_type", synth.FileTypeID(ft))
	if ft.BlockElems() > 1 {
		w.SetUint32("general.quantization_version", 2)
	}
	for _, s := range model.Tensors(c) {
		info, ok := src.Tensor(s.Name)
		if !ok {
			if s.Name == "output.weight" {
				continue // a tied classifier stays absent
			}
			return nil, fmt.Errorf("the model has no tensor %s", s.Name)
		}
		if want := shapeOf(s); !slices.Equal(info.Shape, want) {
			return nil, fmt.Errorf("tensor %s has shape %v, but the model's metadata makes it %v", s.Name, info.Shape, want)
		}
		t := synth.TensorType(ft, s)
		in := src.TensorData(info)
		srcType, cols, rows := info.Type, s.Cols, s.Rows
		if s.Vector {
			rows = 1
		}
		err := w.AddTensor(s.Name, t, shapeOf(s), func(out io.Writer) error {
			return convertRows(out, in, srcType, t, cols, rows)
		})
		if err != nil {
			return nil, err
		}
	}
	return w, nil
}

func convertRows(out io.Writer, in []byte, from, to quant.Type, cols, rows int) error {
	inRow, err := from.RowBytes(cols)
	if err != nil {
		return err
	}
	outRow, err := to.RowBytes(cols)
	if err != nil {
		return err
	}
	f := make([]float32, cols)
	buf := make([]byte, outRow)
	for r := 0; r < rows; r++ {
		if err := quant.Dequantize(from, in[r*inRow:(r+1)*inRow], f); err != nil {
			return err
		}
		if err := quant.Quantize(to, f, buf); err != nil {
			return err
		}
		if _, err := out.Write(buf); err != nil {
			return err
		}
	}
	return nil
}
