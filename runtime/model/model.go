package model

import (
	"errors"
	"fmt"
	"math"

	"github.com/leo-operator/leo/runtime/quant"
)

// Backend runs the heavy kernels of the forward pass. runtime/cpu provides
// one; a GPU backend provides another.
type Backend interface {
	// MatMul computes dst[t*w.Rows+r] = Σ_c W[r][c]·x[t*w.Cols+c] for the n
	// activation rows of x.
	MatMul(dst []float32, w *Weight, x []float32, n int) error
	// Parallel calls body.Range over disjoint pieces of [0, n) on all
	// threads and returns when all are done.
	Parallel(n int, body Ranger)
	// Threads is the most Range calls Parallel runs at once.
	Threads() int
	// DotRows sets out[t] = q · rows[t*stride : t*stride+len(q)] for t <
	// len(out); AxpyRows adds w[t]·rows[t*stride : t*stride+len(dst)] to
	// dst for t in order. Attention runs on them: one head's keys and
	// values lie in the KV cache a row of all heads apart.
	DotRows(out, q, rows []float32, stride int)
	AxpyRows(dst, w, rows []float32, stride int)
	// Supports reports whether MatMul handles weights of type t.
	Supports(t quant.Type) bool
}

// Preparer is implemented by backends that convert weights once, at load
// time, into a form of their own (e.g. re-laid out for their kernels, or
// copied to a device), stored in Weight.Prepared.
type Preparer interface {
	Prepare(w *Weight) error
}

// ElementWise is implemented by backends with fast element-wise kernels;
// without them the model computes in plain Go. Both must give what the
// plain Go gives, float32(math.Exp(float64(x))) for e^x, but for rare
// 1-ulp differences: agreement with llama.cpp on small quantized models
// proved sensitive to even 1-ulp errors in every exponential.
type ElementWise interface {
	// Exp replaces x[i] with e^x[i] (softmax; arguments are <= 0).
	Exp(x []float32)
	// SwiGLU replaces gate[i] with silu(gate[i])·up[i].
	SwiGLU(gate, up []float32)
}

// TokenOps is implemented by backends with vector kernels for the
// per-token element-wise work between the products; they must give the
// plain Go's bits (ops.go), every product and sum rounded in its order.
type TokenOps interface {
	// AddF32 adds y[i] to x[i].
	AddF32(x, y []float32)
	// ScaleMulF32 writes (x[i]·s)·gain[i] into out[i].
	ScaleMulF32(out, x []float32, s float32, gain []float32)
	// RopeF32 rotates the pairs i < len(cos) of each head of hd values:
	// (x0·c − x1·s, x0·s + x1·c).
	RopeF32(vec, cos, sin []float32, hd int)
}

// HalfKV is implemented by backends that can keep the KV cache in half
// precision, as llama.cpp does by default: half the memory, and half the
// bytes attention reads. As in GGML, the query and the attention weights
// are rounded to half precision where they meet the cache.
//
// DotHeadsF16 and AxpyHeadsF16 work on several heads of one token at once
// (head h reads KV head h/group), position by position, so that each row
// of the cache is read in one pass: out[t*heads+h] = q_h · k_t,h, and
// out_h += Σ_t w[t*heads+h]·v_t,h in order of t.
type HalfKV interface {
	F32ToF16(dst []uint16, src []float32)
	RoundF16(x []float32)
	DotHeadsF16(out, q []float32, rows []uint16, stride, heads, group int)
	AxpyHeadsF16(out, w []float32, rows []uint16, stride, heads, group int)
}

// Device is implemented by backends that run the whole forward pass on an
// accelerator (runtime/cuda): a step there is one launch, where an
// operation at a time would cross to the device dozens of times a layer.
// Upload takes the place of Preparer: it copies the weights once, with the
// RoPE tables (cos, sin at [pos*RopeDim/2 + i]) so that rotations agree
// with the CPU's. Each State then keeps its KV cache on the device.
type Device interface {
	Upload(c Config, w *Weights, cos, sin []float32) error
	NewDeviceState(slots, length, maxBatch int) (DeviceState, error)
}

// DeviceState is a State's KV cache and buffers on a Device.
type DeviceState interface {
	// Forward runs the tokens of b, whose embeddings are x (a row of Dim
	// per token), and returns the logits of the batch indices in rows, a
	// row of VocabSize each, in a slice reused by the next call.
	Forward(x []float32, b *Batch, rows []int) ([]float32, error)
	// Close frees the device memory.
	Close() error
}

// Product is one of several matrix products of the same input.
type Product struct {
	Dst []float32
	W   *Weight
}

// SharedInput is implemented by backends that compute several products of
// one input together, e.g. quantizing the input once (the query, key and
// value projections, or the gate and up projections).
type SharedInput interface {
	MatMuls(x []float32, n int, ps []Product) error
}

