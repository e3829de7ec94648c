package quant

import (
	"os"
	"testing"
)

// FuzzDequantize feeds arbitrary bytes (tensor data from an untrusted file)
// to Dequantize for each supported type, and its output, NaNs and
// infinities included, back to Quantize: neither may panic or fail on
// correctly sized input, and wrongly sized input must be an error.
func FuzzDequantize(f *testing.F) {
	// Seeds: raw bytes of a real checkpoint, and its weights as each type.
	raw, err := os.ReadFile("../llama2c/testdata/stories260K.bin")
	if err != nil {
		f.Fatal(err)
	}
	weights := storiesWeights(f)
	for i, typ := range convertible {
		f.Add(byte(i), raw[:2*typ.BlockBytes()])
		f.Add(byte(i), raw[28+4096:28+4096+3*typ.BlockBytes()+5])
		x := weights[256*100 : 256*102]
		size, _ := typ.RowBytes(len(x))
		b := make([]byte, size)
		if err := Quantize(typ, x, b); err != nil {
			f.Fatal(err)
		}
		f.Add(byte(i), b)
	}
	f.Fuzz(func(t *testing.T, sel byte, data []byte) {
		typ := convertible[int(sel)%len(convertible)]
		be, bb := typ.BlockElems(), typ.BlockBytes()
		blocks := len(data) / bb
		n := blocks * be
		x := make([]float32, n)
		if err := Dequantize(typ, data[:blocks*bb], x); err != nil {
			t.Fatalf("%s, %d whole blocks: %v", typ, blocks, err)
		}
		if err := Dequantize(typ, data, make([]float32, n+be)); err == nil {
			t.Fatalf("%s: %d bytes decoded as %d elements without an error", typ, len(data), n+be)
		}
		// Any type id, supported or not, known or not: an error, not a panic.
		_ = Dequantize(Type(sel), data, make([]float32, len(data)))

		b := make([]byte, blocks*bb)
		if err := Quantize(typ, x, b); err != nil {
			t.Fatalf("%s: quantizing what was decoded: %v", typ, err)
		}
		y := make([]float32, n)
		if err := Dequantize(typ, b, y); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
	})
}
