package cpu

import (
	"encoding/binary"

	"github.com/leo-operator/leo/runtime/quant"
)

// The lane layout: Q4_0 and Q8_0 matrices re-laid out at load time
// (Interleave) so that one 512-bit VNNI instruction multiplies sixteen rows
// at once, each 32-bit lane holding one row.
//
// Weights: rows in groups of sixteen (laneGroupRows); per group and 32-column
// block
//
//	Q4_0, 288 bytes: [d of rows 0..15 (fp16, 32)][piece 0][piece 1][piece 2][piece 3]
//	Q8_0, 544 bytes: [d of rows 0..15 (fp16, 32)][piece 0] ... [piece 7]
//
// where piece j (64 bytes) holds dword r = row r's block bytes 4j..4j+3:
// for Q8_0 the quants of columns 4j..4j+3, stored as q^0x80 = q+128, the
// unsigned bytes VPDPBUSD takes (so the kernels need not flip them for
// every token); for Q4_0 the packed nibbles, whose low halves are columns
// 4j..4j+3 and high halves columns 16+4j..16+4j+3. The groups are as big
// as the plain rows were, one after another.
//
// Activations (one token, per block, laneTokBytes = 64 bytes):
//
//	[qs[0:32]][corr int32, four times (16)][d float32][pad 12]
//
// The kernels broadcast the token's dword j (columns 4j..4j+3) to all
// sixteen lanes, meeting every row's piece j; corr = -K·Σ qs (K = 8 for
// Q4_0, whose unsigned nibbles are q+8; K = 128 for Q8_0, fed as q^0x80 =
// q+128) starts each lane's integer sum so that the offset cancels. For
// the many-token kernel, the tokens are stored in groups of laneTokens,
// block by block: block b's 64-byte records of the group's tokens, then
// block b+1's. Quantization is the same as for the plain layout (act.go).

const (
	laneGroupRows = 16 // rows per group of the weights
	laneTokens    = 8  // tokens per group of the many-token kernel
	laneTokBytes  = 64
	laneCorrOff   = 32
	laneDOff      = 48
)

// interleaveLanes writes m's rows (Rows a multiple of laneGroupRows) in the
// lane layout.
func interleaveLanes(m Matrix, rowBytes int) []byte {
	const flip = 0x80808080
	le := binary.LittleEndian
	bb, nb := m.Type.BlockBytes(), m.Cols/32
	gb := laneGroupRows * bb // a group's bytes per block
	out := make([]byte, m.Rows*rowBytes)
	for g := 0; g < m.Rows/laneGroupRows; g++ {
		for b := 0; b < nb; b++ {
			dst := out[g*laneGroupRows*rowBytes+b*gb:][:gb]
			for r := 0; r < laneGroupRows; r++ {
				blk := m.Data[(laneGroupRows*g+r)*rowBytes+b*bb:][:bb]
				copy(dst[2*r:2*r+2], blk[:2])
				qs := blk[2:]
				for j := 0; j < len(qs)/4; j++ {
					v := le.Uint32(qs[4*j:])
					if m.Type == quant.Q8_0 {
						v ^= flip
					}
					le.PutUint32(dst[32+64*j+4*r:], v)
				}
			}
		}
	}
	return out
}
