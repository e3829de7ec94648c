//go:build amd64 && !purego

package cpu

import "golang.org/x/sys/cpu"

// The assembly kernels (kernels_amd64.s) come in two levels:
//
//   - avx2: AVX2, FMA and F16C, as on every x86-64 CPU since 2013-15.
//     Signed-byte dot products use VPMADDUBSW the way ggml's AVX2 code does.
//   - avx512vnni: adds AVX-512 BW/VL/VNNI (Ice Lake, Zen 4 and later):
//     VPDPBUSD multiplies and sums four byte pairs into an int32 in one
//     instruction, and the Q4_0/Q8_0 matrix-matrix kernels tile 4 rows × 4
//     tokens in 16 of the 32 vector registers, so each weight block is
//     decoded once for four tokens.
//
// K-quant and float kernels have one (avx2) version, used at both levels.

func platformKernels() []kernelSet {
	sets := []kernelSet{goKernels}
	if !cpu.X86.HasAVX2 || !cpu.X86.HasFMA || cpuid1ECX()&(1<<29) == 0 { // bit 29: F16C
		return sets
	}
	avx2 := kernelSet{
		name:     "avx2",
		q40Vec4:  q8Vec4(q40x4AVX2),
		q80Vec4:  q8Vec4(q80x4AVX2),
		q4KVec1:  kDot(q4KDotAVX2),
		q6KVec1:  kDot(q6KDotAVX2),
		f32Vec4:  fVec4(f32x4AVX2, 4, refF32Dot),
		f16Vec4:  fVec4(f16x4AVX2, 2, refF16Dot),
		bf16Vec4: fVec4(bf16x4AVX2, 2, refBF16Dot),
		dot:      dotAVX2,
		axpy:     axpyAVX2,
		dotRows:  dotRowsAVX2,
		axpyRows: axpyRowsAVX2,
		exp:      expAVX2,
		swiGLU:   swiGLUAVX2,
		add:      refAddF32,
		scaleMul: refScaleMulF32,
		rope:     refRopeF32,

		f32ToF16:     f32ToF16,
		roundF16:     roundF16,
		dotHeadsF16:  dotHeadsF16,
		axpyHeadsF16: axpyHeadsF16,
	}
	sets = append(sets, avx2)
	if cpu.X86.HasAVX512VNNI && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512BW {
		vnni := avx2
		vnni.name = "avx512vnni"
		vnni.q40Vec4 = q8Vec4(q40x4VNNI)
		vnni.q80Vec4 = q8Vec4(q80x4VNNI)
		vnni.q40Tile = q8Tile(q40x4x4VNNI)
		vnni.q80Tile = q8Tile(q80x4x4VNNI)
		vnni.q40TileZ = q8Tile(q40x4x4Z)
		vnni.q80TileZ = q8Tile(q80x4x4Z)
		vnni.f32Tile4 = fTile4(f32x4x4AVX512, 4, refF32Dot)
		vnni.f16Tile4 = fTile4(f16x4x4AVX512, 2, refF16Dot)
		vnni.quantLane = quantLane
		if cpu.X86.HasAVX512DQ { // VCVTPD2QQ
			vnni.exp, vnni.swiGLU = expAVX512, swiGLUAVX512
		}
		vnni.add, vnni.scaleMul, vnni.rope = addAVX512, scaleMulAVX512, ropeAVX512
		vnni.q40LaneVec = laneVec(q40LaneVec, q40LaneGroupBytes)
		vnni.q80LaneVec = laneVec(q80LaneVec, q80LaneGroupBytes)
		vnni.q40LaneRows = laneRowsKernel(q40LaneRows, q40LaneGroupBytes)
		vnni.q80LaneRows = laneRowsKernel(q80LaneRows, q80LaneGroupBytes)
		sets = append(sets, vnni)
	}
	return sets
}

type q8x4Asm func(w0, w1, w2, w3, a *byte, stride, coff, doff, nb int, out *[4]float32, wstep int)

func q8Vec4(k q8x4Asm) q8Vec4Func {
	return func(w [4][]byte, a []byte, stride, coff, doff, nb, wstep int) (out [4]float32) {
		if nb > 0 {
			k(&w[0][0], &w[1][0], &w[2][0], &w[3][0], &a[0], stride, coff, doff, nb, &out, wstep)
		}
		return out
	}
}

type q8x4x4Asm func(w0, w1, w2, w3, a *byte, nb int, out *[16]float32, wstep int)

func q8Tile(k q8x4x4Asm) q8TileFunc {
	return func(w [4][]byte, a []byte, nb, wstep int) (out [16]float32) {
		if nb > 0 {
			k(&w[0][0], &w[1][0], &w[2][0], &w[3][0], &a[0], nb, &out, wstep)
		}
		return out
	}
}