// Splitter is implemented by backends that can run a batch in parts, one
// part per thread, each part's kernels on its thread alone (see
// State.Forward). Parts returns one single-threaded backend per thread,
// each with scratch of its own; the same ones every call.
type Splitter interface {
	Parts() []Backend
}

// Ranger is a piece of parallel work over an index range.
type Ranger interface{ Range(start, end int) }

// Model is a loaded Llama model: its shape, its weights and the backend
// that computes with them. It holds no per-sequence state, so several
// States can share it (one at a time: a Model is not safe for concurrent
// Forward calls on different States because they share the backend).
type Model struct {
	Config  Config
	Weights Weights
	backend Backend

	// ropeCos and ropeSin hold cos(p·θ_i) and sin(p·θ_i) for every position
	// p < ContextLength and frequency i < RopeDim/2, computed once.
	ropeCos, ropeSin []float32
}

// New checks that the weights fit the shape and the backend, and returns
// a model ready for Forward.
func New(c Config, w Weights, b Backend) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if len(w.Layers) != c.Layers {
		return nil, fmt.Errorf("model has %d layers of weights, shape says %d", len(w.Layers), c.Layers)
	}
	if w.Output.Data == nil {
		w.Output = w.TokenEmbedding // tied embeddings: the classifier is the embedding table
	}
	for _, s := range w.specs(c) {
		if s.vector != nil {
			if len(*s.vector) != s.cols {
				return nil, fmt.Errorf("tensor %s has %d elements, want %d", s.name, len(*s.vector), s.cols)
			}
			continue
		}
		m := s.matrix
		if m.Rows != s.rows || m.Cols != s.cols {
			return nil, fmt.Errorf("tensor %s is %d×%d, want %d×%d for this shape", s.name, m.Rows, m.Cols, s.rows, s.cols)
		}
		if !b.Supports(m.Type) {
			return nil, fmt.Errorf("tensor %s has type %s, which this backend cannot compute with", s.name, m.Type)
		}
		rowBytes, err := m.Type.RowBytes(m.Cols)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", s.name, err)
		}
		if len(m.Data) != rowBytes*m.Rows {
			return nil, fmt.Errorf("tensor %s holds %d bytes, want %d", s.name, len(m.Data), rowBytes*m.Rows)
		}
	}
	if _, err := w.TokenEmbedding.Type.RowBytes(c.Dim); err != nil || !canDequantize(w.TokenEmbedding.Type) {
		return nil, fmt.Errorf("token_embd.weight has type %s, which leo cannot read rows of", w.TokenEmbedding.Type)
	}
	m := &Model{Config: c, Weights: w, backend: b}
	m.ropeCos, m.ropeSin = ropeTables(c)
	if d, ok := b.(Device); ok {
		if err := d.Upload(c, &m.Weights, m.ropeCos, m.ropeSin); err != nil {
			return nil, err
		}
		return m, nil
	}
	if p, ok := b.(Preparer); ok {
		for _, s := range m.Weights.specs(c) {
			// The embedding table is only read row by row (embed uses
			// Data); when it is also the classifier, Output is prepared.
			if s.matrix != nil && s.matrix.Data != nil && s.matrix != &m.Weights.TokenEmbedding {
				if err := p.Prepare(s.matrix); err != nil {
					return nil, fmt.Errorf("tensor %s: %w", s.name, err)
				}
			}
		}
	}
	return m, nil
}

func canDequantize(t quant.Type) bool {
	switch t {
	case quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q4_0, quant.Q4K, quant.Q6K:
		return true
	}
	return false
}

// ropeTables computes the rotary embedding's cos/sin for every position
// and frequency as GGML does: θ_i = p·base^(-2i/d), the power taken by
// repeated float32 multiplication so that positions rotate exactly as in
// llama.cpp.
func ropeTables(c Config) (cos, sin []float32) {
	half := c.RopeDim / 2
	cos = make([]float32, c.ContextLength*half)
	sin = make([]float32, c.ContextLength*half)
	scale := float32(math.Pow(float64(c.RopeBase), -2/float64(c.RopeDim)))
	for p := 0; p < c.ContextLength; p++ {
		theta := float32(p)
		for i := 0; i < half; i++ {
			cos[p*half+i] = float32(math.Cos(float64(theta)))
			sin[p*half+i] = float32(math.Sin(float64(theta)))
			theta *= scale
		}
	}
	return cos, sin
}

// Batch is a set of tokens to run through the model at once: each token
// has a position in its sequence and the sequence's KV cache slot. Tokens
// of one sequence must be in position order.
type Batch struct {
	Tokens []int32
	Pos    []int // position of each token in its sequence, from 0
	Seq    []int // KV cache slot of each token's sequence
	// Logits marks the tokens whose next-token logits are wanted; nil
	// means only the last token's.
	Logits []bool
}

