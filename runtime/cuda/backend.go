//go:build cgo && linux

package cuda

import (
	"errors"
	"fmt"
	"math"

	"github.com/leo-operator/leo/runtime/cpu"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
)

// Backend runs a model on one GPU: weights, KV cache and the whole forward
// pass there (model.Device). Its per-operation methods are the CPU's, for
// the host-side work around a forward pass (the engine's sampling).
type Backend struct {
	cpu.Backend
	Lib   *Library
	Info  DeviceInfo
	model *deviceModel
	cfg   model.Config
}

var (
	_ model.Backend = (*Backend)(nil)
	_ model.Device  = (*Backend)(nil)
)

// Open loads the library (see Options) and opens its GPU, or says why it
// cannot: the error wraps ErrUnavailable when there is no library or no
// GPU, the cases where the CPU backend is the answer.
func Open(host cpu.Backend, o Options) (*Backend, error) {
	lib, err := find(o.Library)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	n, err := lib.DeviceCount()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, lib.Path, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: %s sees no GPU", ErrUnavailable, lib.Path)
	}
	if o.Device < 0 || o.Device >= n {
		return nil, fmt.Errorf("GPU %d does not exist: %s sees %d", o.Device, lib.Path, n)
	}
	info, err := lib.Device(o.Device)
	if err != nil {
		return nil, err
	}
	if info.CCMajor < 8 {
		return nil, fmt.Errorf("%w: GPU %d (%s) has compute capability %d.%d; leo's kernels need 8.0 or newer",
			ErrUnavailable, o.Device, info.Name, info.CCMajor, info.CCMinor)
	}
	return &Backend{Backend: host, Lib: lib, Info: info}, nil
}

// Supports reports whether the backend computes with weights of type t:
// F16, Q8_0 and Q4_0 natively, the rest converted at upload (deviceType).
func (b *Backend) Supports(t quant.Type) bool {
	switch t {
	case quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q4_0, quant.Q4K, quant.Q6K:
		return true
	}
	return false
}

// The library's numbering of matrices and vectors (leo_cuda.h).
const (
	wQ = iota
	wK
	wV
	wO
	wGate
	wUp
	wDown
	wOutput
)

// How the library rounds a matrix's activations (LEO_ACT_*).
const (
	actDefault = iota
	actQ8K
)

const (
	vAttnNorm = iota
	vFFNNorm
	vOutputNorm
)

// group is matrices the kernels compute together (Q, K, V; gate, up),
// which must share a type on the device.
type group struct {
	layer int
	which []int
	ws    []*model.Weight
}

// deviceType is the type a group of weights gets on the GPU: their own if
// the kernels compute with it and they agree; Q8_0 for quantized weights
// that do not (K-quants, which have no kernels here, or a mix such as
// Q4_K_M's Q4_K and Q6_K): 8.5 bits a weight, where F16 would take 16 and
// be read at half the speed, and a requantization error (a 32-element
// block's maximum/254 at most) far below the 4- or 6-bit quantization the
// file already has; else F16 (F32, BF16, mixes with them).
func deviceType(ws []*model.Weight) quant.Type {
	t := ws[0].Type
	same, quantized := true, true
	for _, w := range ws {
		same = same && w.Type == t
		switch w.Type {
		case quant.Q8_0, quant.Q4_0, quant.Q4K, quant.Q6K:
		default:
			quantized = false
		}
	}
	switch {
	case same && (t == quant.F16 || t == quant.Q8_0 || t == quant.Q4_0):
		return t
	case quantized:
		return quant.Q8_0
	}
	return quant.F16
}

// deviceBytes is what a weight of type t takes on the GPU: as in the file,
// but for the quantized types each row's scales are padded to a multiple of
// 8 blocks (Mat.ds in kernels.cuh).
func deviceBytes(t quant.Type, w *model.Weight) uint64 {
	n, _ := t.RowBytes(w.Cols)
	if t == quant.Q8_0 || t == quant.Q4_0 {
		blocks := w.Cols / 32
		n += ((blocks+7)/8*8 - blocks) * 2
	}
	return uint64(n) * uint64(w.Rows)
}

