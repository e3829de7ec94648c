package synth

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/leo-operator/leo/runtime/gguf"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/tokenizer"
)

// refWriter is NewWriter as it was before tensors were generated in
// parallel, one row at a time as the writer asks: the bytes it writes are
// the ones files made before have, which the same seed must still give.
func refWriter(t *testing.T, o Options) *gguf.Writer {
	t.Helper()
	c := o.Config
	w := gguf.NewWriter()
	w.SetString("general.architecture", "llama")
	w.SetString("general.name", fmt.Sprintf("leo synthetic %s %s (random weights, seed %d)", o.Name, o.Type, o.Seed))
	w.SetUint32("general.file_type", FileTypeID(o.Type))
	if o.Type.BlockElems() > 1 {
		w.SetUint32("general.quantization_version", 2)
	}
	model.WriteConfig(w, c)
	tokenizer.WriteGGUF(w, o.Vocab)
	for _, s := range model.Tensors(c) {
		typ := TensorType(o.Type, s)
		shape := []uint64{uint64(s.Cols)}
		if !s.Vector {
			shape = append(shape, uint64(s.Rows))
		}
		if err := w.AddTensor(s.Name, typ, shape, func(out io.Writer) error {
			return refWriteTensor(out, s, typ, o.Seed)
		}); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// refWriteTensor is the generator as it was (its count of bytes written
// aside).
func refWriteTensor(out io.Writer, s model.TensorSpec, t quant.Type, seed uint64) error {
	h := fnv.New64a()
	_, _ = io.WriteString(h, s.Name)
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
	for r := 0; r < s.Rows; r++ {
		for i := range row {
			row[i] = lo + span*rng.Float32()
		}
		if err := quant.Quantize(t, row, buf); err != nil {
			return err
		}
		if _, err := out.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

func options(t *testing.T, shape string, typ quant.Type, seed uint64) Options {
	t.Helper()
	c, err := Shape(shape)
	if err != nil {
		t.Fatal(err)
	}
	vocab, err := Llama2Vocab()
	if err != nil {
		t.Fatal(err)
	}
	return Options{Name: shape, Config: c, Type: typ, Seed: seed, Vocab: vocab}
}

// small is options for the test-gqa shape with its vocabulary cut to 1000
// tokens: tensors of a few rows to a few chunks, quick to make in every
// type.
func small(t *testing.T, typ quant.Type, seed uint64) Options {
	t.Helper()
	o := options(t, "test-gqa", typ, seed)
	const n = 1000
	o.Name = "test-gqa-small"
	o.Config.VocabSize = n
	o.Vocab.Tokens = o.Vocab.Tokens[:n]
	if o.Vocab.Scores != nil {
		o.Vocab.Scores = o.Vocab.Scores[:n]
	}
	if o.Vocab.Types != nil {
		o.Vocab.Types = o.Vocab.Types[:n]
	}
	return o
}

func writeAll(t *testing.T, w *gguf.Writer) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := w.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// checkNoGoroutines fails unless the goroutines come back to at most n
// within a few seconds (generators finish the tensor they are on).
func checkNoGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines are left running, want at most %d:\n%s",
				runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWriteSameBytes: the file is byte for byte the one the sequential
// generator wrote, for every file type, whatever the CPUs and the bytes
// allowed ahead of the writer.
func TestWriteSameBytes(t *testing.T) {
	type test struct {
		name string
		o    Options
	}
	tests := []test{{"test-gqa/Q8_0", options(t, "test-gqa", quant.Q8_0, 3)}}
	for _, typ := range FileTypes {
		tests = append(tests, test{"small/" + typ.String(), small(t, typ, 42)})
	}
	for _, c := range tests {
		t.Run(c.name, func(t *testing.T) {
			o := c.o
			want := writeAll(t, refWriter(t, o))
			w, err := NewWriter(o)
			if err != nil {
				t.Fatal(err)
			}
			if got := writeAll(t, w); !bytes.Equal(got, want) {
				t.Fatal("the file differs from the sequential generator's")
			}
			if c.name != "small/Q4_0" {
				return
			}
			// Again, from the same Writer (a new pass, reusing nothing of
			// the last), on one CPU, and with one tensor ahead at a time.
			if got := writeAll(t, w); !bytes.Equal(got, want) {
				t.Fatal("the file written a second time differs")
			}
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			if got := writeAll(t, w); !bytes.Equal(got, want) {
				t.Fatal("the file written on one CPU differs")
			}
			runtime.GOMAXPROCS(4)
			defer func(m int64) { maxAhead = m }(maxAhead)
			maxAhead = 1
			if got := writeAll(t, w); !bytes.Equal(got, want) {
				t.Fatal("the file written one tensor at a time differs")
			}
		})
	}
}

// TestWriteProgress: Progress is called once per tensor, in order, with
// bytes written growing to the total.
func TestWriteProgress(t *testing.T) {
	o := small(t, quant.Q8_0, 1)
	var calls []int64
	var total int64
	o.Progress = func(done, all int64) {
		if len(calls) > 0 && done < calls[len(calls)-1] {
			t.Errorf("progress went back from %d to %d", calls[len(calls)-1], done)
		}
		calls = append(calls, done)
		total = all
	}
	w, err := NewWriter(o)
	if err != nil {
		t.Fatal(err)
	}
	writeAll(t, w)
	specs := model.Tensors(o.Config)
	if len(calls) != len(specs) {
		t.Fatalf("progress was called %d times for %d tensors", len(calls), len(specs))
	}
	var want int64
	for i, s := range specs {
		rowBytes, _ := TensorType(o.Type, s).RowBytes(s.Cols)
		want += int64(rowBytes * s.Rows)
		if calls[i] != want {
			t.Errorf("after %s progress says %d bytes, want %d", s.Name, calls[i], want)
		}
	}
	if total != want {
		t.Errorf("progress says %d bytes in all, want %d", total, want)
	}
}

// failingWriter fails once more than n bytes are written to it.
type failingWriter struct{ n int }

var errFull = errors.New("disk full")

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		k := f.n
		f.n = 0
		return k, errFull
	}
	f.n -= len(p)
	return len(p), nil
}

// TestWriteFails: a write that fails midway returns the error, leaves no
// goroutine running, and the same Writer then writes the whole file.
func TestWriteFails(t *testing.T) {
	// Failures midway through the tensors: the writer buffers 1 MB, so
	// the file must be some MB; four CPUs, so that tensors are being made
	// ahead when it fails.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	o := options(t, "test-gqa", quant.Q8_0, 9)
	want := writeAll(t, refWriter(t, o))
	before := runtime.NumGoroutine()
	w, err := NewWriter(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []int{len(want) / 3, len(want) / 2, len(want) - 100} {
		if _, err := w.WriteTo(&failingWriter{n: at}); !errors.Is(err, errFull) {
			t.Fatalf("writing %d bytes of %d: error %v, want %v", at, len(want), err, errFull)
		}
		checkNoGoroutines(t, before)
	}
	if got := writeAll(t, w); !bytes.Equal(got, want) {
		t.Fatal("the file written after failed writes differs")
	}
	checkNoGoroutines(t, before)
}

// TestWriteAhead: the tensors made ahead of the writer and the buffers
// kept for reuse stay within maxAhead and a tensor; the bytes are the same.
func TestWriteAhead(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	o := small(t, quant.F32, 5)
	specs := model.Tensors(o.Config)
	var want bytes.Buffer
	for _, s := range specs {
		if err := refWriteTensor(&want, s, TensorType(o.Type, s), o.Seed); err != nil {
			t.Fatal(err)
		}
	}
	g, err := newGenerator(specs, o)
	if err != nil {
		t.Fatal(err)
	}
	largest := slices.Max(g.sizes)
	for _, limit := range []int64{1, largest, 3 * largest / 2, 4 * largest, 1 << 40} {
		defer func(m int64) { maxAhead = m }(maxAhead)
		maxAhead = limit
		var got bytes.Buffer
		for i := range specs {
			if err := g.write(i, &got); err != nil {
				t.Fatal(err)
			}
			p := g.pass
			if held := p.ahead + p.bufBytes; held > max(limit, 0)+largest {
				t.Errorf("maxAhead %d: after tensor %d, %d bytes are held", limit, i, held)
			}
			if p.running > p.workers {
				t.Errorf("maxAhead %d: after tensor %d, %d tensors are being made by %d workers", limit, i, p.running, p.workers)
			}
		}
		if g.pass.ahead != 0 || g.pass.running != 0 {
			t.Errorf("maxAhead %d: at the end %d bytes are ahead and %d tensors being made", limit, g.pass.ahead, g.pass.running)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Errorf("maxAhead %d: the tensor data differs", limit)
		}
	}
}