// wantsLogits reports whether token i's logits are wanted.
func (b *Batch) wantsLogits(i int) bool {
	if b.Logits == nil {
		return i == len(b.Tokens)-1
	}
	return b.Logits[i]
}

// ErrContextFull is returned when a position does not fit the KV cache.
var ErrContextFull = errors.New("context is full")

func (b *Batch) check(s *State) error {
	n := len(b.Tokens)
	switch {
	case n == 0:
		return errors.New("batch has no tokens")
	case n > s.maxBatch:
		return fmt.Errorf("batch has %d tokens, this state takes at most %d", n, s.maxBatch)
	case len(b.Pos) != n || len(b.Seq) != n || (b.Logits != nil && len(b.Logits) != n):
		return fmt.Errorf("batch has %d tokens but %d positions, %d sequence slots and %d logit flags", n, len(b.Pos), len(b.Seq), len(b.Logits))
	}
	for i, t := range b.Tokens {
		if t < 0 || int(t) >= s.m.Config.VocabSize {
			return fmt.Errorf("token %d at batch index %d is not in the vocabulary of %d tokens", t, i, s.m.Config.VocabSize)
		}
		if b.Seq[i] < 0 || b.Seq[i] >= s.Cache.Slots {
			return fmt.Errorf("sequence slot %d at batch index %d is not one of the %d slots", b.Seq[i], i, s.Cache.Slots)
		}
		if b.Pos[i] < 0 || b.Pos[i] >= s.Cache.Len {
			return fmt.Errorf("position %d at batch index %d: %w (%d positions)", b.Pos[i], i, ErrContextFull, s.Cache.Len)
		}
	}
	return nil
}

// Cache holds the keys and values of every position of every sequence
// slot, per layer: K[l][(slot*Len+pos)*KVDim : …+KVDim], in float32 (K, V)
// or, when Type is F16, in half precision (K16, V16).
type Cache struct {
	Slots, Len, KVDim int
	Type              quant.Type
	K, V              [][]float32
	K16, V16          [][]uint16
}

func newCache(c Config, slots, length int, t quant.Type) *Cache {
	kc := &Cache{Slots: slots, Len: length, KVDim: c.KVDim(), Type: t}
	n := slots * length * kc.KVDim
	for range c.Layers {
		if t == quant.F16 {
			kc.K16, kc.V16 = append(kc.K16, make([]uint16, n)), append(kc.V16, make([]uint16, n))
		} else {
			kc.K, kc.V = append(kc.K, make([]float32, n)), append(kc.V, make([]float32, n))
		}
	}
	return kc
}

// offset is where position pos of a slot starts in a layer's K or V.
func (kc *Cache) offset(slot, pos int) int { return (slot*kc.Len + pos) * kc.KVDim }

// store writes the keys and values of one position.
func (kc *Cache) store(b Backend, l, slot, pos int, k, v []float32) {
	off := kc.offset(slot, pos)
	if kc.Type == quant.F16 {
		h := b.(HalfKV)
		h.F32ToF16(kc.K16[l][off:off+kc.KVDim], k)
		h.F32ToF16(kc.V16[l][off:off+kc.KVDim], v)
		return
	}
	copy(kc.K[l][off:off+kc.KVDim], k)
	copy(kc.V[l][off:off+kc.KVDim], v)
}

// Bytes is the cache's memory.
func (kc *Cache) Bytes() int64 {
	return int64(len(kc.K)+len(kc.K16)) * 2 * int64(kc.Slots*kc.Len*kc.KVDim) * int64(kc.Type.BlockBytes())
}

// State is what running the model needs besides the weights: the KV cache
// and scratch buffers sized once for the largest batch, so that Forward
// allocates nothing.
type State struct {
	m        *Model
	maxBatch int
	Cache    *Cache      // on the host; for a Device, only its shape
	dev      DeviceState // the cache and buffers on a Device, or nil
	rows     []int       // batch indices of the tokens that want logits
	closed   bool

	x      []float32 // residual stream [n×Dim]
	xb     []float32 // normalized input of a sublayer [n×Dim]
	xb2    []float32 // attention output before projection [n×Dim]
	q      []float32 // queries [n×Dim]
	k, v   []float32 // new keys and values [n×KVDim]
	hb     []float32 // SwiGLU gate [n×HiddenDim]
	hb2    []float32 // SwiGLU up [n×HiddenDim]
	sel    []float32 // final hidden states of the tokens that want logits
	logits []float32 // [tokens wanting logits × Vocab]
	attn   attention
	prods  []Product // the products of one input, reused
	glu    gluJob
	tok    tokenJob

	// parts run a batch of several sequences one part per thread (see
	// Forward); nil when the weights are too big for it or the backend
	// cannot. Each shares the cache and has scratch of its own.
	parts   []*State
	partRun partJob
}

// elementwiseChunk is how many elements one piece of parallel
// element-wise work covers.
const elementwiseChunk = 4096

