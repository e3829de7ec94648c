package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/leo-operator/leo/runtime/quant"
)

// The row kernels of attention give bit for bit what one DotF32 or
// AxpyF32 call per row gives, in every kernel set, for head sizes the
// assembly takes (multiples of 32) and others.
func TestRowKernelsMatchOneCallPerRow(t *testing.T) {
	defer func(a *kernelSet) { active = a }(active)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range kernelSets {
		active = &kernelSets[i]
		for _, hd := range []int{16, 32, 64, 100, 128} {
			for _, n := range []int{1, 7, 33} {
				stride := hd*3 + 8
				rows := make([]float32, (n-1)*stride+hd)
				q, w := make([]float32, hd), make([]float32, n)
				for j := range rows {
					rows[j] = r.Float32()*2 - 1
				}
				for j := range q {
					q[j] = r.Float32()*2 - 1
				}
				for j := range w {
					w[j] = r.Float32()
				}
				got, want := make([]float32, n), make([]float32, n)
				DotRowsF32(got, q, rows, stride)
				for j := range want {
					want[j] = DotF32(q, rows[j*stride:j*stride+hd])
				}
				sameBits(t, active.name+" dot rows", hd, n, got, want)

				got, want = make([]float32, hd), make([]float32, hd)
				copy(got, q)
				copy(want, q)
				AxpyRowsF32(got, w, rows, stride)
				for j, a := range w {
					AxpyF32(want, a, rows[j*stride:j*stride+hd])
				}
				sameBits(t, active.name+" axpy rows", hd, n, got, want)
			}
		}
	}
}

func sameBits(t *testing.T, what string, hd, n int, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Errorf("%s, head size %d, %d rows: [%d] = %v, one call per row gives %v", what, hd, n, i, got[i], want[i])
			return
		}
	}
}

func TestSwiGLUMatchesReference(t *testing.T) {
	defer func(a *kernelSet) { active = a }(active)
	r := rand.New(rand.NewPCG(5, 6))
	n := 100000 + 3 // a tail the SIMD loop leaves
	gate, up := make([]float32, n), make([]float32, n)
	for i := range gate {
		gate[i], up[i] = r.Float32()*40-20, r.Float32()*4-2
	}
	want := append([]float32(nil), gate...)
	refSwiGLUF32(want, up)
	for i := range kernelSets {
		active = &kernelSets[i]
		got := append([]float32(nil), gate...)
		SwiGLUF32(got, up)
		sameBits(t, active.name+" swiGLU", 0, n, got, want)
	}
}

// ExpF32 gives float32(math.Exp(float64(x))) in all but rare cases, and
// then 1 ulp off, over softmax's range and beyond (to 0 and +Inf).
func TestExpMatchesFloat64(t *testing.T) {
	defer func(a *kernelSet) { active = a }(active)
	r := rand.New(rand.NewPCG(3, 4))
	x := []float32{0, 1, -1, 88.7, 88.8, 89, -87.3, -103, -104, -120, 200, -1e-10, 1e-10}
	for range 1 << 20 {
		x = append(x, r.Float32()*200-110)
	}
	for range 1 << 18 {
		x = append(x, -r.Float32()*20) // softmax's usual arguments
	}
	for i := range kernelSets {
		active = &kernelSets[i]
		got := append([]float32(nil), x...)
		ExpF32(got)
		off := 0
		for j, v := range x {
			want := float32(math.Exp(float64(v)))
			if math.Float32bits(got[j]) == math.Float32bits(want) {
				continue
			}
			off++
			if d := int64(math.Float32bits(got[j])) - int64(math.Float32bits(want)); d > 1 || d < -1 || math.IsInf(float64(want), 0) || want == 0 {
				t.Errorf("%s: exp(%v) = %v, want %v", active.name, v, got[j], want)
			}
		}
		if off > len(x)/100000 {
			t.Errorf("%s: %d of %d values differ from float32(math.Exp(float64(x)))", active.name, off, len(x))
		}
		t.Logf("%s: %d of %d values 1 ulp off", active.name, off, len(x))
	}
}

// The half-precision KV kernels: conversion and rounding bit for bit as
// GGML's scalar conversion, row kernels within float32 summation error
// of a float64 reference.
func TestHalfPrecisionKV(t *testing.T) {
	defer func(a *kernelSet) { active = a }(active)
	r := rand.New(rand.NewPCG(7, 8))
	src := make([]float32, 1003)
	for i := range src {
		src[i] = (r.Float32()*2 - 1) * float32(math.Pow(2, float64(r.IntN(40)-20)))
	}
	src[0], src[1], src[2] = 70000, -1e-8, 6.1e-5 // beyond fp16's range, subnormal
	for i := range kernelSets {
		active = &kernelSets[i]
		h := make([]uint16, len(src))
		F32ToF16(h, src)
		rounded := append([]float32(nil), src...)
		RoundF16(rounded)
		for j, v := range src {
			if h[j] != quant.Float32ToFP16(v) || math.Float32bits(rounded[j]) != math.Float32bits(quant.FP16ToFloat32(quant.Float32ToFP16(v))) {
				t.Fatalf("%s: %v converts to %#04x / rounds to %v, want %#04x", active.name, v, h[j], rounded[j], quant.Float32ToFP16(v))
			}
		}
		for _, hd := range []int{16, 64, 128} {
			const n, stride = 9, 300
			rows := make([]uint16, (n-1)*stride+hd)
			for j := range rows {
				rows[j] = quant.Float32ToFP16(r.Float32()*2 - 1)
			}
			q, w := make([]float32, hd), make([]float32, n)
			for j := range q {
				q[j] = r.Float32()*2 - 1
			}
			for j := range w {
				w[j] = r.Float32()
			}
			dots := make([]float32, n)
			DotRowsF16(dots, q, rows, stride)
			acc := make([]float32, hd)
			AxpyRowsF16(acc, w, rows, stride)
			wantAcc := make([]float64, hd)
			for t2 := 0; t2 < n; t2++ {
				var want, mag float64
				for j := range q {
					v := float64(quant.FP16ToFloat32(rows[t2*stride+j]))
					want += float64(q[j]) * v
					mag += math.Abs(float64(q[j]) * v)
					wantAcc[j] += float64(w[t2]) * v
				}
				if math.Abs(float64(dots[t2])-want) > 1e-6*mag {
					t.Errorf("%s, head size %d: dot row %d = %v, want %v", active.name, hd, t2, dots[t2], want)
				}
			}
			for j := range acc {
				if math.Abs(float64(acc[j])-wantAcc[j]) > 1e-5 {
					t.Errorf("%s, head size %d: axpy [%d] = %v, want %v", active.name, hd, j, acc[j], wantAcc[j])
					break
				}
			}
		}
	}
}
