package cpu

import (
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
)

// Backend runs the model's forward pass on a Pool.
type Backend struct{ Pool *Pool }

var _ model.Backend = Backend{}

// MatMul multiplies by a model weight; see Pool.MatMul.
func (b Backend) MatMul(dst []float32, w *model.Weight, x []float32, n int) error {
	return b.Pool.MatMul(dst, Matrix{Type: w.Type, Rows: w.Rows, Cols: w.Cols, Data: w.Data}, x, n)
}

// Parallel runs body over [0, n) on the pool's threads.
func (b Backend) Parallel(n int, body model.Ranger) { b.Pool.For(n, body) }

// Supports reports whether MatMul handles weights of type t.
func (b Backend) Supports(t quant.Type) bool { return Supported(t) }

// Threads is the pool's thread count.
func (b Backend) Threads() int { return b.Pool.Threads() }
