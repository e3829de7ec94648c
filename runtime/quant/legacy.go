package quant

import "encoding/binary"

// The 32-element block formats (ggml-common.h):
//
//	Q8_0 {fp16 d; int8 qs[32]}    x[j] = qs[j]·d
//	Q4_0 {fp16 d; uint8 qs[16]}   x[j] = (qs[j]&15 − 8)·d, x[j+16] = (qs[j]>>4 − 8)·d
//
// The functions follow ggml-quants.c's dequantize_row_q8_0/q4_0 and
// quantize_row_q8_0_ref/q4_0_ref line by line.

const (
	qk8_0 = 32
	qk4_0 = 32
)

func dequantizeQ8_0(src []byte, dst []float32) {
	for ; len(dst) > 0; src, dst = src[34:], dst[qk8_0:] {
		d := fp16At(src)
		qs := src[2:34]
		for j, q := range qs {
			dst[j] = float32(int8(q)) * d
		}
	}
}

func quantizeQ8_0(src []float32, dst []byte) {
	for ; len(src) > 0; src, dst = src[qk8_0:], dst[34:] {
		x := src[:qk8_0]
		var amax float32
		for _, v := range x {
			// MAX(amax, fabsf(v)) as ggml's macro has it, NaN included.
			if a := abs32(v); !(amax > a) {
				amax = a
			}
		}
		d := amax / ((1 << 7) - 1)
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(dst, Float32ToFP16(d))
		for j, v := range x {
			// C: qs[j] = roundf(x0), a float to int8_t cast.
			dst[2+j] = uint8(truncInt32(roundf(float32(v * id))))
		}
	}
}

func dequantizeQ4_0(src []byte, dst []float32) {
	for ; len(dst) > 0; src, dst = src[18:], dst[qk4_0:] {
		d := fp16At(src)
		qs := src[2:18]
		for j, q := range qs {
			x0 := int32(q&0x0F) - 8
			x1 := int32(q>>4) - 8
			dst[j] = float32(x0) * d
			dst[j+qk4_0/2] = float32(x1) * d
		}
	}
}

func quantizeQ4_0(src []float32, dst []byte) {
	for ; len(src) > 0; src, dst = src[qk4_0:], dst[18:] {
		x := src[:qk4_0]
		var amax, xmax float32 // absolute max, and the value that has it
		for _, v := range x {
			if a := abs32(v); amax < a {
				amax = a
				xmax = v
			}
		}
		d := xmax / -8
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(dst, Float32ToFP16(d))
		for j := 0; j < qk4_0/2; j++ {
			x0 := float32(x[j] * id)
			x1 := float32(x[qk4_0/2+j] * id)
			// C: MIN(15, (int8_t)(x0 + 8.5f)), stored in a uint8_t.
			xi0 := uint8(min(15, int32(int8(truncInt32(x0+8.5)))))
			xi1 := uint8(min(15, int32(int8(truncInt32(x1+8.5)))))
			dst[2+j] = xi0 | xi1<<4
		}
	}
}