func (b *Backend) groups(w *model.Weights) []group {
	var gs []group
	for l := range w.Layers {
		L := &w.Layers[l]
		gs = append(gs,
			group{l, []int{wQ, wK, wV}, []*model.Weight{&L.Q, &L.K, &L.V}},
			group{l, []int{wO}, []*model.Weight{&L.O}},
			group{l, []int{wGate, wUp}, []*model.Weight{&L.Gate, &L.Up}},
			group{l, []int{wDown}, []*model.Weight{&L.Down}})
	}
	return append(gs, group{-1, []int{wOutput}, []*model.Weight{&w.Output}})
}

// WeightBytes is what the model's matrices take on the GPU.
func (b *Backend) WeightBytes(w *model.Weights) uint64 {
	var n uint64
	for _, g := range b.groups(w) {
		t := deviceType(g.ws)
		for _, m := range g.ws {
			n += deviceBytes(t, m)
		}
	}
	return n
}

// largestUpload is the largest matrix as uploaded.
func (b *Backend) largestUpload(w *model.Weights) uint64 {
	var n uint64
	for _, g := range b.groups(w) {
		t := deviceType(g.ws)
		for _, m := range g.ws {
			u := uint64(len(m.Data))
			if m.Type != t {
				u = deviceBytes(t, m)
			}
			n = max(n, u)
		}
	}
	return n
}

// Upload copies the weights to the GPU once, after checking that they fit.
func (b *Backend) Upload(c model.Config, w *model.Weights, cos, sin []float32) error {
	if b.model != nil {
		return errors.New("this CUDA backend already holds a model; open one per model")
	}
	info, err := b.Lib.Device(b.Info.Index)
	if err != nil {
		return err
	}
	// Each matrix passes through a staging copy on the device, as the file
	// (or F16) has it: the largest one must fit beside the weights.
	need := b.WeightBytes(w) + b.largestUpload(w)
	const margin = 512 << 20 // the CUDA context, cuBLAS and the first state's buffers
	if need+margin > info.FreeBytes {
		return fmt.Errorf("the model's weights need %.2f GiB of GPU memory, and GPU %d (%s) has %.2f GiB free of %.2f GiB: "+
			"use a smaller quantization (q4_0 takes a quarter of f16) or a GPU with more memory",
			gib(need), info.Index, info.Name, gib(info.FreeBytes), gib(info.MemBytes))
	}
	dm, err := b.Lib.newModel(info.Index, config{
		dim: c.Dim, hidden: c.HiddenDim, layers: c.Layers, heads: c.Heads, kvHeads: c.KVHeads,
		vocab: c.VocabSize, ropeDim: c.RopeDim, context: c.ContextLength, eps: c.NormEps,
	})
	if err != nil {
		return err
	}
	if err := upload(dm, b.groups(w), w, cos, sin); err != nil {
		dm.free()
		return err
	}
	b.model, b.cfg = dm, c
	return nil
}

func upload(dm *deviceModel, gs []group, w *model.Weights, cos, sin []float32) error {
	var conv []byte
	for _, g := range gs {
		t := deviceType(g.ws)
		for i, m := range g.ws {
			act := actDefault
			if t == quant.F16 && (m.Type == quant.Q4K || m.Type == quant.Q6K) {
				act = actQ8K // the CPU's kernels round activations to Q8_K for these
			}
			data := m.Data
			if m.Type != t { // convert on the host
				var err error
				if conv, err = convert(conv, m, t); err != nil {
					return fmt.Errorf("%s: %w", m.Name, err)
				}
				data = conv
			}
			if err := dm.matrix(g.layer, g.which[i], int(t), act, m.Rows, m.Cols, data); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
		}
	}
	for l := range w.Layers {
		if err := dm.vector(l, vAttnNorm, w.Layers[l].AttnNorm); err != nil {
			return err
		}
		if err := dm.vector(l, vFFNNorm, w.Layers[l].FFNNorm); err != nil {
			return err
		}
	}
	if err := dm.vector(-1, vOutputNorm, w.OutputNorm); err != nil {
		return err
	}
	return dm.rope(cos, sin)
}

