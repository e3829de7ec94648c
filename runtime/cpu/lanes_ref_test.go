package cpu

import (
	"encoding/binary"
	"math"

	"github.com/leo-operator/leo/runtime/quant"
)

// The lane layout's reference implementation in plain Go: the quantizer
// the assembly one must equal byte for byte, and the dot products the lane
// kernels must equal up to float summation order.

// laneBlockBytes is a group's bytes per block: four rows' blocks.
func laneBlockBytes(t quant.Type) int { return 4 * t.BlockBytes() }

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
	return int32(int8(blk[off+16*r+c%16] ^ 0x80)), d // stored +128
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
