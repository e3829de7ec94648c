package cpu

import (
	"encoding/binary"
	"math"
)

// The reference kernels define what every kernel computes: integer dot
// products of the quantized values, exactly, scaled and summed in float32.
// The SIMD kernels must give the same integers and sum the float terms in
// another order only. They are also what runs with -tags purego and on
// architectures without assembly.

func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }
func f32at(b []byte) float32 {
	return math.Float32frombits(binary.LittleEndian.Uint32(b))
}

// refQ40Dot is the dot of one Q4_0 row (nb blocks) with one quantized token
// whose block 0 qs start at a[0] (see act.go for stride, coff, doff).
func refQ40Dot(w, a []byte, stride, doff, nb, wstep int) float32 {
	var sum float32
	for b := 0; b < nb; b++ {
		blk := w[b*wstep : b*wstep+18]
		qa := a[b*stride : b*stride+32]
		var s int32
		for j := 0; j < 16; j++ {
			s += (int32(blk[2+j]&15) - 8) * int32(int8(qa[j]))
			s += (int32(blk[2+j]>>4) - 8) * int32(int8(qa[j+16]))
		}
		sum += f16ToF32(le16(blk)) * f32at(a[b*stride+doff:]) * float32(s)
	}
	return sum
}

// refQ80Dot is refQ40Dot for a Q8_0 row.
func refQ80Dot(w, a []byte, stride, doff, nb, wstep int) float32 {
	var sum float32
	for b := 0; b < nb; b++ {
		blk := w[b*wstep : b*wstep+34]
		qa := a[b*stride : b*stride+32]
		var s int32
		for j := 0; j < 32; j++ {
			s += int32(int8(blk[2+j])) * int32(int8(qa[j]))
		}
		sum += f16ToF32(le16(blk)) * f32at(a[b*stride+doff:]) * float32(s)
	}
	return sum
}

// q4KScaleMin returns the 6-bit scale and min of sub-block j (0..7) packed in
// a Q4_K block's 12 scale bytes (ggml's get_scale_min_k4).
func q4KScaleMin(j int, q []byte) (sc, m int32) {
	if j < 4 {
		return int32(q[j] & 63), int32(q[j+4] & 63)
	}
	return int32(q[j+4]&0xF | (q[j-4]>>6)<<4), int32(q[j+4]>>4 | (q[j]>>6)<<4)
}

// refQ4KDot is the dot of one Q4_K row (nb super-blocks) with one Q8_K
// token: per super-block d·dy·Σ sc_j·(q·a)_j − dmin·dy·Σ m_j·(Σa)_j.
func refQ4KDot(w, a []byte, nb int) float32 {
	var sum float32
	for b := 0; b < nb; b++ {
		blk := w[b*144 : b*144+144]
		act := a[b*q8KStride : b*q8KStride+q8KStride]
		var si, sm int32
		for j := 0; j < 8; j++ {
			sc, m := q4KScaleMin(j, blk[4:16])
			qs := blk[16+32*(j/2):]
			var s int32
			for l := 0; l < 32; l++ {
				q := qs[l] & 15
				if j&1 == 1 {
					q = qs[l] >> 4
				}
				s += int32(q) * int32(int8(act[32*j+l]))
			}
			si += sc * s
			bs := int32(int16(le16(act[q8KBsumOff+4*j:]))) + int32(int16(le16(act[q8KBsumOff+4*j+2:])))
			sm += m * bs
		}
		dy := f32at(act[q8KDOff:])
		sum += f16ToF32(le16(blk))*dy*float32(si) - f16ToF32(le16(blk[2:]))*dy*float32(sm)
	}
	return sum
}

// refQ6KDot is the dot of one Q6_K row with one Q8_K token:
// per super-block d·dy·Σ sc_g·((q−32)·a)_g over its 16 groups of 16.
func refQ6KDot(w, a []byte, nb int) float32 {
	var sum float32
	for b := 0; b < nb; b++ {
		blk := w[b*210 : b*210+210]
		act := a[b*q8KStride : b*q8KStride+q8KStride]
		var si int32
		for g := 0; g < 16; g++ {
			var s int32
			for i := 16 * g; i < 16*g+16; i++ {
				s += q6K(blk, i) * int32(int8(act[i]))
			}
			si += int32(int8(blk[192+g])) * s
		}
		sum += f16ToF32(le16(blk[208:])) * f32at(act[q8KDOff:]) * float32(si)
	}
	return sum
}

// q6K returns element i (0..255) of a Q6_K block as a signed value in
// [-32, 31]: 4 low bits from ql, 2 high bits from qh.
func q6K(blk []byte, i int) int32 {
	h, l := i/128, i%128 // half, then position within it
	ql := blk[64*h+l%64]
	if l >= 64 {
		ql >>= 4
	}
	qh := blk[128+32*h+l%32] >> (2 * (l / 32)) & 3
	return int32(ql&15|qh<<4) - 32
}

func refF32Dot(w []byte, x []float32) float32 {
	var s float32
	for i, v := range x {
		s += f32at(w[4*i:]) * v
	}
	return s
}

func refF16Dot(w []byte, x []float32) float32 {
	var s float32
	for i, v := range x {
		s += f16ToF32(le16(w[2*i:])) * v
	}
	return s
}

func refBF16Dot(w []byte, x []float32) float32 {
	var s float32
	for i, v := range x {
		s += bf16ToF32(le16(w[2*i:])) * v
	}
	return s
}

func refDotF32(a, b []float32) float32 {
	var s float32
	for i, v := range a[:len(b)] {
		s += v * b[i]
	}
	return s
}

func refAxpyF32(dst []float32, a float32, x []float32) {
	for i, v := range x[:len(dst)] {
		dst[i] += a * v
	}
}