// f16Max is the largest finite half-precision value.
const f16Max = 65504

// f16Overflow is where rounding to half precision gives infinity.
const f16Overflow = 65520

// convert converts a weight to rows of type t (F16 or Q8_0) in buf (grown
// as needed). A value beyond what t holds is an error, not an infinity
// that would turn the model's outputs to NaN: for F16 a value beyond its
// range (BF16 and F32 have far wider ones), for Q8_0 a block whose scale
// (maximum/127, kept as F16) is, and NaN for both.
func convert(buf []byte, w *model.Weight, t quant.Type) ([]byte, error) {
	in, err := w.Type.RowBytes(w.Cols)
	if err != nil {
		return nil, err
	}
	out, err := t.RowBytes(w.Cols)
	if err != nil {
		return nil, err
	}
	// Values below limit round to at most max: F16's, or Q8_0's 127 steps
	// of an F16 scale.
	limit, most := float64(f16Overflow), float64(f16Max)
	if t == quant.Q8_0 {
		limit, most = limit*127, most*127
	}
	if cap(buf) < out*w.Rows {
		buf = make([]byte, out*w.Rows)
	}
	buf = buf[:out*w.Rows]
	row := make([]float32, w.Cols)
	for r := 0; r < w.Rows; r++ {
		if err := quant.Dequantize(w.Type, w.Data[r*in:(r+1)*in], row); err != nil {
			return nil, err
		}
		for c, v := range row {
			if !(math.Abs(float64(v)) < limit) { // NaN too
				return nil, fmt.Errorf("row %d, column %d holds %g, beyond what the GPU's %s copy of these %s weights holds (±%g); use a file with F16 or quantized weights",
					r, c, v, t, w.Type, most)
			}
		}
		if err := quant.Quantize(t, row, buf[r*out:(r+1)*out]); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// NewDeviceState makes a KV cache of slots sequences of length positions
// and buffers for batches of maxBatch tokens on the GPU.
func (b *Backend) NewDeviceState(slots, length, maxBatch int) (model.DeviceState, error) {
	if b.model == nil {
		return nil, errors.New("no model was uploaded to this CUDA backend")
	}
	s, err := b.model.newState(slots, length, maxBatch, b.cfg.Dim, b.cfg.VocabSize)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Forward implements model.DeviceState.
func (s *deviceState) Forward(x []float32, bt *model.Batch, rows []int) ([]float32, error) {
	if s.p == nil {
		return nil, errors.New("CUDA forward: the state was closed")
	}
	n := len(bt.Tokens)
	copy(s.x, x[:n*s.dim])
	for i := 0; i < n; i++ {
		s.pos[i], s.seq[i] = int32(bt.Pos[i]), int32(bt.Seq[i])
	}
	for i, r := range rows {
		s.rows[i] = int32(r)
	}
	if err := s.forward(n, len(rows)); err != nil {
		return nil, err
	}
	return s.logits[:len(rows)*s.vocab], nil
}

// Close implements model.DeviceState.
func (s *deviceState) Close() error {
	s.free()
	return nil
}

// Close frees the model's weights on the GPU, once the states made from
// it are closed too.
func (b *Backend) Close() error {
	if b.model != nil {
		b.model.release()
		b.model = nil
	}
	return nil
}

// DeviceBytes is what the uploaded model holds on the GPU.
func (b *Backend) DeviceBytes() uint64 {
	if b.model == nil {
		return 0
	}
	return b.model.bytes()
}