// gluJob applies swiGLU to pieces of gate and up in parallel: with a
// prompt's many tokens it is millions of exponentials.
type gluJob struct {
	m        *Model
	gate, up []float32
}

func (g *gluJob) Range(start, end int) {
	lo, hi := start*elementwiseChunk, min(end*elementwiseChunk, len(g.gate))
	if lo >= hi {
		return
	}
	if ew, ok := g.m.backend.(ElementWise); ok {
		ew.SwiGLU(g.gate[lo:hi], g.up[lo:hi])
		return
	}
	swiGLU(g.gate[lo:hi], g.up[lo:hi])
}

// tokenJob is the per-token work between the matrix products of a layer
// (normalization, residual additions, RoPE and the KV cache's store), on
// all threads when the batch has tokens enough: else the calling thread
// does it while the others wait (with 16 sequences of a small model, some
// 5% of a decode step). Each token's arithmetic is the same either way.
type tokenJob struct {
	s     *State
	b     *Batch
	op    tokenOp
	layer int
	gain  []float32
}

type tokenOp int

const (
	tokNorm    tokenOp = iota // xb = norm(x)
	tokAddNorm                // x += xb, then xb = norm(x)
	tokAdd                    // x += xb
	tokRope                   // rotate q and k, store k and v in the cache
)

// parallelTokens is the fewest tokens for which tokens runs on all
// threads: below, a token's work (a microsecond or less for small models)
// costs less than waking the threads.
const parallelTokens = 4

// tokens runs op on every token of b.
func (s *State) tokens(b *Batch, op tokenOp, layer int, gain []float32) {
	j := &s.tok
	j.s, j.b, j.op, j.layer, j.gain = s, b, op, layer, gain
	if n := len(b.Tokens); n >= parallelTokens && s.m.backend.Threads() > 1 {
		s.m.backend.Parallel(n, j)
	} else {
		j.Range(0, n)
	}
	j.b, j.gain = nil, nil
}

func (j *tokenJob) Range(start, end int) {
	s, m := j.s, j.s.m
	ops, _ := m.backend.(TokenOps)
	dim, kvDim := m.Config.Dim, m.Config.KVDim()
	eps := m.Config.NormEps
	for i := start; i < end; i++ {
		x, xb := s.x[i*dim:(i+1)*dim], s.xb[i*dim:(i+1)*dim]
		switch j.op {
		case tokNorm:
			rmsNorm(xb, x, j.gain, eps, ops)
		case tokAddNorm:
			add(x, xb, ops)
			rmsNorm(xb, x, j.gain, eps, ops)
		case tokAdd:
			add(x, xb, ops)
		case tokRope:
			pos := j.b.Pos[i]
			k := s.k[i*kvDim : (i+1)*kvDim]
			m.rope(s.q[i*dim:(i+1)*dim], pos, ops)
			m.rope(k, pos, ops)
			s.Cache.store(m.backend, j.layer, j.b.Seq[i], pos, k, s.v[i*kvDim:(i+1)*kvDim])
		}
	}
}

// Parallel runs body.Range over [0, n) on the backend's threads (for work
// between forward passes, such as sampling each sequence of a batch).
func (m *Model) Parallel(n int, body Ranger) { m.backend.Parallel(n, body) }

// NewState makes a state for up to slots sequences of up to length
// positions each (at most the model's context length), fed at most
// maxBatch tokens per Forward call, with a float32 KV cache.
func (m *Model) NewState(slots, length, maxBatch int) (*State, error) {
	return m.NewStateKV(slots, length, maxBatch, quant.F32)
}

// NewStateKV is NewState with a KV cache of type kv: F32, or F16 where
// the backend implements HalfKV.
func (m *Model) NewStateKV(slots, length, maxBatch int, kv quant.Type) (*State, error) {
	c := m.Config
	switch _, half := m.backend.(HalfKV); {
	case kv == quant.F16 && !half:
		return nil, errors.New("this backend cannot keep the KV cache in F16; use F32")
	case kv != quant.F32 && kv != quant.F16:
		return nil, fmt.Errorf("the KV cache can be F32 or F16, not %s", kv)
	}
	if length <= 0 || length > c.ContextLength {
		return nil, fmt.Errorf("context size %d must be in [1, %d], the model's context length", length, c.ContextLength)
	}
	if slots <= 0 || maxBatch <= 0 {
		return nil, fmt.Errorf("need at least one sequence slot and a batch of one token (got %d slots, batch %d)", slots, maxBatch)
	}
	if d, ok := m.backend.(Device); ok {
		ds, err := d.NewDeviceState(slots, length, maxBatch)
		if err != nil {
			return nil, err
		}
		// The device keeps its cache in F16 whatever kv asks: half the
		// memory, and what llama.cpp keeps on GPUs too.
		return &State{
			m: m, maxBatch: maxBatch, dev: ds,
			Cache: &Cache{Slots: slots, Len: length, KVDim: c.KVDim(), Type: quant.F16},
			x:     make([]float32, maxBatch*c.Dim), rows: make([]int, 0, maxBatch),
		}, nil
	}
	s := newHostState(m, newCache(c, slots, length, kv), maxBatch)
	// The final hidden states and logits of a batch: its parts', when it
	// is split, go here too.
	s.sel = make([]float32, maxBatch*c.Dim)
	s.logits = make([]float32, maxBatch*c.VocabSize)
	if sp, ok := m.backend.(Splitter); ok && m.backend.Threads() > 1 && m.Weights.matrixBytes(c) <= splitMaxWeightBytes {
		for _, pb := range sp.Parts() {
			view := *m // the same weights, computed on one thread
			view.backend = pb
			s.parts = append(s.parts, newHostState(&view, s.Cache, maxBatch))
		}
		s.partRun.s = s
	}
	return s, nil
}

