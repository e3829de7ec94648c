package model

import "math"

// The element-wise operations of the forward pass. Their arithmetic
// follows GGML's (float64 sums of squares, (x·scale)·gain) so that results
// stay close to llama.cpp's; a backend's TokenOps (ops, nil for none) may
// do the vector parts, with the same bits.

// rmsNorm writes x / rms(x) ⊙ gain into out.
func rmsNorm(out, x, gain []float32, eps float32, ops TokenOps) {
	var sum float64
	for _, v := range x {
		// Squares in float32, summed in float64 in order, as ggml: the
		// one part left sequential, since reordering would change bits.
		sum += float64(v * v)
	}
	mean := float32(sum / float64(len(x)))
	scale := float32(1 / math.Sqrt(float64(mean+eps)))
	if ops != nil {
		ops.ScaleMulF32(out, x, scale, gain)
		return
	}
	for i, v := range x {
		out[i] = v * scale * gain[i]
	}
}

// add adds y to x element-wise.
func add(x, y []float32, ops TokenOps) {
	if ops != nil {
		ops.AddF32(x, y)
		return
	}
	y = y[:len(x)]
	for i := range x {
		x[i] += y[i]
	}
}

// swiGLU replaces gate with silu(gate) ⊙ up.
func swiGLU(gate, up []float32) {
	up = up[:len(gate)]
	for i, g := range gate {
		gate[i] = g / (1 + float32(math.Exp(float64(-g)))) * up[i]
	}
}
