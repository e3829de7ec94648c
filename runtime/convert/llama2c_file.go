package convert

import (
	"fmt"
	"io"
	"os"

	"github.com/leo-operator/leo/runtime/gguf"
	"github.com/leo-operator/leo/runtime/llama2c"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/tokenizer"
)

// Llama2CFile converts the llama2.c checkpoint at path as Llama2C does,
// but streamed: each tensor is copied from the file (llama2.c's float32
// arrays are GGUF's F32 layout) a MiB at a time as the writer writes it,
// so that converting holds about a MiB, not the checkpoint. The returned
// close func closes the checkpoint once the writer has written.
// vocab(size) supplies the tokenizer for the checkpoint's vocabulary size.
func Llama2CFile(path string, vocab func(size int) (tokenizer.Vocab, error), name string) (*gguf.Writer, func() error, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("llama2c: %w", err)
	}
	w, err := llama2cFile(f, path, vocab, name)
	if err != nil {
		_ = f.Close()
		return nil, nil, err
	}
	return w, f.Close, nil
}

func llama2cFile(f *os.File, path string, vocab func(int) (tokenizer.Vocab, error), name string) (*gguf.Writer, error) {
	var hdr [llama2c.HeaderBytes]byte
	n, _ := io.ReadFull(f, hdr[:])
	cc, want, err := llama2c.ParseHeader(hdr[:n])
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	if st, err := f.Stat(); err != nil || st.Size() != want {
		return nil, fmt.Errorf("llama2c: %s: the header (%s) implies a file of %d bytes; it has a different size (truncated, trailing data, or not a legacy llama2.c checkpoint)", path, cc, want)
	}
	v, err := vocab(cc.VocabSize)
	if err != nil {
		return nil, err
	}
	w, c, err := llama2cHeader(cc, v, name)
	if err != nil {
		return nil, err
	}
	offs := cc.Offsets()
	// section returns the byte range of layer l's part of a section (l =
	// -1: the whole section).
	section := func(name string, l int) (int64, int64) {
		o := offs[name]
		if l < 0 {
			return o[0], 4 * o[1]
		}
		per := 4 * o[1] / int64(cc.Layers)
		return o[0] + int64(l)*per, per
	}
	ranges := map[string][2]int64{}
	put := func(gname, section0 string, l int) {
		a, n := section(section0, l)
		ranges[gname] = [2]int64{a, n}
	}
	put("token_embd.weight", "token_embedding", -1)
	put("output_norm.weight", "rms_final", -1)
	if !cc.SharedClassifier {
		put("output.weight", "wcls", -1)
	}
	for l := 0; l < cc.Layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		for gname, sec := range map[string]string{
			"attn_norm.weight": "rms_att", "attn_q.weight": "wq", "attn_k.weight": "wk", "attn_v.weight": "wv",
			"attn_output.weight": "wo", "ffn_norm.weight": "rms_ffn", "ffn_gate.weight": "w1", "ffn_down.weight": "w2", "ffn_up.weight": "w3",
		} {
			put(p+gname, sec, l)
		}
	}
	for _, s := range model.Tensors(c) {
		r, ok := ranges[s.Name]
		if !ok {
			continue // the tied classifier
		}
		if r[1] != 4*int64(s.Rows)*int64(s.Cols) {
			return nil, fmt.Errorf("checkpoint tensor for %s has %d bytes, want %d", s.Name, r[1], 4*s.Rows*s.Cols)
		}
		err := w.AddTensor(s.Name, quant.F32, shapeOf(s), func(out io.Writer) error {
			_, err := io.Copy(out, io.NewSectionReader(f, r[0], r[1]))
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return w, nil
}
