package cpu

import (
	"encoding/binary"
	"math"

	"github.com/leo-operator/leo/runtime/quant"
)

// Activations are quantized once per MatMul into pool-owned scratch, in
// layouts the assembly kernels read with a single pointer and fixed offsets.
//
// Q8_0 family (for Q4_0 and Q8_0 weights): tokens are interleaved in groups
// of g (1, or 4 for the 4×4 tile kernels). Each block of 32 columns of one
// group takes q8Stride(g) bytes:
//
//	[g × 32 int8 qs][g × 8 int32 corr][g × float32 d][pad to 32 bytes]
//
// The value of column c of a token is d·qs[c]. corr holds, for each 4-byte
// lane of qs, -k·(sum of those 4 qs), k = 8 for Q4_0 and 128 for Q8_0: VNNI
// multiplies unsigned by signed bytes, so the kernels feed the weights as
// q+8 (Q4_0's raw nibbles) or q+128 (Q8_0 with its sign bit flipped), and
// starting each block's integer sum at corr removes the offset exactly.
//
// The AVX-512 tile kernels read 64 columns (two blocks) per step, so for
// them a group of 4 tokens is laid out in 768-byte pairs of blocks instead:
//
//	[4 × 64 int8 qs][4 × 16 int32 corr][4 × 16 float32 d]
//
// each token's 64 columns, corrections and scales contiguous, its two block
// scales each repeated 8 times (one per 32-bit lane of the block).
//
// Q8_K (for Q4_K and Q6_K weights): one token after another, each block of
// 256 columns in 320 bytes:
//
//	[256 int8 qs][16 int16 bsums][float32 d][pad to 32 bytes]
//
// where bsums[i] is the sum of qs[16i:16i+16] (the kernels use it for the
// weights' offsets and minimums, as ggml's Q8_K does).
//
// Both round exactly as llama.cpp's CPU backend does on x86, so that leo's
// results match llama.cpp's on the same file (not only approximately):
//   - Q8_0 (ggml's AVX quantize_row_q8_0): qs = x·(127/max|x|) rounded half
//     to even, and d = max|x|/127 rounded to fp16, as the block stores it.
//   - Q8_K (quantize_row_q8_K_ref): with m the value of largest magnitude
//     (the first one on ties), qs = min(127, round(x·(-127/m))) half to
//     even, and d = 1/(-127/m).
// So |qs| ≤ 127 and a block of zeros gets d = 0. NaN inputs give qs 0; an
// infinite input gives a NaN dot.

const (
	q8KStride  = 320 // bytes per 256-column Q8_K block
	q8KBsumOff = 256
	q8KDOff    = 288
)

// q8Stride is the bytes one 32-column block of a group of g tokens takes.
func q8Stride(g int) int { return 64*g + (4*g+31)&^31 }

// q8Offsets returns, for token tt of its group, the offsets of its corr and
// d from its qs (which sit at tt*32 in each block).
func q8Offsets(g, tt int) (coff, doff int) { return 32 * g, 64*g + 4*tt - 32*tt }

// q8Layout says where one group of tokens' quantized blocks are.
type q8Layout struct {
	g    int  // tokens per group: 1 or 4
	pair bool // 768-byte pairs of blocks (g = 4, even block count)
}

// groupBytes is the size of one group of tokens of nb blocks.
func (l q8Layout) groupBytes(nb int) int {
	if l.pair {
		return (nb + 1) / 2 * 768
	}
	return nb * q8Stride(l.g)
}

// at returns the offsets, within a group, of block b of token tt: its 32
// qs, its 8 corrections and its scale, stored dn times.
func (l q8Layout) at(b, tt int) (qs, corr, d, dn int) {
	if l.pair {
		base := b/2*768 + b%2*32 + 64*tt
		return base, base + 256, base + 512, 8
	}
	qs = b*q8Stride(l.g) + 32*tt
	coff, doff := q8Offsets(l.g, tt)
	return qs, qs + coff, qs + doff, 1
}

