package cpu

import (
	"math"

	"github.com/leo-operator/leo/runtime/quant"
)

// q8Vec4Func computes out[i] = row i · token for 4 rows of Q4_0 or Q8_0
// weights and one token of Q8_0-family activations: a starts at the token's
// block 0 qs; stride, coff and doff are as in act.go. Block b of row i
// starts at w[i][b*wstep:] (wstep is the block size: rows are plain).
type q8Vec4Func func(w [4][]byte, a []byte, stride, coff, doff, nb, wstep int) [4]float32

// q8TileFunc computes out[4*t+i] = row i · token t for 4 rows and the 4
// tokens of one group (g = 4) of Q8_0-family activations; wstep as above.
type q8TileFunc func(w [4][]byte, a []byte, nb, wstep int) [16]float32

// laneVecFunc computes out[16g+r] = row r of group g · token for groups
// groups of sixteen rows in the lane layout (lanes.go), w at the first
// group.
type laneVecFunc func(w, a []byte, nb, groups int, out []float32)

// laneRowsFunc is laneVecFunc for all n tokens of a lane activation buffer
// (groups of laneTokens tokens, tokBytes apart, the last one padded):
// out[t*stride+16g+r] for t < n, in one call for a whole chunk of rows.
// Each result has the same bits as laneVecFunc's for that token.
type laneRowsFunc func(w, a []byte, nb, groups int, out []float32, stride, n, tokBytes int)

// kVec1Func is the dot of one Q4_K or Q6_K row of nb super-blocks with one
// Q8_K token.
type kVec1Func func(w, a []byte, nb int) float32

// fVec4Func computes out[i] = row i · x for 4 rows of float weights.
type fVec4Func func(w [4][]byte, x []float32) [4]float32

// fTile4Func computes out[4*t+i] = row i · x[t] for 4 rows of float
// weights and 4 tokens (the 4×4 tile of fVec4Func).
type fTile4Func func(w [4][]byte, x [4][]float32) [16]float32

// kernelSet is one implementation of every kernel.
type kernelSet struct {
	name             string
	q40Vec4, q80Vec4 q8Vec4Func
	q40Tile, q80Tile q8TileFunc // nil: n > 1 runs the Vec4 kernel per token
	// q40TileZ, q80TileZ read the pair layout (act.go); used when non-nil
	// and the block count is even.
	q40TileZ, q80TileZ q8TileFunc
	// Lane-layout kernels (nil: Interleave keeps the plain layout).
	q40LaneVec, q80LaneVec   laneVecFunc
	quantLane                func(buf []byte, step int, x []float32, k int32) // as quantizeLaneToken (lanes_ref_test.go)
	q40LaneRows, q80LaneRows laneRowsFunc                                     // set with the LaneVec kernels
	q4KVec1, q6KVec1         kVec1Func
	f32Vec4                  fVec4Func
	f16Vec4                  fVec4Func
	bf16Vec4                 fVec4Func
	f32Tile4, f16Tile4       fTile4Func // nil: use the Vec4 kernels per token
	dot                      func(a, b []float32) float32
	axpy                     func(dst []float32, a float32, x []float32)
	dotRows                  func(out, q, rows []float32, stride int)
	axpyRows                 func(dst, w, rows []float32, stride int)
	exp                      func(x []float32)
	swiGLU                   func(gate, up []float32)
	// The per-token element-wise work between the products.
	add      func(x, y []float32)
	scaleMul func(out, x []float32, s float32, gain []float32)
	rope     func(vec, cos, sin []float32, hd int)
	// The KV cache in half precision.
	f32ToF16     func(dst []uint16, src []float32)
	roundF16     func(x []float32)
	dotHeadsF16  func(out, q []float32, rows []uint16, stride, heads, group int)
	axpyHeadsF16 func(out, w []float32, rows []uint16, stride, heads, group int)
}

