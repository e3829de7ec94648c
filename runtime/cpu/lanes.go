package cpu

import (
	"encoding/binary"

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
// with Q8_0's quants stored as q^0x80 = q+128, the unsigned bytes
// VPDPBUSD takes (so the kernels need not flip them for every token),
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

// interleaveLanes writes m's rows (Rows a multiple of 4) in the lane layout.
func interleaveLanes(m Matrix, rowBytes int) []byte {
	const flip = 0x8080808080808080
	le := binary.LittleEndian
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
					for c := 0; c < 16; c += 8 {
						le.PutUint64(dst[8+16*r+c:], le.Uint64(blk[2+c:])^flip)
						le.PutUint64(dst[72+16*r+c:], le.Uint64(blk[18+c:])^flip)
					}
				}
			}
		}
	}
	return out
}