// roundQ rounds v (already scaled into about ±127) half to even and clamps
// it to ±127; NaN becomes 0.
func roundQ(v float32) int8 {
	switch {
	case v > 127:
		return 127
	case v < -127:
		return -127
	case v != v:
		return 0
	}
	// Adding and subtracting 1.5·2²³ rounds a float32 of magnitude < 2²² to
	// an integer, half to even (the FPU's default rounding).
	const magic = 12582912
	return int8(int32((v + magic) - magic))
}

// blockScale returns a Q8_0 block's stored scale d (fp16 precision) and
// the factor 127/amax its values are quantized with.
func blockScale(amax float32) (d, id float32) {
	if amax == 0 || amax != amax {
		return 0, 0
	}
	return quant.FP16ToFloat32(quant.Float32ToFP16(amax / 127)), 127 / amax
}

// q8KScale returns a Q8_K block's scale d and the factor its values are
// quantized with, as quantize_row_q8_K_ref computes them.
func q8KScale(x []float32) (d, iscale float32) {
	var amax, m float32
	for _, v := range x {
		if a := float32(math.Abs(float64(v))); a > amax {
			amax, m = a, v
		}
	}
	if amax == 0 {
		return 0, 0
	}
	iscale = -127 / m
	return 1 / iscale, iscale
}

// absMax returns the largest |x[i]|, ignoring NaNs. The absolute value is
// taken by clearing the sign bit: a branch on the sign would be
// mispredicted half the time.
func absMax(x []float32) float32 {
	var m0, m1 float32
	i := 0
	for ; i+2 <= len(x); i += 2 {
		a0 := math.Float32frombits(math.Float32bits(x[i]) &^ (1 << 31))
		a1 := math.Float32frombits(math.Float32bits(x[i+1]) &^ (1 << 31))
		if a0 > m0 {
			m0 = a0
		}
		if a1 > m1 {
			m1 = a1
		}
	}
	if i < len(x) {
		if a := math.Float32frombits(math.Float32bits(x[i]) &^ (1 << 31)); a > m0 {
			m0 = a
		}
	}
	return max(m0, m1)
}

// quantizeQ8Token writes token x (len = nb*32) as token tt of the group
// that starts at buf[0], with corrections for offset k.
func quantizeQ8Token(buf []byte, l q8Layout, tt int, x []float32, k int32) {
	for b := 0; b*32 < len(x); b++ {
		qo, co, do, dn := l.at(b, tt)
		qs := buf[qo : qo+32]
		xs := x[b*32 : b*32+32]
		d, id := blockScale(absMax(xs))
		for j, v := range xs {
			qs[j] = byte(roundQ(v * id))
		}
		for i := 0; i < 8; i++ {
			s := int32(int8(qs[4*i])) + int32(int8(qs[4*i+1])) + int32(int8(qs[4*i+2])) + int32(int8(qs[4*i+3]))
			binary.LittleEndian.PutUint32(buf[co+4*i:], uint32(-k*s))
		}
		for i := 0; i < dn; i++ {
			binary.LittleEndian.PutUint32(buf[do+4*i:], math.Float32bits(d))
		}
	}
}

// clearQ8Token zeroes token tt of a group (a padding token).
func clearQ8Token(buf []byte, l q8Layout, tt, nb int) {
	for b := 0; b < nb; b++ {
		qo, co, do, dn := l.at(b, tt)
		clear(buf[qo : qo+32])
		clear(buf[co : co+32])
		clear(buf[do : do+4*dn])
	}
}

// quantizeQ8KToken writes one token x (len = nb*256) in the Q8_K layout.
func quantizeQ8KToken(buf []byte, x []float32) {
	for b := 0; b*256 < len(x); b++ {
		blk := buf[b*q8KStride : (b+1)*q8KStride]
		xs := x[b*256 : b*256+256]
		d, id := q8KScale(xs)
		for i := 0; i < 16; i++ {
			var s int32
			for j := 16 * i; j < 16*i+16; j++ {
				q := roundQ(xs[j] * id)
				blk[j] = byte(q)
				s += int32(q)
			}
			binary.LittleEndian.PutUint16(blk[q8KBsumOff+2*i:], uint16(int16(s)))
		}
		binary.LittleEndian.PutUint32(blk[q8KDOff:], math.Float32bits(d))
	}
}
