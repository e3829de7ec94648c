package quant

import "math"

// A note on float32 arithmetic in this package. GGML's reference code is C
// compiled for plain x86-64 (SSE2, no FMA), so every float operation is
// rounded to float32 on its own. The Go spec lets a compiler fuse x*y+z into
// one FMA (it does on arm64, and on amd64 with GOAMD64=v3), which would change
// low bits. An explicit float32(...) conversion forbids that fusion, so every
// product that feeds an addition or subtraction is written float32(x*y).

// FP16ToFloat32 converts an IEEE half-precision number to float32 as GGML's
// ggml_compute_fp16_to_fp32 does. The conversion is exact; a NaN keeps its
// sign and payload and comes back quiet.
func FP16ToFloat32(h uint16) float32 {
	// A transcription of ggml_compute_fp16_to_fp32 (after Maratyszcza's FP16
	// library), so that NaNs come out with the same bits as in GGML.
	w := uint32(h) << 16
	sign := w & 0x80000000
	twoW := w + w

	const expOffset = uint32(0xE0) << 23
	const expScale = float32(0x1.0p-112)
	normalized := math.Float32frombits((twoW>>4)+expOffset) * expScale

	const magicMask = uint32(126) << 23
	const magicBias = float32(0.5)
	denormalized := math.Float32frombits((twoW>>17)|magicMask) - magicBias

	const denormalizedCutoff = uint32(1) << 27
	var bits uint32
	if twoW < denormalizedCutoff {
		bits = math.Float32bits(denormalized)
	} else {
		bits = math.Float32bits(normalized)
	}
	return math.Float32frombits(sign | bits)
}

// Float32ToFP16 converts f to IEEE half precision as GGML's
// GGML_FP32_TO_FP16 does: round to nearest, ties to even; overflow gives
// ±Inf; results below the normal range become subnormals or ±0; every NaN
// becomes the quiet NaN 0x7E00 with f's sign.
func Float32ToFP16(f float32) uint16 {
	// A transcription of ggml_compute_fp32_to_fp16: the float additions do
	// the rounding, so they must be float32 operations exactly as in C.
	const scaleToInf = float32(0x1.0p+112)
	const scaleToZero = float32(0x1.0p-110)
	base := float32(float32(abs32(f)*scaleToInf) * scaleToZero)

	w := math.Float32bits(f)
	shl1W := w + w
	sign := w & 0x80000000
	bias := shl1W & 0xFF000000
	if bias < 0x71000000 {
		bias = 0x71000000
	}

	base = math.Float32frombits((bias>>1)+0x07800000) + base
	bits := math.Float32bits(base)
	expBits := (bits >> 13) & 0x00007C00
	mantissaBits := bits & 0x00000FFF
	nonsign := expBits + mantissaBits
	if shl1W > 0xFF000000 { // NaN
		return uint16(sign>>16) | 0x7E00
	}
	return uint16(sign>>16 | nonsign)
}

// BF16ToFloat32 converts a bfloat16 (the top half of a float32) to float32.
// It is exact.
func BF16ToFloat32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// Float32ToBF16 converts f to bfloat16 as GGML's ggml_compute_fp32_to_bf16
// does: round to nearest, ties to even; subnormals are kept, not flushed;
// a NaN keeps its sign and top payload bits and is made quiet.
func Float32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 { // NaN
		return uint16(u>>16) | 64
	}
	return uint16((u + (0x7fff + ((u >> 16) & 1))) >> 16)
}

func abs32(f float32) float32 {
	return math.Float32frombits(math.Float32bits(f) &^ 0x80000000)
}
