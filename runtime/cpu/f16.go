package cpu

import "math"

// f16ToF32 converts an IEEE 754 half-precision value to float32 exactly
// (subnormals, infinities and NaN payloads included), as F16C's VCVTPH2PS does.
func f16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf or NaN: keep the payload, quiet NaNs stay quiet
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	case mant == 0: // ±0
		return math.Float32frombits(sign)
	}
	// Subnormal half: value is mant·2⁻²⁴; normalise it for float32.
	e := uint32(113)
	for mant&0x400 == 0 {
		mant <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
}

// bf16ToF32 widens a bfloat16 (the top half of a float32) to float32.
func bf16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// f16Table maps every half-precision bit pattern to its float32 value. The
// quantized kernels look block scales up here: one load instead of the four
// instructions a VCVTPH2PS of a single scalar takes. 256 KiB, built once.
var f16Table = func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = f16ToF32(uint16(i))
	}
	return &t
}()