// newHostState makes a state computing on the host with cache kc and
// scratch for batches of up to maxBatch tokens, all but the final hidden
// states and the logits.
func newHostState(m *Model, kc *Cache, maxBatch int) *State {
	c, n := m.Config, maxBatch
	s := &State{
		m: m, maxBatch: n, Cache: kc,
		x: make([]float32, n*c.Dim), xb: make([]float32, n*c.Dim), xb2: make([]float32, n*c.Dim),
		q: make([]float32, n*c.Dim), k: make([]float32, n*c.KVDim()), v: make([]float32, n*c.KVDim()),
		hb: make([]float32, n*c.HiddenDim), hb2: make([]float32, n*c.HiddenDim),
	}
	s.attn.s = s
	s.glu.m = m
	s.prods = make([]Product, 0, 4)
	// One score buffer per thread that may run attention at once.
	threads := max(1, m.backend.Threads())
	s.attn.scratch = make(chan *attnScratch, threads)
	for i := 0; i < threads; i++ {
		s.attn.scratch <- &attnScratch{
			scores: make([]float32, kc.Len*c.Heads), maxes: make([]float32, c.Heads), sums: make([]float64, c.Heads),
		}
	}
	return s
}

// splitMaxWeightBytes bounds the weights for which a batch runs in parts
// (see Forward): each thread then reads every layer's weights each step
// (the classifier's once, shared), which costs little while they stay in
// the last-level cache (32 MiB on a core
// complex of current AMD EPYCs and on many Xeons) and would double the
// memory traffic of a big model, whose steps are bound by it.
const splitMaxWeightBytes = 32 << 20

// minPartTokens is the fewest tokens a part of a split batch may have:
// the CPU's many-token kernels take 8 tokens per pass over the weights, so
// a part of fewer would read the weights for less work.
const minPartTokens = 8

// Forward runs the batch through the model, appending its keys and values
// to the cache, and returns the logits of the tokens that want them, one
// row of VocabSize per such token in batch order. The returned slice is
// reused by the next call.
//
// A batch of several sequences with tokens enough runs in parts when the
// state has them (small models on the CPU): each thread computes whole
// sequences through every layer, alone, instead of all threads sharing
// each of the sixty or so kernels of a step and meeting after each; then
// all threads compute the classifier for the whole batch. With 16
// sequences of a stories15M-sized model, the meetings and the serial work
// between them left a thread idle a quarter of the time. The tokens of a
// sequence stay in one part, so each sequence gets what it gets alone
// wherever a token's arithmetic does not depend on its batch (the CPU's
// Q8_0 and Q4_0 kernels; its F16 and F32 ones round a many-token tile
// differently from one token, split or not).
func (s *State) Forward(b *Batch) ([]float32, error) {
	if s.closed {
		return nil, errors.New("the state was closed")
	}
	if err := b.check(s); err != nil {
		return nil, err
	}
	if s.parts != nil { // host states only
		if cuts := s.split(b); cuts != nil {
			return s.forwardParts(b, cuts)
		}
	}
	return s.forward(b)
}

// forward runs a checked batch, writing the logits into s.logits.
func (s *State) forward(b *Batch) ([]float32, error) {
	if s.dev != nil {
		x, err := s.embedBatch(b)
		if err != nil {
			return nil, err
		}
		n := len(b.Tokens)
		s.rows = s.rows[:0]
		for i := 0; i < n; i++ {
			if b.wantsLogits(i) {
				s.rows = append(s.rows, i)
			}
		}
		return s.dev.Forward(x, b, s.rows)
	}
	rows, err := s.layers(b, s.sel)
	if err != nil {
		return nil, err
	}
	if rows == 0 {
		return s.logits[:0], nil
	}
	return s.classify(rows)
}

