package synth

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"

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
// and tensors; tensor data is generated as it is written, on all CPUs (see
// generator), with the same bytes whatever their number. The writer must not
// be written from two goroutines at once.
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

	specs := model.Tensors(c)
	g, err := newGenerator(specs, o)
	if err != nil {
		return nil, err
	}
	for i, s := range specs {
		shape := []uint64{uint64(s.Cols)}
		if !s.Vector {
			shape = append(shape, uint64(s.Rows))
		}
		if err := w.AddTensor(s.Name, g.types[i], shape, func(out io.Writer) error { return g.write(i, out) }); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// maxAhead bounds the bytes of tensor data generated ahead of the writer
// (being generated, or ready and not yet written) and of buffers kept for
// reuse, to within a tensor's size. A tensor larger than that is still
// generated, alone.
var maxAhead int64 = 2 << 30

// chunkElems is how many values of a tensor are generated at a time. The
// values come from one random stream, so they are drawn in order; but each
// chunk of whole rows may be quantized on another CPU while the next chunk
// is drawn (what makes the tensors of quantized types fast: Q6_K and Q4_K
// take 15 to 30 times as long to quantize a value as to draw it).
const chunkElems = 1 << 16

// generator makes the tensors of one NewWriter's file.
//
// Tensor data is generated ahead of the GGUF writer, which asks for each
// tensor's bytes in file order: when it asks for the first, goroutines start
// generating tensors into buffers, in file order, up to GOMAXPROCS at a time
// and up to maxAhead bytes generated or being generated but not yet written;
// the writer takes each buffer when it is ready. Each tensor has its own
// random stream (seeded by the seed and its name), so the bytes do not
// depend on the order or the number of CPUs. No goroutine waits for the
// writer: when writing fails midway, the writer asks for no more tensors,
// the goroutines finish the tensors they are on, and nothing is left
// running.
type generator struct {
	specs    []model.TensorSpec
	types    []quant.Type
	sizes    []int64 // bytes of each tensor's data
	total    int64
	seed     uint64
	progress func(done, total int64)

	pass *genPass // the writer's pass over the tensors; nil before the first
}

func newGenerator(specs []model.TensorSpec, o Options) (*generator, error) {
	g := &generator{
		specs: specs, types: make([]quant.Type, len(specs)), sizes: make([]int64, len(specs)),
		seed: o.Seed, progress: o.Progress,
	}
	for i, s := range specs {
		t := TensorType(o.Type, s)
		rowBytes, err := t.RowBytes(s.Cols)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", s.Name, err)
		}
		g.types[i] = t
		g.sizes[i] = int64(rowBytes * s.Rows)
		g.total += g.sizes[i]
	}
	return g, nil
}

// write is tensor i's callback for the GGUF writer.
func (g *generator) write(i int, out io.Writer) error {
	p := g.pass
	if p == nil || p.want != i {
		// The first pass, or the file written again (i = 0) after a pass
		// that ended or failed, or (not how gguf.Writer calls) a tensor out
		// of order: a new pass from tensor i. An earlier pass's goroutines
		// finish the tensors they are on and exit.
		p = g.newPass(i)
		g.pass = p
	}
	data, err := p.take(i)
	if err != nil {
		return err
	}
	n, err := out.Write(data)
	p.release(data)
	p.done += int64(n)
	if g.progress != nil {
		g.progress(p.done, g.total)
	}
	return err
}

// genPass is one pass of the writer over the tensors, from the one it first
// asked for. Only the writer's goroutine uses its fields, except that the
// goroutine generating tensor j sets results[j] before sending j on
// finished.
type genPass struct {
	g        *generator
	workers  int
	want     int   // the tensor the writer will ask for next
	next     int   // the next tensor to start generating
	running  int   // tensors being generated (started, not yet received on finished)
	ahead    int64 // bytes of the buffers of tensors started and not yet written
	done     int64 // bytes written, for Progress
	ready    []bool
	results  []genResult
	bufs     [][]byte      // data buffers of tensors written, for tensors to come
	bufBytes int64         // their capacity in all
	finished chan int      // capacity workers ≥ running: a send never blocks
	cpus     chan struct{} // one token per CPU, held by a tensor's goroutine or a quantizing helper
}

type genResult struct {
	data []byte
	err  error
}

func (g *generator) newPass(from int) *genPass {
	w := max(1, runtime.GOMAXPROCS(0))
	p := &genPass{
		g: g, workers: w, want: from, next: from,
		ready: make([]bool, len(g.specs)), results: make([]genResult, len(g.specs)),
		finished: make(chan int, w), cpus: make(chan struct{}, w),
	}
	for _, n := range g.sizes[:from] {
		p.done += n
	}
	return p
}

// start starts generating the next tensors while workers and maxAhead
// allow (a reused buffer may be larger than its tensor: what is ahead may
// pass maxAhead by up to a tensor's size). The tensor the writer wants is
// always started: everything started before it has been written, so
// nothing is ahead.
func (p *genPass) start() {
	for p.next < len(p.g.specs) && p.running < p.workers &&
		(p.ahead == 0 || p.ahead+p.g.sizes[p.next] <= maxAhead) {
		j := p.next
		p.next++
		p.running++
		go p.generate(j, p.buffer(p.g.sizes[j]))
	}
}

