package cpu

import (
	"fmt"
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
		for _, hd := range []int{8, 16, 24, 48, 64, 72, 128} { // 48: stories15M; the tails of the AVX2 kernels
			for _, g := range []struct{ heads, group int }{{1, 1}, {4, 1}, {4, 2}, {6, 3}} {
				checkHeadKernels(t, r, hd, g.heads, g.group)
			}
		}
	}
}

// checkHeadKernels runs DotHeadsF16 and AxpyHeadsF16 over heads heads
// sharing KV heads in groups of group: against a float64 reference, and
// bit for bit against one call per head (heads 1), which is what an
// attention item of one KV head does.
func checkHeadKernels(t *testing.T, r *rand.Rand, hd, heads, group int) {
	t.Helper()
	const n = 9
	kvHeads := heads / group
	stride := kvHeads*hd + 8 // a cache row holds every KV head, and more
	rows := make([]uint16, (n-1)*stride+kvHeads*hd)
	for j := range rows {
		rows[j] = quant.Float32ToFP16(r.Float32()*2 - 1)
	}
	q, w := make([]float32, heads*hd), make([]float32, n*heads)
	for j := range q {
		q[j] = r.Float32()*2 - 1
	}
	for j := range w {
		w[j] = r.Float32()
	}
	dots := make([]float32, n*heads)
	DotHeadsF16(dots, q, rows, stride, heads, group)
	acc := make([]float32, heads*hd)
	AxpyHeadsF16(acc, w, rows, stride, heads, group)

	what := func(s string) string {
		return fmt.Sprintf("%s, head size %d, %d heads in groups of %d: %s", active.name, hd, heads, group, s)
	}
	for h := 0; h < heads; h++ {
		kv := h / group * hd
		// One head at a time, as an item of one KV head computes it.
		one, oneW := make([]float32, n), make([]float32, n)
		for t2 := range n {
			oneW[t2] = w[t2*heads+h]
		}
		DotHeadsF16(one, q[h*hd:(h+1)*hd], rows[kv:], stride, 1, 1)
		oneAcc := make([]float32, hd)
		AxpyHeadsF16(oneAcc, oneW, rows[kv:], stride, 1, 1)
		for t2 := range n {
			if math.Float32bits(one[t2]) != math.Float32bits(dots[t2*heads+h]) {
				t.Fatalf("%s", what(fmt.Sprintf("head %d position %d: %v with the others, %v alone", h, t2, dots[t2*heads+h], one[t2])))
			}
		}
		sameBits(t, what(fmt.Sprintf("axpy of head %d", h)), hd, n, acc[h*hd:(h+1)*hd], oneAcc)

		wantAcc := make([]float64, hd)
		for t2 := range n {
			var want, mag float64
			for j := range hd {
				v := float64(quant.FP16ToFloat32(rows[t2*stride+kv+j]))
				want += float64(q[h*hd+j]) * v
				mag += math.Abs(float64(q[h*hd+j]) * v)
				wantAcc[j] += float64(w[t2*heads+h]) * v
			}
			if got := dots[t2*heads+h]; math.Abs(float64(got)-want) > 1e-6*mag {
				t.Errorf("%s", what(fmt.Sprintf("dot of head %d position %d = %v, want %v", h, t2, got, want)))
			}
		}
		for j := range hd {
			if math.Abs(float64(acc[h*hd+j])-wantAcc[j]) > 1e-5 {
				t.Errorf("%s", what(fmt.Sprintf("axpy of head %d [%d] = %v, want %v", h, j, acc[h*hd+j], wantAcc[j])))
				break
			}
		}
	}
}

// The per-token element-wise kernels give plain Go's bits: additions,
// RMSNorm's scaling, and RoPE over heads of several sizes, with tails the
// SIMD loops leave and heads whose rotated pairs are fewer than their
// values (partial rotary).
func TestTokenOpsMatchReference(t *testing.T) {
	defer func(a *kernelSet) { active = a }(active)
	r := rand.New(rand.NewPCG(9, 10))
	vals := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = (r.Float32()*2 - 1) * float32(math.Pow(2, float64(r.IntN(20)-10)))
		}
		return v
	}
	for i := range kernelSets {
		active = &kernelSets[i]
		for _, n := range []int{1, 15, 16, 288, 4096 + 7} {
			x, y, gain := vals(n), vals(n), vals(n)
			got, want := append([]float32(nil), x...), append([]float32(nil), x...)
			AddF32(got, y)
			refAddF32(want, y)
			sameBits(t, active.name+" add", 0, n, got, want)
			s := r.Float32() * 3
			got, want = make([]float32, n), make([]float32, n)
			ScaleMulF32(got, x, s, gain)
			refScaleMulF32(want, x, s, gain)
			sameBits(t, active.name+" scaleMul", 0, n, got, want)
		}
		for _, c := range []struct{ heads, hd, pairs int }{{6, 48, 24}, {4, 64, 32}, {2, 128, 64}, {3, 64, 16}, {5, 40, 20}, {1, 16, 3}} {
			vec, cos, sin := vals(c.heads*c.hd), vals(c.pairs), vals(c.pairs)
			got, want := append([]float32(nil), vec...), append([]float32(nil), vec...)
			RopeF32(got, cos, sin, c.hd)
			refRopeF32(want, cos, sin, c.hd)
			sameBits(t, fmt.Sprintf("%s rope %d heads of %d, %d pairs", active.name, c.heads, c.hd, c.pairs), c.hd, c.heads, got, want)
		}
	}
}
