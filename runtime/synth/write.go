package synth

import (
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"

	"github.com/leo-operator/leo/runtime/gguf"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/tokenizer"
)

// Options say what model to generate.
type Options struct {
	Name   string       // shape name, recorded as general.name
	Config model.Config // the shape
	Type   quant.Type   // file type: one of FileTypes
	Seed   uint64       // same seed, same shape, same type: same bytes
	Vocab  tokenizer.Vocab
	// Progress, when set, is called after each tensor with the bytes of
	// tensor data written so far and in all.
	Progress func(done, total int64)
}

// ftype is llama.cpp's general.file_type for each file type (llama_ftype).
var ftype = map[quant.Type]uint32{
	quant.F32: 0, quant.F16: 1, quant.Q4_0: 2, quant.Q8_0: 7, quant.Q4K: 14, quant.Q6K: 18, quant.BF16: 32,
}

// FileTypeID is llama.cpp's general.file_type value for a file of type t.
func FileTypeID(t quant.Type) uint32 { return ftype[t] }

// Write generates the model and writes it to path as GGUF (atomically: a
// failed run leaves no file under that name).
func Write(path string, o Options) error {
	w, err := NewWriter(o)
	if err != nil {
		return err
	}
	return w.WriteFile(path)
}

// NewWriter returns a GGUF writer holding the generated model's metadata
// and tensors; tensor data is generated as it is written.
func NewWriter(o Options) (*gguf.Writer, error) {
	c := o.Config
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if _, ok := ftype[o.Type]; !ok {
		return nil, fmt.Errorf("cannot generate %s files; types: %v", o.Type, FileTypes)
	}
	if len(o.Vocab.Tokens) != c.VocabSize {
		return nil, fmt.Errorf("vocabulary has %d tokens, shape %s needs %d", len(o.Vocab.Tokens), o.Name, c.VocabSize)
	}
	w := gguf.NewWriter()
	w.SetString("general.architecture", "llama")
	w.SetString("general.name", fmt.Sprintf("leo synthetic %s %s (random weights, seed %d)", o.Name, o.Type, o.Seed))
	w.SetUint32("general.file_type", FileTypeID(o.Type))
	if o.Type.BlockElems() > 1 {
		w.SetUint32("general.quantization_version", 2)
	}
	model.WriteConfig(w, c)
	tokenizer.WriteGGUF(w, o.Vocab)

	var total int64
	specs := model.Tensors(c)
	for _, s := range specs {
		t := TensorType(o.Type, s)
		rowBytes, err := t.RowBytes(s.Cols)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", s.Name, err)
		}
		total += int64(rowBytes * s.Rows)
	}
	var done int64
	for _, s := range specs {
		t := TensorType(o.Type, s)
		shape := []uint64{uint64(s.Cols)}
		if !s.Vector {
			shape = append(shape, uint64(s.Rows))
		}
		err := w.AddTensor(s.Name, t, shape, func(out io.Writer) error {
			n, err := writeTensor(out, s, t, o.Seed)
			done += n
			if o.Progress != nil {
				o.Progress(done, total)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return w, nil
}

// writeTensor generates a tensor row by row and writes it in type t.
// Values: norm gains in [0.8, 1.2]; the embedding uniform in ±1; matrices
// uniform in ±a/√cols, with a = 1 inside the network (activations keep
// their scale) and a = 8 for the classifier, so that random models have
// peaked next-token distributions like trained ones rather than flat ones.
func writeTensor(out io.Writer, s model.TensorSpec, t quant.Type, seed uint64) (int64, error) {
	h := fnv.New64a()
	_, _ = io.WriteString(h, s.Name) // writing to a hash never fails
	rng := rand.New(rand.NewPCG(seed, h.Sum64()))
	lo, span := float32(-1), float32(2)
	switch {
	case s.Vector:
		lo, span = 0.8, 0.4
	case s.Name == "token_embd.weight":
	default:
		a := float32(1 / math.Sqrt(float64(s.Cols)))
		if s.Name == "output.weight" {
			a *= 8
		}
		lo, span = -a, 2*a
	}
	row := make([]float32, s.Cols)
	rowBytes, _ := t.RowBytes(s.Cols)
	buf := make([]byte, rowBytes)
	var n int64
	for r := 0; r < s.Rows; r++ {
		for i := range row {
			row[i] = lo + span*rng.Float32()
		}
		if err := quant.Quantize(t, row, buf); err != nil {
			return n, err
		}
		m, err := out.Write(buf)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