func (ks *kernelSet) q8Vec4(t quant.Type) q8Vec4Func {
	if t == quant.Q4_0 {
		return ks.q40Vec4
	}
	return ks.q80Vec4
}

func (ks *kernelSet) laneVec(t quant.Type) laneVecFunc {
	if t == quant.Q4_0 {
		return ks.q40LaneVec
	}
	return ks.q80LaneVec
}

func (ks *kernelSet) laneRows(t quant.Type) laneRowsFunc {
	if t == quant.Q4_0 {
		return ks.q40LaneRows
	}
	return ks.q80LaneRows
}

func (ks *kernelSet) q8Tile(t quant.Type) q8TileFunc {
	if t == quant.Q4_0 {
		return ks.q40Tile
	}
	return ks.q80Tile
}

func (ks *kernelSet) q8TileZ(t quant.Type) q8TileFunc {
	if t == quant.Q4_0 {
		return ks.q40TileZ
	}
	return ks.q80TileZ
}

// goKernels are the reference kernels.
var goKernels = kernelSet{
	name: "go",
	q40Vec4: func(w [4][]byte, a []byte, stride, coff, doff, nb, wstep int) (out [4]float32) {
		for i := range w {
			out[i] = refQ40Dot(w[i], a, stride, doff, nb, wstep)
		}
		return out
	},
	q80Vec4: func(w [4][]byte, a []byte, stride, coff, doff, nb, wstep int) (out [4]float32) {
		for i := range w {
			out[i] = refQ80Dot(w[i], a, stride, doff, nb, wstep)
		}
		return out
	},
	q4KVec1:      refQ4KDot,
	q6KVec1:      refQ6KDot,
	f32Vec4:      refVec4(refF32Dot),
	f16Vec4:      refVec4(refF16Dot),
	bf16Vec4:     refVec4(refBF16Dot),
	dot:          refDotF32,
	axpy:         refAxpyF32,
	dotRows:      loopDotRows(refDotF32),
	axpyRows:     loopAxpyRows(refAxpyF32),
	exp:          refExpF32,
	swiGLU:       refSwiGLUF32,
	add:          refAddF32,
	scaleMul:     refScaleMulF32,
	rope:         refRopeF32,
	f32ToF16:     refF32ToF16,
	roundF16:     refRoundF16,
	dotHeadsF16:  refDotHeadsF16,
	axpyHeadsF16: refAxpyHeadsF16,
}

func refF32ToF16(dst []uint16, src []float32) {
	for i, v := range src {
		dst[i] = quant.Float32ToFP16(v)
	}
}

func refRoundF16(x []float32) {
	for i, v := range x {
		x[i] = quant.FP16ToFloat32(quant.Float32ToFP16(v))
	}
}

// refDotHeadsF16 is DotHeadsF16, one product at a time.
func refDotHeadsF16(out, q []float32, rows []uint16, stride, heads, group int) {
	hd := len(q) / heads
	for t := 0; t < len(out)/heads; t++ {
		for h := 0; h < heads; h++ {
			k := rows[t*stride+h/group*hd:][:hd]
			var s float32
			for i, v := range q[h*hd : (h+1)*hd] {
				s += v * quant.FP16ToFloat32(k[i])
			}
			out[t*heads+h] = s
		}
	}
}

// refAxpyHeadsF16 is AxpyHeadsF16, one element at a time.
func refAxpyHeadsF16(out, w []float32, rows []uint16, stride, heads, group int) {
	hd := len(out) / heads
	for t := 0; t < len(w)/heads; t++ {
		for h := 0; h < heads; h++ {
			v := rows[t*stride+h/group*hd:][:hd]
			a := w[t*heads+h]
			for i := range hd {
				out[h*hd+i] += a * quant.FP16ToFloat32(v[i])
			}
		}
	}
}

// refExpF32 is e^x rounded from float64.
func refExpF32(x []float32) {
	for i, v := range x {
		x[i] = float32(math.Exp(float64(v)))
	}
}

