package quant

import (
	"math/rand/v2"
	"testing"
)

// benchData returns 64Ki gaussian floats and their encoding as typ.
func benchData(b *testing.B, typ Type) ([]float32, []byte) {
	r := rand.New(rand.NewPCG(1, 1))
	x := make([]float32, 1<<16)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	size, _ := typ.RowBytes(len(x))
	enc := make([]byte, size)
	if err := Quantize(typ, x, enc); err != nil {
		b.Fatal(err)
	}
	return x, enc
}

// BenchmarkDequantize reports throughput in output bytes (4 per element).
func BenchmarkDequantize(b *testing.B) {
	for _, typ := range convertible {
		b.Run(typ.String(), func(b *testing.B) {
			x, enc := benchData(b, typ)
			b.SetBytes(int64(4 * len(x)))
			for b.Loop() {
				if err := Dequantize(typ, enc, x); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkQuantize reports throughput in input bytes (4 per element).
func BenchmarkQuantize(b *testing.B) {
	for _, typ := range convertible {
		b.Run(typ.String(), func(b *testing.B) {
			x, enc := benchData(b, typ)
			b.SetBytes(int64(4 * len(x)))
			for b.Loop() {
				if err := Quantize(typ, x, enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
