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

// rmsNormRows normalizes each row of len(gain) elements.
func rmsNormRows(out, x, gain []float32, eps float32) {
	d := len(gain)
	for r := 0; r+d <= len(x); r += d {
		rmsNorm(out[r:r+d], x[r:r+d], gain, eps)
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

func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// axpy adds a·x to dst.
func axpy(dst []float32, a float32, x []float32) {
	x = x[:len(dst)]
	for i := range dst {
		dst[i] += a * x[i]
	}
}

func scaleVec(x []float32, a float32) {
	for i := range x {
		x[i] *= a
	}
}
