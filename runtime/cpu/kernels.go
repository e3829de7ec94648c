package cpu

import "github.com/leo-operator/leo/runtime/quant"

// q8Vec4Func computes out[i] = row i · token for 4 rows of Q4_0 or Q8_0
// weights and one token of Q8_0-family activations: a starts at the token's
// block 0 qs; stride, coff and doff are as in act.go. Block b of row i
// starts at w[i][b*wstep:] (wstep is the block size: rows are plain).
type q8Vec4Func func(w [4][]byte, a []byte, stride, coff, doff, nb, wstep int) [4]float32

// q8TileFunc computes out[4*t+i] = row i · token t for 4 rows and the 4
// tokens of one group (g = 4) of Q8_0-family activations; wstep as above.
type q8TileFunc func(w [4][]byte, a []byte, nb, wstep int) [16]float32

// laneVecFunc computes out[4g+r] = row r of group g · token for groups
// groups of four rows in the lane layout (lanes.go), w at the first group.
type laneVecFunc func(w, a []byte, nb, groups int, out []float32)

// laneTileFunc is laneVecFunc for the four tokens of a lane activation
// group: out[t*stride+4g+r], stored for the first ntok tokens only.
type laneTileFunc func(w, a []byte, nb, groups int, out []float32, stride, ntok int)

// kVec1Func is the dot of one Q4_K or Q6_K row of nb super-blocks with one
// Q8_K token.
type kVec1Func func(w, a []byte, nb int) float32

// fVec4Func computes out[i] = row i · x for 4 rows of float weights.
type fVec4Func func(w [4][]byte, x []float32) [4]float32

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
	q40LaneTile, q80LaneTile laneTileFunc
	q4KVec1, q6KVec1         kVec1Func
	f32Vec4                  fVec4Func
	f16Vec4                  fVec4Func
	bf16Vec4                 fVec4Func
	dot                      func(a, b []float32) float32
	axpy                     func(dst []float32, a float32, x []float32)
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

func (ks *kernelSet) laneTile(t quant.Type) laneTileFunc {
	if t == quant.Q4_0 {
		return ks.q40LaneTile
	}
	return ks.q80LaneTile
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
	q4KVec1:  refQ4KDot,
	q6KVec1:  refQ6KDot,
	f32Vec4:  refVec4(refF32Dot),
	f16Vec4:  refVec4(refF16Dot),
	bf16Vec4: refVec4(refBF16Dot),
	dot:      refDotF32,
	axpy:     refAxpyF32,
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

// AxpyF32 adds a·x[i] to dst[i] for i below the shorter length.
func AxpyF32(dst []float32, a float32, x []float32) {
	n := min(len(dst), len(x))
	active.axpy(dst[:n], a, x[:n])
}
