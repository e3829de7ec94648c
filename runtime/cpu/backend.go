package cpu

import (
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
)

// Backend runs the model's forward pass on a Pool.
type Backend struct{ Pool *Pool }

var (
	_ model.Backend     = Backend{}
	_ model.Preparer    = Backend{}
	_ model.SharedInput = Backend{}
	_ model.Splitter    = Backend{}
)

// MatMul multiplies by a model weight; see Pool.MatMul.
func (b Backend) MatMul(dst []float32, w *model.Weight, x []float32, n int) error {
	return b.Pool.MatMul(dst, matrixOf(w), x, n)
}

// MatMuls computes products of the same input together; see Pool.MatMuls.
func (b Backend) MatMuls(x []float32, n int, ps []model.Product) error {
	if len(ps) > MaxProducts {
		for _, pr := range ps {
			if err := b.MatMul(pr.Dst, pr.W, x, n); err != nil {
				return err
			}
		}
		return nil
	}
	var prods [MaxProducts]Product
	for i, pr := range ps {
		prods[i] = Product{Dst: pr.Dst, W: matrixOf(pr.W)}
	}
	return b.Pool.MatMuls(x, n, prods[:len(ps)]...)
}

func matrixOf(w *model.Weight) Matrix {
	if m, ok := w.Prepared.(*Matrix); ok {
		return *m
	}
	return Matrix{Type: w.Type, Rows: w.Rows, Cols: w.Cols, Data: w.Data}
}

// Prepare re-lays out Q4_0 and Q8_0 weights for the lane kernels (see
// Interleave); other weights need nothing.
func (b Backend) Prepare(w *model.Weight) error {
	m := Interleave(Matrix{Type: w.Type, Rows: w.Rows, Cols: w.Cols, Data: w.Data})
	if m.Interleaved {
		w.Prepared = &m
	}
	return nil
}

// Parts returns one backend per thread of the pool, each computing on
// the thread that calls it alone, with scratch of its own (see
// model.Splitter).
func (b Backend) Parts() []model.Backend {
	parts := make([]model.Backend, len(b.Pool.solo))
	for i, p := range b.Pool.solo {
		parts[i] = Backend{Pool: p}
	}
	return parts
}

// Parallel runs body over [0, n) on the pool's threads.
func (b Backend) Parallel(n int, body model.Ranger) { b.Pool.For(n, body) }

// Supports reports whether MatMul handles weights of type t.
func (b Backend) Supports(t quant.Type) bool { return Supported(t) }

// Threads is the pool's thread count.
func (b Backend) Threads() int { return b.Pool.Threads() }

// DotRows is DotRowsF32.
func (b Backend) DotRows(out, q, rows []float32, stride int) { DotRowsF32(out, q, rows, stride) }

// AxpyRows is AxpyRowsF32.
func (b Backend) AxpyRows(dst, w, rows []float32, stride int) { AxpyRowsF32(dst, w, rows, stride) }

// Exp is ExpF32.
func (b Backend) Exp(x []float32) { ExpF32(x) }

// SwiGLU is SwiGLUF32.
func (b Backend) SwiGLU(gate, up []float32) { SwiGLUF32(gate, up) }

// AddF32 is the function AddF32. It, ScaleMulF32 and RopeF32 are the
// per-token work between the products (model.TokenOps).
func (b Backend) AddF32(x, y []float32) { AddF32(x, y) }

// ScaleMulF32 is the function ScaleMulF32.
func (b Backend) ScaleMulF32(out, x []float32, s float32, gain []float32) {
	ScaleMulF32(out, x, s, gain)
}

// RopeF32 is the function RopeF32.
func (b Backend) RopeF32(vec, cos, sin []float32, hd int) { RopeF32(vec, cos, sin, hd) }

// F32ToF16 is the function F32ToF16. It and RoundF16, DotHeadsF16 and
// AxpyHeadsF16 keep the KV cache in half precision (model.HalfKV).
func (b Backend) F32ToF16(dst []uint16, src []float32) { F32ToF16(dst, src) }

// RoundF16 is the function RoundF16.
func (b Backend) RoundF16(x []float32) { RoundF16(x) }

// DotHeadsF16 is the function DotHeadsF16.
func (b Backend) DotHeadsF16(out, q []float32, rows []uint16, stride, heads, group int) {
	DotHeadsF16(out, q, rows, stride, heads, group)
}

// AxpyHeadsF16 is the function AxpyHeadsF16.
func (b Backend) AxpyHeadsF16(out, w []float32, rows []uint16, stride, heads, group int) {
	AxpyHeadsF16(out, w, rows, stride, heads, group)
}