// refSwiGLUF32 is silu(gate)·up with silu(g) = g/(1+e^-g).
func refSwiGLUF32(gate, up []float32) {
	for i, g := range gate {
		gate[i] = g / (1 + float32(math.Exp(float64(-g)))) * up[i]
	}
}

// loopDotRows makes a DotRowsF32 of one dot product per row.
func loopDotRows(dot func(a, b []float32) float32) func(out, q, rows []float32, stride int) {
	return func(out, q, rows []float32, stride int) {
		for t := range out {
			out[t] = dot(q, rows[t*stride:t*stride+len(q)])
		}
	}
}

// loopAxpyRows makes an AxpyRowsF32 of one axpy per row.
func loopAxpyRows(axpy func(dst []float32, a float32, x []float32)) func(dst, w, rows []float32, stride int) {
	return func(dst, w, rows []float32, stride int) {
		for t, a := range w {
			axpy(dst, a, rows[t*stride:t*stride+len(dst)])
		}
	}
}

func refVec4(dot func([]byte, []float32) float32) fVec4Func {
	return func(w [4][]byte, x []float32) (out [4]float32) {
		for i := range w {
			out[i] = dot(w[i], x)
		}
		return out
	}
}

// kernelSets lists the implementations this CPU can run, slowest first;
// active is the one in use (the last). Tests switch active to check each.
var (
	kernelSets = platformKernels()
	active     = &kernelSets[len(kernelSets)-1]
)

// DotF32 returns Σ a[i]·b[i] over the shorter of the two.
func DotF32(a, b []float32) float32 {
	n := min(len(a), len(b))
	return active.dot(a[:n], b[:n])
}

// DotRowsF32 sets out[t] = q · rows[t*stride : t*stride+len(q)] for every
// t < len(out), exactly as len(out) calls of DotF32 would: attention's
// scores of one query against the keys of one head, which lie in the KV
// cache a row (stride floats) apart. rows must hold the last one.
func DotRowsF32(out, q, rows []float32, stride int) {
	if len(out) == 0 {
		return
	}
	_ = rows[(len(out)-1)*stride+len(q)-1]
	active.dotRows(out, q, rows, stride)
}

// AxpyRowsF32 adds w[t]·rows[t*stride : t*stride+len(dst)] to dst for t in
// order, exactly as len(w) calls of AxpyF32 would: attention's weighted sum
// of one head's values.
func AxpyRowsF32(dst, w, rows []float32, stride int) {
	if len(w) == 0 {
		return
	}
	_ = rows[(len(w)-1)*stride+len(dst)-1]
	active.axpyRows(dst, w, rows, stride)
}

// F32ToF16 converts src to half precision (round to nearest even) into
// dst: a KV cache row stored in half precision.
func F32ToF16(dst []uint16, src []float32) { active.f32ToF16(dst[:len(src)], src) }

// RoundF16 rounds each x[i] to the nearest half-precision value, as GGML
// rounds the query and the attention weights that meet a half-precision
// KV cache.
func RoundF16(x []float32) { active.roundF16(x) }

// DotHeadsF16 computes attention scores against a half-precision KV
// cache for several heads of one query at once: out[t*heads+h] = q_h ·
// k_t,h for positions t < len(out)/heads, where q_h is
// q[h*hd:(h+1)*hd] (hd = len(q)/heads) and k_t,h, the key of KV head
// h/group at position t, is rows[t*stride+(h/group)*hd:][:hd]. Position
// by position, the keys of all heads are read in one pass over the row.
func DotHeadsF16(out, q []float32, rows []uint16, stride, heads, group int) {
	checkHeads(len(out), len(q), len(rows), stride, heads, group)
	active.dotHeadsF16(out, q, rows, stride, heads, group)
}

