package model

import "math"

// The element-wise operations of the forward pass. They are cheap next to
// the matrix products, so they are plain Go; their arithmetic follows
// GGML's (float64 sums of squares, (x·scale)·gain) so that results stay
// close to llama.cpp's.

// rmsNorm writes x / rms(x) ⊙ gain into out.
func rmsNorm(out, x, gain []float32, eps float32) {
	var sum float64
	for _, v := range x {
		sum += float64(v * v) // squares in float32, summed in float64, as ggml
	}
	mean := float32(sum / float64(len(x)))
	scale := float32(1 / math.Sqrt(float64(mean+eps)))
	for i, v := range x {
		out[i] = v * scale * gain[i]
	}
}

// add adds y to x element-wise.
func add(x, y []float32) {
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
