// Package convert turns model files into leo's GGUF: Hugging Face Llama
// checkpoints (safetensors) and llama2.c checkpoints into GGUF, and GGUF
// files into other weight types (quantization).
package convert

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"

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
	w, c, err := llama2cHeader(cc, vocab, name)
	if err != nil {
		return nil, err
	}

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

// llama2cHeader starts the GGUF writer of a llama2.c checkpoint of
// shape cc: its metadata and tokenizer.
func llama2cHeader(cc llama2c.Config, vocab tokenizer.Vocab, name string) (*gguf.Writer, model.Config, error) {
	if len(vocab.Tokens) != cc.VocabSize {
		return nil, model.Config{}, fmt.Errorf("the checkpoint has a vocabulary of %d tokens but the tokenizer has %d", cc.VocabSize, len(vocab.Tokens))
	}
	c := model.Config{
		Dim: cc.Dim, HiddenDim: cc.HiddenDim, Layers: cc.Layers, Heads: cc.Heads, KVHeads: cc.KVHeads,
		VocabSize: cc.VocabSize, ContextLength: cc.SeqLen, RopeBase: 10000, RopeDim: cc.Dim / cc.Heads, NormEps: 1e-5,
	}
	if err := c.Validate(); err != nil {
		return nil, c, err
	}
	w := gguf.NewWriter()
	w.SetString("general.architecture", "llama")
	w.SetString("general.name", name)
	w.SetUint32("general.file_type", 0)
	model.WriteConfig(w, c)
	tokenizer.WriteGGUF(w, vocab)
	return w, c, nil
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
// (as synth.TensorType chooses per tensor: norms stay F32), keeping all
// metadata but general.file_type, on all CPUs.
func Quantize(src *gguf.File, ft quant.Type) (*gguf.Writer, error) {
	return QuantizeWith(src, ft, QuantizeOptions{})
}

// QuantizeOptions tune QuantizeWith.
type QuantizeOptions struct {
	// Threads converts this many row blocks at once (0: all CPUs). The
	// output does not depend on it.
	Threads int
	// Report, when set, receives each tensor's error as it is written.
	Report *Report
	// Progress, when set, is called after each tensor with the source
	// bytes done and in all.
	Progress func(done, total int64)
}

// QuantizeWith is Quantize with options. Tensors are converted when the
// writer writes them, a block of rows per thread at a time, through
// float32, and written in order (the file is the same whatever the
// thread count); the source's pages are released after each tensor, so
// that memory stays about one tensor's worth, not the model's.
func QuantizeWith(src *gguf.File, ft quant.Type, o QuantizeOptions) (*gguf.Writer, error) {
	c, err := model.ConfigFromGGUF(src)
	if err != nil {
		return nil, err
	}
	if o.Threads <= 0 {
		o.Threads = runtime.NumCPU()
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
	var total, done int64
	for _, t := range src.Tensors {
		total += int64(t.Size) //nolint:gosec // sizes of a parsed file fit
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
		rows := s.Rows
		if s.Vector {
			rows = 1
		}
		job := rowJob{in: src.TensorData(info), from: info.Type, to: t, cols: s.Cols, rows: rows, threads: o.Threads}
		err := w.AddTensor(s.Name, t, shapeOf(s), func(out io.Writer) error {
			e, err := job.run(out)
			src.Release(info)
			if err != nil {
				return fmt.Errorf("tensor %s: %w", s.Name, err)
			}
			if o.Report != nil {
				o.Report.add(s.Name, info.Type, t, e)
			}
			done += int64(info.Size) //nolint:gosec // as above
			if o.Progress != nil {
				o.Progress(done, total)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return w, nil
}

// rowJob converts a tensor's rows from one type to another.
type rowJob struct {
	in         []byte
	from, to   quant.Type
	cols, rows int
	threads    int
}

// sqErr is a block's squared error against the source, the source's
// squared sum, and the values compared.
type sqErr struct {
	err, ref float64
	n        int64
}

// run writes the converted rows to out, threads blocks at a time, and
// returns the squared error summed in row order (the same whatever the
// thread count).
func (j rowJob) run(out io.Writer) (sqErr, error) {
	inRow, err := j.from.RowBytes(j.cols)
	if err != nil {
		return sqErr{}, err
	}
	outRow, err := j.to.RowBytes(j.cols)
	if err != nil {
		return sqErr{}, err
	}
	if len(j.in) < j.rows*inRow {
		return sqErr{}, fmt.Errorf("%d bytes of data, %d rows of %d need %d", len(j.in), j.rows, inRow, j.rows*inRow)
	}
	block := max(1, (1<<20)/max(outRow, 1)) // about 1 MiB of output a block
	bufs := make([][]byte, j.threads)
	errs := make([]sqErr, j.threads)
	fails := make([]error, j.threads)
	var total sqErr
	for r0 := 0; r0 < j.rows; r0 += block * j.threads {
		var wg sync.WaitGroup
		for k := 0; k < j.threads; k++ {
			a := r0 + k*block
			if a >= j.rows {
				bufs[k] = bufs[k][:0]
				continue
			}
			b := min(a+block, j.rows)
			wg.Go(func() {
				bufs[k], errs[k], fails[k] = j.convert(bufs[k], a, b, inRow, outRow)
			})
		}
		wg.Wait()
		for k := range bufs {
			if fails[k] != nil {
				return total, fails[k]
			}
			if len(bufs[k]) == 0 {
				continue
			}
			total.err += errs[k].err
			total.ref += errs[k].ref
			total.n += errs[k].n
			if _, err := out.Write(bufs[k]); err != nil {
				return total, err
			}
			errs[k] = sqErr{}
		}
	}
	return total, nil
}

// convert converts rows [a, b) into buf (reused), measuring the error of
// the result against the source.
func (j rowJob) convert(buf []byte, a, b, inRow, outRow int) ([]byte, sqErr, error) {
	n := b - a
	if cap(buf) < n*outRow {
		buf = make([]byte, n*outRow)
	}
	buf = buf[:n*outRow]
	f := make([]float32, j.cols)
	back := make([]float32, j.cols)
	var e sqErr
	for r := 0; r < n; r++ {
		if err := quant.Dequantize(j.from, j.in[(a+r)*inRow:(a+r+1)*inRow], f); err != nil {
			return buf, e, err
		}
		dst := buf[r*outRow : (r+1)*outRow]
		if err := quant.Quantize(j.to, f, dst); err != nil {
			return buf, e, err
		}
		if j.to == j.from {
			continue
		}
		if err := quant.Dequantize(j.to, dst, back); err != nil {
			return buf, e, err
		}
		for i, x := range f {
			d := float64(back[i]) - float64(x)
			e.err += d * d
			e.ref += float64(x) * float64(x)
		}
		e.n += int64(j.cols)
	}
	return buf, e, nil
}

// Report is a quantization's error by kind of tensor (its name without
// the block number), against the source.
type Report struct {
	mu    sync.Mutex
	kinds map[string]*KindError
}

// KindError is the error of one kind of tensor.
type KindError struct {
	Kind     string
	From, To quant.Type
	Tensors  int
	Values   int64
	sq, ref  float64
}

// RMSE is the root mean square error of the converted values.
func (k KindError) RMSE() float64 { return math.Sqrt(k.sq / float64(max(k.Values, 1))) }

// Relative is the error's norm over the source's.
func (k KindError) Relative() float64 {
	if k.ref == 0 {
		return 0
	}
	return math.Sqrt(k.sq / k.ref)
}

func (r *Report) add(name string, from, to quant.Type, e sqErr) {
	kind := name
	if rest, ok := strings.CutPrefix(name, "blk."); ok {
		if _, after, ok := strings.Cut(rest, "."); ok {
			kind = "blk.*." + after
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kinds == nil {
		r.kinds = map[string]*KindError{}
	}
	k := r.kinds[kind]
	if k == nil {
		k = &KindError{Kind: kind, From: from, To: to}
		r.kinds[kind] = k
	}
	k.Tensors++
	k.Values += e.n
	k.sq += e.err
	k.ref += e.ref
}

// Kinds returns the report's rows, sorted by kind.
func (r *Report) Kinds() []KindError {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]KindError, 0, len(r.kinds))
	for _, k := range r.kinds {
		out = append(out, *k)
	}
	slices.SortFunc(out, func(a, b KindError) int { return strings.Compare(a.Kind, b.Kind) })
	return out
}

// WriteTable prints the report as a table.
func (r *Report) WriteTable(w io.Writer) error {
	if _, err := fmt.Fprintf(w, "%-28s %-6s %-6s %8s %12s %10s\n", "tensor", "from", "to", "tensors", "RMSE", "relative"); err != nil {
		return err
	}
	for _, k := range r.Kinds() {
		if _, err := fmt.Fprintf(w, "%-28s %-6s %-6s %8d %12.3g %9.3f%%\n", k.Kind, k.From, k.To, k.Tensors, k.RMSE(), 100*k.Relative()); err != nil {
			return err
		}
	}
	return nil
}
