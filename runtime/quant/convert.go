package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// codec is a type's row dequantizer and quantizer. Both take whole blocks
// and exactly sized slices; Dequantize and Quantize check the sizes first.
type codec struct {
	dequantize func(src []byte, dst []float32)
	quantize   func(src []float32, dst []byte)
}

// converters holds the codec of every type this package converts.
var converters = map[Type]codec{
	F32:  {dequantizeF32, quantizeF32},
	F16:  {dequantizeF16, quantizeF16},
	BF16: {dequantizeBF16, quantizeBF16},
	Q8_0: {dequantizeQ8_0, quantizeQ8_0},
	Q4_0: {dequantizeQ4_0, quantizeQ4_0},
	Q4K:  {dequantizeQ4K, quantizeQ4K},
	Q6K:  {dequantizeQ6K, quantizeQ6K},
	Q8K:  {dequantizeQ8K, quantizeQ8K},
}

// convertible lists the converted types in the order error messages name them.
var convertible = []Type{F32, F16, BF16, Q8_0, Q4_0, Q4K, Q6K, Q8K}

// CanConvert reports whether Dequantize and Quantize handle t.
func CanConvert(t Type) bool {
	_, ok := converters[t]
	return ok
}

// Dequantize decodes len(dst) elements of type t from src into dst, giving
// bit for bit the floats GGML's dequantize_row_* (or its F16/BF16 row
// conversion) gives. len(dst) must be a whole number of t's blocks and src
// exactly t.RowBytes(len(dst)) bytes long. Any bytes are accepted: a block
// whose scale is a NaN or infinity decodes to NaNs or infinities, as in GGML.
func Dequantize(t Type, src []byte, dst []float32) error {
	c, err := converter(t, "Dequantize")
	if err != nil {
		return err
	}
	want, err := t.RowBytes(len(dst))
	if err != nil {
		return fmt.Errorf("quant: Dequantize: %w", err)
	}
	if len(src) != want {
		return fmt.Errorf("quant: Dequantize %s: %d elements take %d bytes, but src has %d; pass the tensor's whole data", t, len(dst), want, len(src))
	}
	c.dequantize(src, dst)
	return nil
}

// Quantize encodes src as type t into dst, byte for byte as GGML's
// quantize_row_*_ref (ggml_quantize_chunk without an importance matrix, as
// llama-quantize does by default). len(src) must be a whole number of t's
// blocks and dst exactly t.RowBytes(len(src)) bytes long.
//
// The one deliberate difference: for an all-zero Q8_K block GGML leaves the
// block's bsums as they were; Quantize writes zeros there.
func Quantize(t Type, src []float32, dst []byte) error {
	c, err := converter(t, "Quantize")
	if err != nil {
		return err
	}
	want, err := t.RowBytes(len(src))
	if err != nil {
		return fmt.Errorf("quant: Quantize: %w", err)
	}
	if len(dst) != want {
		return fmt.Errorf("quant: Quantize %s: %d elements take %d bytes, but dst has %d; size it with RowBytes", t, len(src), want, len(dst))
	}
	c.quantize(src, dst)
	return nil
}

func converter(t Type, op string) (codec, error) {
	c, ok := converters[t]
	if !ok {
		return c, fmt.Errorf("quant: %s: tensor type %s is not supported (supported: %v); convert the model to one of those", op, t, convertible)
	}
	return c, nil
}

func dequantizeF32(src []byte, dst []float32) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func quantizeF32(src []float32, dst []byte) {
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

func dequantizeF16(src []byte, dst []float32) {
	for i := range dst {
		dst[i] = FP16ToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

func quantizeF16(src []float32, dst []byte) {
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], Float32ToFP16(v))
	}
}

func dequantizeBF16(src []byte, dst []float32) {
	for i := range dst {
		dst[i] = BF16ToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

func quantizeBF16(src []float32, dst []byte) {
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], Float32ToBF16(v))
	}
}

// fp16At reads the little-endian half-precision number at b[0:2].
func fp16At(b []byte) float32 {
	return FP16ToFloat32(binary.LittleEndian.Uint16(b))
}

// nearestInt is GGML's nearest_int: adding 1.5·2^23 leaves the rounded
// integer (ties to even) in the low mantissa bits. Callers pass an already
// rounded float32 (see the note in float16.go). Out of its range (|f| over
// 2^22) it returns garbage, the same garbage as GGML, which callers clamp.
func nearestInt(f float32) int32 {
	val := f + 12582912
	i := int32(math.Float32bits(val))
	return (i & 0x007fffff) - 0x00400000
}

// truncInt32 converts f to int32 toward zero as x86's cvttss2si does, which
// is what GGML's C casts compile to: NaN and out-of-range values give
// math.MinInt32. (Go leaves those cases to the platform.)
func truncInt32(f float32) int32 {
	if !(f > -2147483904 && f < 2147483648) {
		return math.MinInt32
	}
	return int32(f)
}

// roundf rounds half away from zero, as C's roundf.
func roundf(f float32) float32 {
	return float32(math.Round(float64(f)))
}
