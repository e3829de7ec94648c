package gguf

import (
	"fmt"
	"io"
	"testing"

	"github.com/leo-operator/leo/runtime/quant"
)

// vocabWriter makes a header the size of Llama 2's: 32,000 tokens with
// scores and types, and the 291 tensor infos of a 7B model (without data).
func vocabWriter() *Writer {
	w := NewWriter()
	tokens := make([]string, 32000)
	scores := make([]float32, len(tokens))
	types := make([]int32, len(tokens))
	for i := range tokens {
		tokens[i] = fmt.Sprintf("▁tok%d", i)
		scores[i] = float32(-i)
		types[i] = 1
	}
	w.SetString("general.architecture", "llama")
	w.SetStrings("tokenizer.ggml.tokens", tokens)
	w.SetFloat32s("tokenizer.ggml.scores", scores)
	w.SetInt32s("tokenizer.ggml.token_type", types)
	return w
}

// BenchmarkParse measures parsing a header with a Llama 2 sized vocabulary.
func BenchmarkParse(b *testing.B) {
	w := vocabWriter()
	for i := range 291 {
		if err := w.AddTensorBytes(fmt.Sprintf("blk.%d.t", i), quant.F32, []uint64{1}, make([]byte, 4)); err != nil {
			b.Fatal(err)
		}
	}
	data := encode(b, w)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteTo measures streaming a 256 MiB tensor through the Writer;
// B/op shows that tensor data is not buffered.
func BenchmarkWriteTo(b *testing.B) {
	const size = 256 << 20
	chunk := make([]byte, 1<<20)
	w := NewWriter()
	err := w.AddTensor("big", quant.F32, []uint64{size / 4}, func(out io.Writer) error {
		for range size / len(chunk) {
			if _, err := out.Write(chunk); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := w.WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