// AxpyHeadsF16 is attention's weighted sum of values for several heads:
// out[h*hd:(h+1)*hd] += w[t*heads+h] · v_t,h for t < len(w)/heads in
// order, with hd = len(out)/heads and v_t,h laid out as DotHeadsF16's
// keys.
func AxpyHeadsF16(out, w []float32, rows []uint16, stride, heads, group int) {
	checkHeads(len(w), len(out), len(rows), stride, heads, group)
	active.axpyHeadsF16(out, w, rows, stride, heads, group)
}

// checkHeads panics unless perPos/heads positions of heads heads fit:
// the kernels read without bounds checks.
func checkHeads(perPos, perHead, rows, stride, heads, group int) {
	if heads < 1 || group < 1 || heads%group != 0 || perPos%heads != 0 || perHead%heads != 0 {
		panic("cpu: DotHeadsF16/AxpyHeadsF16: heads must be a positive multiple of group dividing the lengths")
	}
	if n := perPos / heads; n > 0 && (n-1)*stride+heads/group*(perHead/heads) > rows {
		panic("cpu: DotHeadsF16/AxpyHeadsF16: rows too short")
	}
}

// ExpF32 replaces each x[i] with e^x[i], float32(math.Exp(float64(x[i])))
// but for about one value in a million, which may be 1 ulp off (the SIMD
// kernels compute in float64 with a polynomial): softmax's exponentials.
func ExpF32(x []float32) { active.exp(x) }

// SwiGLUF32 replaces gate[i] with silu(gate[i])·up[i], silu(g) =
// g/(1+e^-g) in float32 with e^-g as ExpF32 computes it: the feed-forward
// activation.
func SwiGLUF32(gate, up []float32) {
	active.swiGLU(gate, up[:len(gate)])
}

// AddF32 adds y[i] to x[i] (y at least as long as x).
func AddF32(x, y []float32) { active.add(x, y[:len(x)]) }

// ScaleMulF32 writes x[i]·s·gain[i] into out[i], x[i]·s rounded first
// (RMSNorm's scaling).
func ScaleMulF32(out, x []float32, s float32, gain []float32) {
	active.scaleMul(out[:len(x)], x, s, gain[:len(x)])
}

// RopeF32 rotates the pairs (x[2i], x[2i+1]), i < len(cos), of every head
// of hd values in vec by the angle whose cosine and sine are cos[i] and
// sin[i]: x0·c − x1·s and x0·s + x1·c, each product rounded, as plain Go
// computes them.
func RopeF32(vec, cos, sin []float32, hd int) {
	if 2*len(cos) > hd || len(sin) < len(cos) || hd <= 0 {
		panic("cpu: RopeF32: more pairs than a head holds, fewer sines than cosines, or no head size")
	}
	active.rope(vec, cos, sin[:len(cos)], hd)
}

func refAddF32(x, y []float32) {
	y = y[:len(x)]
	for i := range x {
		x[i] += y[i]
	}
}

func refScaleMulF32(out, x []float32, s float32, gain []float32) {
	out, gain = out[:len(x)], gain[:len(x)]
	for i, v := range x {
		out[i] = v * s * gain[i]
	}
}

func refRopeF32(vec, cos, sin []float32, hd int) { ropePairs(vec, cos, sin, hd, 0) }

// ropePairs is RopeF32 for the pairs from the first'th on.
func ropePairs(vec, cos, sin []float32, hd, first int) {
	for h := 0; h+hd <= len(vec); h += hd {
		v := vec[h : h+hd]
		for i := first; i < len(cos); i++ {
			x0, x1 := v[2*i], v[2*i+1]
			// float32() rounds each product, so that no compiler fuses
			// a multiply-add (Go does with GOAMD64=v3, and on arm64).
			v[2*i] = float32(x0*cos[i]) - float32(x1*sin[i])
			v[2*i+1] = float32(x0*sin[i]) + float32(x1*cos[i])
		}
	}
}

// AxpyF32 adds a·x[i] to dst[i] for i below the shorter length.
func AxpyF32(dst []float32, a float32, x []float32) {
	n := min(len(dst), len(x))
	active.axpy(dst[:n], a, x[:n])
}