func kDot(k func(w, a *byte, nb int) float32) kVec1Func {
	return func(w, a []byte, nb int) float32 {
		if nb == 0 {
			return 0
		}
		return k(&w[0], &a[0], nb)
	}
}

type fx4Asm func(w0, w1, w2, w3 *byte, x *float32, n int, out *[4]float32)

// fVec4 runs k over the first multiple of 16 columns and ref over the rest.
type fx4x4Asm func(w0, w1, w2, w3 *byte, x0, x1, x2, x3 *float32, n int, out *[16]float32)

// fTile4 wraps a 4 rows × 4 tokens float kernel; columns past the last
// multiple of 16 are added by ref.
func fTile4(k fx4x4Asm, size int, ref func([]byte, []float32) float32) fTile4Func {
	return func(w [4][]byte, x [4][]float32) (out [16]float32) {
		n := len(x[0]) &^ 15
		if n > 0 {
			k(&w[0][0], &w[1][0], &w[2][0], &w[3][0], &x[0][0], &x[1][0], &x[2][0], &x[3][0], n, &out)
		}
		if n < len(x[0]) {
			for t := range x {
				for r := range w {
					out[4*t+r] += ref(w[r][n*size:], x[t][n:])
				}
			}
		}
		return out
	}
}

func fVec4(k fx4Asm, size int, ref func([]byte, []float32) float32) fVec4Func {
	return func(w [4][]byte, x []float32) (out [4]float32) {
		n := len(x) &^ 15
		if n > 0 {
			k(&w[0][0], &w[1][0], &w[2][0], &w[3][0], &x[0], n, &out)
		}
		if n < len(x) {
			for i := range w {
				out[i] += ref(w[i][n*size:], x[n:])
			}
		}
		return out
	}
}

func dotAVX2(a, b []float32) float32 {
	n := len(a) &^ 31
	var s float32
	if n > 0 {
		dotRowsF32AVX2(&a[0], &b[0], 0, 1, n, &s)
	}
	return s + refDotF32(a[n:], b[n:])
}

func axpyAVX2(dst []float32, a float32, x []float32) {
	n := len(dst) &^ 15
	if n > 0 {
		axpyF32AVX2(&dst[0], &x[0], a, n)
	}
	refAxpyF32(dst[n:], a, x[n:])
}

func dotRowsAVX2(out, q, rows []float32, stride int) {
	if len(q)%32 != 0 {
		loopDotRows(dotAVX2)(out, q, rows, stride)
		return
	}
	dotRowsF32AVX2(&q[0], &rows[0], stride, len(out), len(q), &out[0])
}

func axpyRowsAVX2(dst, w, rows []float32, stride int) {
	if len(dst)%32 != 0 {
		loopAxpyRows(axpyAVX2)(dst, w, rows, stride)
		return
	}
	axpyRowsF32AVX2(&dst[0], &w[0], &rows[0], stride, len(w), len(dst))
}

func f32ToF16(dst []uint16, src []float32) {
	n := len(src) &^ 7
	if n > 0 {
		f32ToF16AVX2(&dst[0], &src[0], n)
	}
	refF32ToF16(dst[n:], src[n:])
}

func roundF16(x []float32) {
	n := len(x) &^ 7
	if n > 0 {
		roundF16AVX2(&x[0], n)
	}
	refRoundF16(x[n:])
}

func dotHeadsF16(out, q []float32, rows []uint16, stride, heads, group int) {
	hd := len(q) / heads
	if hd%8 != 0 || len(out) == 0 {
		refDotHeadsF16(out, q, rows, stride, heads, group)
		return
	}
	dotHeadsF16AVX2(&q[0], &rows[0], stride, len(out)/heads, heads, hd, group, &out[0])
}

func axpyHeadsF16(out, w []float32, rows []uint16, stride, heads, group int) {
	hd := len(out) / heads
	if hd%8 != 0 || len(w) == 0 {
		refAxpyHeadsF16(out, w, rows, stride, heads, group)
		return
	}
	axpyHeadsF16AVX2(&out[0], &w[0], &rows[0], stride, len(w)/heads, heads, hd, group)
}

func expAVX2(x []float32) {
	n := len(x) &^ 3
	if n > 0 {
		expF32AVX2(&x[0], n)
	}
	refExpF32(x[n:])
}

func expAVX512(x []float32) {
	n := len(x) &^ 7
	if n > 0 {
		expF32AVX512(&x[0], n)
	}
	expAVX2(x[n:])
}

func swiGLUAVX512(gate, up []float32) {
	n := len(gate) &^ 7
	if n > 0 {
		swiGLUF32AVX512(&gate[0], &up[0], n)
	}
	swiGLUAVX2(gate[n:], up[n:])
}