// embedBatch writes the embeddings of b's tokens into the residual
// stream s.x and returns its rows in use.
func (s *State) embedBatch(b *Batch) ([]float32, error) {
	dim := s.m.Config.Dim
	x := s.x[:len(b.Tokens)*dim]
	for i, tok := range b.Tokens {
		if err := s.m.embed(x[i*dim:(i+1)*dim], tok); err != nil {
			return nil, err
		}
	}
	return x, nil
}

// classify computes the logits of the first rows final hidden states in
// s.sel into s.logits.
func (s *State) classify(rows int) ([]float32, error) {
	c := s.m.Config
	logits := s.logits[:rows*c.VocabSize]
	if err := s.m.backend.MatMul(logits, &s.m.Weights.Output, s.sel[:rows*c.Dim], rows); err != nil {
		return nil, err
	}
	return logits, nil
}

// layers runs a checked batch on the host through every layer and
// writes the normalized final hidden states of the tokens that want
// logits into sel, one row of Dim each in batch order; it returns how
// many rows it wrote.
func (s *State) layers(b *Batch, sel []float32) (int, error) {
	m, c := s.m, s.m.Config
	n, dim, kvDim, hidden := len(b.Tokens), c.Dim, c.KVDim(), c.HiddenDim
	x, err := s.embedBatch(b)
	if err != nil {
		return 0, err
	}
	xb := s.xb[:n*dim]
	layers := m.Weights.Layers
	s.tokens(b, tokNorm, 0, layers[0].AttnNorm)
	for l := range layers {
		w := &layers[l]

		// Attention: x += O · attention(rope(Q·norm(x)), rope(K·norm(x)), V·norm(x)).
		q, k, v := s.q[:n*dim], s.k[:n*kvDim], s.v[:n*kvDim]
		s.prods = append(s.prods[:0], Product{q, &w.Q}, Product{k, &w.K}, Product{v, &w.V})
		if err := m.matMuls(xb, n, s.prods); err != nil {
			return 0, err
		}
		s.tokens(b, tokRope, l, nil)
		s.attn.layer, s.attn.batch = l, b
		m.backend.Parallel(s.attn.items(n), &s.attn)
		if err := m.backend.MatMul(xb, &w.O, s.xb2[:n*dim], n); err != nil {
			return 0, err
		}
		s.tokens(b, tokAddNorm, l, w.FFNNorm)

		// Feed-forward: x += Down · (silu(Gate·norm(x)) ⊙ Up·norm(x)).
		hb, hb2 := s.hb[:n*hidden], s.hb2[:n*hidden]
		s.prods = append(s.prods[:0], Product{hb, &w.Gate}, Product{hb2, &w.Up})
		if err := m.matMuls(xb, n, s.prods); err != nil {
			return 0, err
		}
		s.glu.gate, s.glu.up = hb, hb2
		m.backend.Parallel(len(hb)/elementwiseChunk+1, &s.glu)
		if err := m.backend.MatMul(xb, &w.Down, hb, n); err != nil {
			return 0, err
		}
		if l+1 < len(layers) {
			s.tokens(b, tokAddNorm, l, layers[l+1].AttnNorm)
		} else {
			s.tokens(b, tokAdd, l, nil)
		}
	}

	// The final norm only for the tokens that want logits.
	ops, _ := m.backend.(TokenOps)
	rows := 0
	for i := 0; i < n; i++ {
		if b.wantsLogits(i) {
			rmsNorm(sel[rows*dim:(rows+1)*dim], x[i*dim:(i+1)*dim], m.Weights.OutputNorm, c.NormEps, ops)
			rows++
		}
	}
	return rows, nil
}

// split returns where to cut b into len(s.parts) parts of about as many
// tokens each, each of at least minPartTokens tokens and ending where a
// sequence ends (cuts[i] is the end of part i), or nil when b cannot be
// split so. No slot may have tokens in two parts: a part reads the cache
// positions its own tokens write.
//
// Every token costs its layers about the same (attention's share, which
// grows with the position, is some 2% at stories15M's 256 positions); the
// classifier, which costs more than the layers for a small model's large
// vocabulary, runs after the parts on all threads (forwardParts).
func (s *State) split(b *Batch) []int {
	k, n := len(s.parts), len(b.Tokens)
	if n < k*minPartTokens || !s.slotsContiguous(b) {
		return nil
	}
	cuts := s.partRun.cuts[:0]
	start := 0
	for p := 0; p < k-1; p++ {
		// The sequence boundary nearest this part's share of the tokens
		// left, leaving the parts after it their fewest tokens.
		share := (n - start) / (k - p)
		limit := n - (k-p-1)*minPartTokens // < n: end below indexes b
		best, bestGap := -1, n
		for end := start + minPartTokens; end <= limit; end++ {
			if b.Seq[end] != b.Seq[end-1] {
				if gap := abs(end - start - share); gap < bestGap {
					best, bestGap = end, gap
				}
			}
		}
		if best < 0 {
			return nil
		}
		cuts = append(cuts, best)
		start = best
	}
	cuts = append(cuts, n)
	s.partRun.cuts = cuts // reused by the next step
	return cuts
}

