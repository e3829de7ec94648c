package cpu

import (
	"encoding/binary"
	"math"

	"github.com/leo-operator/leo/runtime/quant"
)

// The lane layout's reference implementation in plain Go: the quantizer
// the assembly one must equal byte for byte, and the dot products the lane
// kernels must equal up to float summation order.

// laneBlockBytes is a group's bytes per block: sixteen rows' blocks.
func laneBlockBytes(t quant.Type) int { return laneGroupRows * t.BlockBytes() }

// laneWeight returns column c of row r (0..15) of block blk of a group in
// the lane layout, as its integer quant (q−8 for Q4_0) and its scale.
func laneWeight(t quant.Type, blk []byte, r, c int) (q int32, d float32) {
	d = f16ToF32(le16(blk[2*r:]))
	if t == quant.Q4_0 {
		b := blk[32+64*(c%16/4)+4*r+c%4]
		if c < 16 {
			return int32(b&15) - 8, d
		}
		return int32(b>>4) - 8, d
	}
	return int32(int8(blk[32+64*(c/4)+4*r+c%4] ^ 0x80)), d // stored +128
}

// quantizeLaneToken writes token x (len = nb*32) in the lane layout, its
// block b at buf[b*step:], with the correction for offset k.
func quantizeLaneToken(buf []byte, step int, x []float32, k int32) {
	for b := 0; b*32 < len(x); b++ {
		rec := buf[b*step : b*step+laneTokBytes]
		xs := x[b*32 : b*32+32]
		d, id := blockScale(absMax(xs))
		var sum int32
		for j, v := range xs {
			q := roundQ(v * id)
			rec[j] = byte(q)
			sum += int32(q)
		}
		for i := 0; i < 4; i++ {
			binary.LittleEndian.PutUint32(rec[laneCorrOff+4*i:], uint32(-k*sum))
		}
		binary.LittleEndian.PutUint32(rec[laneDOff:], math.Float32bits(d))
	}
}

// laneQuant returns a token's quantized column c of block b (record rec).
func laneQuant(rec []byte, c int) int32 { return int32(int8(rec[c])) }

// laneRef is the reference for the lane kernels: out[16t+r] = row r of the
// group at w · token t, for the nt tokens whose block-b records are at
// a[b*step + t*laneTokBytes].
func laneRef(t quant.Type, w, a []byte, nb, step, nt int, out []float32) {
	bb := laneBlockBytes(t)
	for tok := 0; tok < nt; tok++ {
		for r := 0; r < laneGroupRows; r++ {
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
			out[laneGroupRows*tok+r] = sum
		}
	}
}
