package cpu

import (
	"encoding/binary"
	"math"

	"github.com/leo-operator/leo/runtime/quant"
)

// The lane layout: Q4_0 and Q8_0 matrices re-laid out at load time
// (Interleave) so that one 512-bit VNNI instruction multiplies four rows
// at once, each 32-bit lane holding one (row, 4-column group) pair.
//
// Weights: rows in groups of four; per group and 32-column block
//
//	Q4_0, 72 bytes:  [d0 d1 d2 d3 (fp16)][qs of row 0 (16)][row 1][row 2][row 3]
//	Q8_0, 136 bytes: [d0 d1 d2 d3][q[0:16] of rows 0..3 (64)][q[16:32] of rows 0..3 (64)]
//
// so the 64 bytes after the scales are, for Q4_0, every row's low nibbles
// (columns 0..15) and high nibbles (columns 16..31), and for Q8_0 the
// low and high halves directly: dword lane 4r+k holds row r's columns
// 4k..4k+3 (+16 for the high half). The groups are as big as the plain
// rows were, one after another.
//
// Activations (one token, per block, laneTokBytes = 64 bytes):
//
//	[qs[0:16]][qs[16:32]][corr[0..3] int32 (16)][d float32][pad 12]
//
// The kernels broadcast each 16-byte piece to the four 128-bit lanes, so
// that lane 4r+k meets the token's columns 4k..4k+3 whatever the row (kept
// compact, a token group's blocks stay in the L1 cache while four rows at a
// time stream past them); corr[k] = -K·Σ of those 8 columns' qs (K = 8 for
// Q4_0, whose unsigned nibbles are q+8; K = 128 for Q8_0, fed as q^0x80 =
// q+128) starts each lane's integer sum so that the offset cancels. For
// the 4-token kernel, the four tokens of a group are stored block by
// block: block b's 64-byte records of tokens 0..3, then block b+1's.
// Quantization is the same as for the plain layout (act.go).

const (
	laneTokBytes = 64
	laneCorrOff  = 32
	laneDOff     = 48
)

// laneBlockBytes is a group's bytes per block: four rows' blocks.
func laneBlockBytes(t quant.Type) int { return 4 * t.BlockBytes() }

// interleaveLanes writes m's rows (Rows a multiple of 4) in the lane layout.
func interleaveLanes(m Matrix, rowBytes int) []byte {
	bb, nb := m.Type.BlockBytes(), m.Cols/32
	out := make([]byte, m.Rows*rowBytes)
	for g := 0; g < m.Rows/4; g++ {
		for b := 0; b < nb; b++ {
			dst := out[g*4*rowBytes+b*4*bb:][:4*bb]
			for r := 0; r < 4; r++ {
				blk := m.Data[(4*g+r)*rowBytes+b*bb:][:bb]
				copy(dst[2*r:2*r+2], blk[:2])
				if m.Type == quant.Q4_0 {
					copy(dst[8+16*r:8+16*r+16], blk[2:18])
				} else {
					copy(dst[8+16*r:8+16*r+16], blk[2:18])
					copy(dst[72+16*r:72+16*r+16], blk[18:34])
				}
			}
		}
	}
	return out
}

// laneWeight returns column c of row r (0..3) of block blk of a group in
// the lane layout, as its integer quant (q−8 for Q4_0) and its scale.
func laneWeight(t quant.Type, blk []byte, r, c int) (q int32, d float32) {
	d = f16ToF32(le16(blk[2*r:]))
	if t == quant.Q4_0 {
		b := blk[8+16*r+c%16]
		if c < 16 {
			return int32(b&15) - 8, d
		}
		return int32(b>>4) - 8, d
	}
	off := 8
	if c >= 16 {
		off = 72
	}
	return int32(int8(blk[off+16*r+c%16])), d
}

// quantizeLaneToken writes token x (len = nb*32) in the lane layout, its
// block b at buf[b*step:], with corrections for offset k.
func quantizeLaneToken(buf []byte, step int, x []float32, k int32) {
	for b := 0; b*32 < len(x); b++ {
		rec := buf[b*step : b*step+laneTokBytes]
		xs := x[b*32 : b*32+32]
		d, id := blockScale(absMax(xs))
		var corr [4]int32
		for j, v := range xs {
			q := roundQ(v * id)
			rec[j] = byte(q)
			corr[(j&15)>>2] += int32(q)
		}
		for kk, s := range corr {
			binary.LittleEndian.PutUint32(rec[laneCorrOff+4*kk:], uint32(-k*s))
		}
		binary.LittleEndian.PutUint32(rec[laneDOff:], math.Float32bits(d))
	}
}

// laneQuant returns a token's quantized column c of block b (record rec).
func laneQuant(rec []byte, c int) int32 { return int32(int8(rec[c])) }

// laneRef is the reference for the lane kernels: out[4t+r] = row r of the
// group at w · token t, for the nt tokens whose block-b records are at
// a[b*step + t*laneTokBytes].
func laneRef(t quant.Type, w, a []byte, nb, step, nt int, out []float32) {
	bb := laneBlockBytes(t)
	for tok := 0; tok < nt; tok++ {
		for r := 0; r < 4; r++ {
			var sum float32
			for b := 0; b < nb; b++ {
				blk := w[b*bb : (b+1)*bb]
				rec := a[b*step+tok*laneTokBytes:]
				var s int32
				var dw float32
				for c := 0; c < 32; c++ {
					q, d := laneWeight(t, blk, r, c)
					s += q * laneQuant(rec, c)
					dw = d
				}
				sum += dw * f32at(rec[laneDOff:]) * float32(s)
			}
			out[4*tok+r] = sum
		}
	}
}