func abs(v int) int { return max(v, -v) }

// slotsContiguous reports whether the tokens of each slot in b are next
// to each other (as the engine batches them), so that any cut between two
// slots' tokens leaves each slot in one part.
func (s *State) slotsContiguous(b *Batch) bool {
	j := &s.partRun
	if len(j.seen) < s.Cache.Slots {
		j.seen = make([]bool, s.Cache.Slots)
	}
	ok := true
	for i, slot := range b.Seq {
		if i > 0 && slot == b.Seq[i-1] {
			continue
		}
		if j.seen[slot] {
			ok = false
			break
		}
		j.seen[slot] = true
	}
	for _, slot := range b.Seq {
		j.seen[slot] = false
	}
	return ok
}

// forwardParts runs the layers of the parts of b that cuts delimits, one
// part per thread, each writing the final hidden states of its tokens
// that want logits where they fall in the whole batch's; then the
// classifier on all threads at once, for all the batch's rows. That reads
// the classifier's weights once a step rather than once a part (for
// stories15M they are 60% of the weights) and with more tokens a pass.
func (s *State) forwardParts(b *Batch, cuts []int) ([]float32, error) {
	j := &s.partRun
	dim := s.m.Config.Dim
	j.batches, j.sels, j.errs = j.batches[:0], j.sels[:0], j.errs[:0]
	flags := b.Logits
	if flags == nil { // only the last token's logits
		n := len(b.Tokens)
		if cap(j.marks) < n {
			j.marks = make([]bool, n)
		}
		flags = j.marks[:n]
		clear(flags)
		flags[n-1] = true
	}
	start, rows := 0, 0
	for _, end := range cuts {
		pb := Batch{Tokens: b.Tokens[start:end], Pos: b.Pos[start:end], Seq: b.Seq[start:end], Logits: flags[start:end]}
		want := 0
		for _, w := range pb.Logits {
			if w {
				want++
			}
		}
		j.batches = append(j.batches, pb)
		j.sels = append(j.sels, s.sel[rows*dim:(rows+want)*dim:(rows+want)*dim])
		j.errs = append(j.errs, nil)
		start, rows = end, rows+want
	}
	s.m.backend.Parallel(len(cuts), j)
	for i := range j.batches {
		j.batches[i] = Batch{}
		if j.errs[i] != nil {
			return nil, j.errs[i]
		}
	}
	if rows == 0 {
		return s.logits[:0], nil
	}
	return s.classify(rows)
}

// partJob runs the layers of parts of a split batch, each on the state
// of its index.
type partJob struct {
	s       *State
	cuts    []int
	batches []Batch
	sels    [][]float32 // where each part's final hidden states go
	errs    []error
	marks   []bool // logit flags for a batch whose Logits is nil
	seen    []bool // per slot, for slotsContiguous
}

func (j *partJob) Range(start, end int) {
	for p := start; p < end; p++ {
		_, j.errs[p] = j.s.parts[p].layers(&j.batches[p], j.sels[p])
	}
}

// Close frees what the state holds outside Go's heap (a Device's cache);
// the state is unusable afterwards.
func (s *State) Close() error {
	s.closed = true
	if s.dev == nil {
		return nil
	}
	err := s.dev.Close()
	s.dev = nil
	return err
}

// matMuls computes products of the same input, together where the
// backend can.
func (m *Model) matMuls(x []float32, n int, products []Product) error {
	if b, ok := m.backend.(SharedInput); ok {
		return b.MatMuls(x, n, products)
	}
	for _, p := range products {
		if err := m.backend.MatMul(p.Dst, p.W, x, n); err != nil {
			return err
		}
	}
	return nil
}

// embed writes token tok's embedding row into dst.
func (m *Model) embed(dst []float32, tok int32) error {
	e := &m.Weights.TokenEmbedding
	rowBytes, _ := e.Type.RowBytes(e.Cols)
	return quant.Dequantize(e.Type, e.Data[int(tok)*rowBytes:(int(tok)+1)*rowBytes], dst)
}

// rope rotates each head of vec (queries or keys of one token) by its
// position: adjacent pairs (x[2i], x[2i+1]) turn by angle pos·θ_i, as in
// the GGUF and llama2.c weight layouts.
func (m *Model) rope(vec []float32, pos int, ops TokenOps) {
	hd, half := m.Config.HeadDim(), m.Config.RopeDim/2
	cos, sin := m.ropeCos[pos*half:(pos+1)*half], m.ropeSin[pos*half:(pos+1)*half]
	if ops != nil {
		ops.RopeF32(vec, cos, sin, hd)
		return
	}
	for h := 0; h < len(vec); h += hd {
		for i := 0; i < half; i++ {
			x0, x1 := vec[h+2*i], vec[h+2*i+1]
			// Each product rounded (float32()), never fused into a
			// multiply-add: TokenOps kernels give these bits.
			vec[h+2*i] = float32(x0*cos[i]) - float32(x1*sin[i])
			vec[h+2*i+1] = float32(x0*sin[i]) + float32(x1*cos[i])
		}
	}
}

