package quant

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"testing"
)

// storiesWeights returns the fp32 weights of ../llama2c/testdata/stories260K.bin
// (llama2.c format: a 7-int32 header, then the weights).
func storiesWeights(tb testing.TB) []float32 {
	tb.Helper()
	b, err := os.ReadFile("../llama2c/../llama2c/testdata/stories260K.bin")
	if err != nil {
		tb.Fatal(err)
	}
	b = b[28:]
	w := make([]float32, len(b)/4)
	for i := range w {
		w[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return w
}

func roundTrip(t *testing.T, typ Type, x []float32) []float32 {
	t.Helper()
	size, err := typ.RowBytes(len(x))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, size)
	if err := Quantize(typ, x, b); err != nil {
		t.Fatal(err)
	}
	y := make([]float32, len(x))
	if err := Dequantize(typ, b, y); err != nil {
		t.Fatal(err)
	}
	return y
}

// TestRoundTripErrorBounds holds every type to the error its format allows.
// Per element where the quantizer's choice is forced (F32/F16/BF16, Q8_0,
// Q4_0, Q8_K: a single scale from the block's largest value), and as a
// relative RMS error where the quantizer searches for scales (Q4_K, Q6_K),
// with bounds a little above what uniform rounding error predicts, so that a
// broken quantizer (wrong nibble, wrong scale) fails them by far.
func TestRoundTripErrorBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	gauss := make([]float32, 256*64)
	for i := range gauss {
		gauss[i] = float32(r.NormFloat64())
	}
	real := storiesWeights(t)
	real = real[:len(real)/256*256]
	for _, data := range []struct {
		name string
		x    []float32
	}{{"gaussian", gauss}, {"stories260K weights", real}} {
		x := data.x
		for _, c := range []struct {
			typ Type
			// per-element bound as a multiple of the block's absolute max
			// (0: not checked), and bound on RMS error / RMS of x
			perElem, relRMS float64
		}{
			{F32, 0, 0},
			{F16, 0, 0},
			{BF16, 0, 0},
			{Q8_0, 0.5/127 + 1.0/2048, 0.006}, // half a step of amax/127, plus fp16 rounding of d
			{Q4_0, 1.0/8 + 8.0/2048, 0.11},    // a full step at the clamped end (-amax → 7·d)
			{Q8K, 0.5/127 + 1e-6, 0.008},      // d is float32; the amax of 256 values is larger
			{Q4K, 0, 0.10},                    // 4 bits + min over 32 elements
			{Q6K, 0, 0.025},                   // 6 bits over 16 elements
		} {
			y := roundTrip(t, c.typ, x)
			var se, sx float64
			be := c.typ.BlockElems()
			for start := 0; start < len(x); start += be {
				var amax float64
				for _, v := range x[start : start+be] {
					amax = math.Max(amax, math.Abs(float64(v)))
				}
				for i := start; i < start+be; i++ {
					d := float64(y[i]) - float64(x[i])
					se += d * d
					sx += float64(x[i]) * float64(x[i])
					var bound float64
					switch c.typ {
					case F32:
						bound = 0
					case F16: // normal range: half an ulp of 11 bits
						bound = math.Abs(float64(x[i])) * 0x1p-11
						if math.Abs(float64(x[i])) < 0x1p-14 {
							bound = 0x1p-25 // subnormal range: half of 2^-24
						}
					case BF16:
						bound = math.Abs(float64(x[i])) * 0x1p-8
					default:
						bound = c.perElem * amax
					}
					if c.perElem != 0 || c.typ == F32 || c.typ == F16 || c.typ == BF16 {
						if math.Abs(d) > bound*(1+1e-6) {
							t.Fatalf("%s %s: element %d: %g came back as %g, error %g over the bound %g", data.name, c.typ, i, x[i], y[i], math.Abs(d), bound)
						}
					}
				}
			}
			rel := math.Sqrt(se / sx)
			if c.relRMS != 0 && rel > c.relRMS {
				t.Errorf("%s %s: relative RMS error %.5f, want at most %.5f", data.name, c.typ, rel, c.relRMS)
			}
			t.Logf("%s %s: relative RMS error %.5f", data.name, c.typ, rel)
		}
	}
}