func addAVX512(x, y []float32) {
	n := len(x) &^ 15
	if n > 0 {
		addF32AVX512(&x[0], &y[0], n)
	}
	refAddF32(x[n:], y[n:])
}

func scaleMulAVX512(out, x []float32, s float32, gain []float32) {
	n := len(x) &^ 15
	if n > 0 {
		scaleMulF32AVX512(&out[0], &x[0], s, &gain[0], n)
	}
	refScaleMulF32(out[n:], x[n:], s, gain[n:])
}

// ropeAVX512 rotates eight pairs at a time, the rest in Go.
func ropeAVX512(vec, cos, sin []float32, hd int) {
	n := len(cos) &^ 7
	if n > 0 {
		for h := 0; h+hd <= len(vec); h += hd {
			ropeF32AVX512(&vec[h], &cos[0], &sin[0], n)
		}
	}
	if n < len(cos) {
		ropePairs(vec, cos, sin, hd, n)
	}
}

func swiGLUAVX2(gate, up []float32) {
	n := len(gate) &^ 3
	if n > 0 {
		swiGLUF32AVX2(&gate[0], &up[0], n)
	}
	refSwiGLUF32(gate[n:], up[n:])
}

// cpuid1ECX returns ECX of CPUID leaf 1 (x/sys/cpu does not report F16C).
func cpuid1ECX() uint32

//go:noescape
func q40x4AVX2(w0, w1, w2, w3, a *byte, stride, coff, doff, nb int, out *[4]float32, wstep int)

//go:noescape
func q80x4AVX2(w0, w1, w2, w3, a *byte, stride, coff, doff, nb int, out *[4]float32, wstep int)

//go:noescape
func q40x4VNNI(w0, w1, w2, w3, a *byte, stride, coff, doff, nb int, out *[4]float32, wstep int)

//go:noescape
func q80x4VNNI(w0, w1, w2, w3, a *byte, stride, coff, doff, nb int, out *[4]float32, wstep int)

//go:noescape
func q40x4x4VNNI(w0, w1, w2, w3, a *byte, nb int, out *[16]float32, wstep int)

//go:noescape
func q80x4x4VNNI(w0, w1, w2, w3, a *byte, nb int, out *[16]float32, wstep int)

//go:noescape
func q40x4x4Z(w0, w1, w2, w3, a *byte, nb int, out *[16]float32, wstep int)

//go:noescape
func q80x4x4Z(w0, w1, w2, w3, a *byte, nb int, out *[16]float32, wstep int)

//go:noescape
func q4KDotAVX2(w, a *byte, nb int) float32

//go:noescape
func q6KDotAVX2(w, a *byte, nb int) float32

//go:noescape
func f32x4AVX2(w0, w1, w2, w3 *byte, x *float32, n int, out *[4]float32)

//go:noescape
func f16x4AVX2(w0, w1, w2, w3 *byte, x *float32, n int, out *[4]float32)

//go:noescape
func bf16x4AVX2(w0, w1, w2, w3 *byte, x *float32, n int, out *[4]float32)

//go:noescape
func f16x4x4AVX512(w0, w1, w2, w3 *byte, x0, x1, x2, x3 *float32, n int, out *[16]float32)

//go:noescape
func f32x4x4AVX512(w0, w1, w2, w3 *byte, x0, x1, x2, x3 *float32, n int, out *[16]float32)

//go:noescape
func f32ToF16AVX2(dst *uint16, src *float32, n int)

//go:noescape
func roundF16AVX2(x *float32, n int)

//go:noescape
func dotHeadsF16AVX2(q *float32, rows *uint16, stride, n, heads, hd, group int, out *float32)

//go:noescape
func axpyHeadsF16AVX2(out, w *float32, rows *uint16, stride, n, heads, hd, group int)

//go:noescape
func expF32AVX2(x *float32, n int)

//go:noescape
func swiGLUF32AVX2(gate, up *float32, n int)

//go:noescape
func expF32AVX512(x *float32, n int)

//go:noescape
func swiGLUF32AVX512(gate, up *float32, n int)

//go:noescape
func addF32AVX512(x, y *float32, n int)

//go:noescape
func scaleMulF32AVX512(out, x *float32, s float32, gain *float32, n int)

//go:noescape
func ropeF32AVX512(vec, cos, sin *float32, n int)

//go:noescape
func dotRowsF32AVX2(q, rows *float32, stride, n, hd int, out *float32)

//go:noescape
func axpyRowsF32AVX2(dst, w, rows *float32, stride, n, hd int)

//go:noescape
func axpyF32AVX2(dst, x *float32, a float32, n int)