// attention computes, for each token of the batch and each head,
// softmax(q·Kᵀ/√d)·V over the token's sequence up to its own position,
// into State.xb2. It is a Ranger over work items of one token and a run
// of KV heads (with the query heads that read them): all of them when
// there are tokens enough to keep every thread busy, so that a
// half-precision cache row is read in one pass, else one.
type attention struct {
	s         *State
	layer     int
	batch     *Batch
	kvPerItem int
	scratch   chan *attnScratch // free scratch, one per thread
}

// attnScratch is one thread's room for the scores of a work item, laid
// out position by position (scores[t*heads+h]), and per-head sums.
type attnScratch struct {
	scores, maxes []float32
	sums          []float64
}

// items sets the work items of a batch of n tokens and returns how many.
func (a *attention) items(n int) int {
	c := a.s.m.Config
	a.kvPerItem = 1
	if n >= 2*a.s.m.backend.Threads() {
		a.kvPerItem = c.KVHeads
	}
	return n * (c.KVHeads / a.kvPerItem)
}

// Range computes the work items [start, end), numbered token*(KVHeads /
// kvPerItem) + run, as GGML does without flash attention: all scores,
// their maximum, float32 exponentials summed in float64, then the
// weighted sum of the values.
func (a *attention) Range(start, end int) {
	sc := <-a.scratch
	defer func() { a.scratch <- sc }()
	s, c, b := a.s, a.s.m.Config, a.s.m.backend
	hd, group := c.HeadDim(), c.Heads/c.KVHeads
	scale := float32(1 / math.Sqrt(float64(hd)))
	kc := s.Cache
	runs := c.KVHeads / a.kvPerItem
	for p := start; p < end; p++ {
		i, k0 := p/runs, (p%runs)*a.kvPerItem
		h0, heads := k0*group, a.kvPerItem*group
		q := s.q[i*c.Dim+h0*hd : i*c.Dim+(h0+heads)*hd]
		out := s.xb2[i*c.Dim+h0*hd : i*c.Dim+(h0+heads)*hd]
		slot, n := a.batch.Seq[i], a.batch.Pos[i]+1
		// The run's keys and values of positions 0..n-1, rows KVDim apart.
		first, last := kc.offset(slot, 0)+k0*hd, kc.offset(slot, n-1)+(k0+a.kvPerItem)*hd
		clear(out)
		if kc.Type == quant.F16 {
			half := b.(HalfKV)
			w := sc.scores[:n*heads]
			half.RoundF16(q)
			half.DotHeadsF16(w, q, kc.K16[a.layer][first:last], kc.KVDim, heads, group)
			softmax(b, w, heads, scale, sc)
			half.RoundF16(w)
			half.AxpyHeadsF16(out, w, kc.V16[a.layer][first:last], kc.KVDim, heads, group)
			continue
		}
		// Float32: one head at a time.
		for h := 0; h < heads; h++ {
			kv := h / group * hd
			w := sc.scores[:n]
			b.DotRows(w, q[h*hd:(h+1)*hd], kc.K[a.layer][first+kv:last], kc.KVDim)
			softmax(b, w, 1, scale, sc)
			b.AxpyRows(out[h*hd:(h+1)*hd], w, kc.V[a.layer][first+kv:last], kc.KVDim)
		}
	}
}

// softmax turns the scores w[t*heads+h] of each head into its attention
// weights: scaled, minus the head's maximum, exponentials summed in
// float64, normalized.
func softmax(b Backend, w []float32, heads int, scale float32, sc *attnScratch) {
	maxes, sums := sc.maxes[:heads], sc.sums[:heads]
	for h := range maxes {
		maxes[h] = float32(math.Inf(-1))
		sums[h] = 0
	}
	for t := 0; t < len(w); t += heads {
		for h, v := range w[t : t+heads] {
			v *= scale
			w[t+h] = v
			maxes[h] = max(maxes[h], v)
		}
	}
	for t := 0; t < len(w); t += heads {
		for h := range maxes {
			w[t+h] -= maxes[h]
		}
	}
	if ew, ok := b.(ElementWise); ok {
		ew.Exp(w)
	} else {
		for t, v := range w {
			w[t] = float32(math.Exp(float64(v)))
		}
	}
	for t := 0; t < len(w); t += heads {
		for h, e := range w[t : t+heads] {
			sums[h] += float64(e)
		}
	}
	inv := maxes // the maxima are no longer needed
	for h, sum := range sums {
		inv[h] = float32(1 / sum)
	}
	for t := 0; t < len(w); t += heads {
		for h, f := range inv {
			w[t+h] *= f
		}
	}
}