// buffer returns a buffer for n bytes of tensor data, counting it as ahead:
// the smallest of the written tensors' buffers that holds n bytes and not
// twice as many, or nil for a new one, and then it drops kept buffers so
// that they and the tensors ahead stay within maxAhead. Reusing buffers
// spares the page faults of fresh memory, which on a file of gigabytes take
// as much CPU as generating some of the types.
func (p *genPass) buffer(n int64) []byte {
	best := -1
	for k, b := range p.bufs {
		if c := int64(cap(b)); c >= n && c <= 2*n && (best < 0 || c < int64(cap(p.bufs[best]))) {
			best = k
		}
	}
	if best >= 0 {
		b := p.bufs[best]
		p.bufs = slices.Delete(p.bufs, best, best+1)
		p.bufBytes -= int64(cap(b))
		p.ahead += int64(cap(b))
		return b[:n]
	}
	p.ahead += n
	for len(p.bufs) > 0 && p.ahead+p.bufBytes > maxAhead {
		p.bufBytes -= int64(cap(p.bufs[0]))
		p.bufs = slices.Delete(p.bufs, 0, 1)
	}
	return nil
}

// take waits for tensor i, the one the writer wants, and returns its bytes.
func (p *genPass) take(i int) ([]byte, error) {
	p.start()
	for !p.ready[i] {
		j := <-p.finished
		p.running--
		p.ready[j] = true
		p.start()
	}
	r := p.results[i]
	p.results[i] = genResult{}
	p.want = i + 1
	return r.data, r.err
}

// release says a tensor is written: its buffer data no longer counts as
// ahead, and is kept for a tensor to come if maxAhead allows.
func (p *genPass) release(data []byte) {
	p.ahead -= int64(cap(data))
	if p.ahead+p.bufBytes+int64(cap(data)) <= maxAhead {
		p.bufs = append(p.bufs, data)
		p.bufBytes += int64(cap(data))
	}
	p.start()
}

// generate generates tensor j into data (a reused buffer of its size) or,
// when data is nil, a new one.
func (p *genPass) generate(j int, data []byte) {
	p.cpus <- struct{}{}
	if data == nil {
		data = make([]byte, p.g.sizes[j])
	} else {
		clear(data) // as a new buffer is: the bytes must not depend on what was there
	}
	err := genTensor(data, p.g.specs[j], p.g.types[j], p.g.seed, p.cpus)
	<-p.cpus
	p.results[j] = genResult{data: data, err: err}
	p.finished <- j
}

// genTensor generates a tensor into dst, row by row in type t. Values: norm
// gains in [0.8, 1.2]; the embedding uniform in ±1; matrices uniform in
// ±a/√cols, with a = 1 inside the network (activations keep their scale)
// and a = 8 for the classifier, so that random models have peaked
// next-token distributions like trained ones rather than flat ones.
//
// The values are drawn in order, a chunk of rows at a time; a chunk is
// quantized here or, when a token can be taken from cpus without waiting
// (a CPU is idle), by a helper goroutine while the next chunk is drawn.
func genTensor(dst []byte, s model.TensorSpec, t quant.Type, seed uint64, cpus chan struct{}) error {
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
	rowBytes := len(dst) / s.Rows
	rows := max(1, chunkElems/s.Cols) // rows per chunk
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		helpErr error
	)
	vals := getFloats(rows * s.Cols)
	for r0 := 0; r0 < s.Rows; r0 += rows {
		n := min(rows, s.Rows-r0)
		chunk := vals[:n*s.Cols]
		for i := range chunk {
			chunk[i] = lo + span*rng.Float32()
		}
		part := dst[r0*rowBytes : (r0+n)*rowBytes]
		if r0+n < s.Rows { // the last chunk is quantized here: nothing is left to draw
			select {
			case cpus <- struct{}{}:
				wg.Add(1)
				go func(vals []float32) {
					defer wg.Done()
					err := quantizeRows(t, chunk, part, s.Cols)
					<-cpus
					putFloats(vals)
					if err != nil {
						mu.Lock()
						helpErr = cmp.Or(helpErr, err)
						mu.Unlock()
					}
				}(vals)
				vals = getFloats(rows * s.Cols)
				continue
			default:
			}
		}
		if err := quantizeRows(t, chunk, part, s.Cols); err != nil {
			wg.Wait()
			return err
		}
	}
	putFloats(vals)
	wg.Wait()
	return helpErr
}

// quantizeRows quantizes vals, whole rows of cols values, into dst, a row at
// a time.
func quantizeRows(t quant.Type, vals []float32, dst []byte, cols int) error {
	rowBytes := len(dst) / (len(vals) / cols)
	for r := 0; r < len(vals)/cols; r++ {
		if err := quant.Quantize(t, vals[r*cols:(r+1)*cols], dst[r*rowBytes:(r+1)*rowBytes]); err != nil {
			return err
		}
	}
	return nil
}

// floats holds chunk buffers of chunkElems values (a chunk is smaller
// unless a row is longer, and then its buffer is not kept).
var floats = sync.Pool{New: func() any { return new([chunkElems]float32) }}

func getFloats(n int) []float32 {
	if n > chunkElems {
		return make([]float32, n)
	}
	return floats.Get().(*[chunkElems]float32)[:]
}

func putFloats(v []float32) {
	if cap(v) == chunkElems {
		floats.Put((*[chunkElems]float32)(v[:chunkElems]))
	}
}
