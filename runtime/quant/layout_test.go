package quant

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"
)

// The blocks below are built by hand from ggml-common.h's struct
// definitions, and the expected floats computed from the formats' formulas,
// independently of the decoding code. Scales are small powers of two, so
// every product is exact.

func dequantizeOrFail(t *testing.T, typ Type, block []byte) []float32 {
	t.Helper()
	got := make([]float32, typ.BlockElems())
	if err := Dequantize(typ, block, got); err != nil {
		t.Fatal(err)
	}
	return got
}

func expectFloats(t *testing.T, typ Type, got, want []float32) {
	t.Helper()
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s element %d = %g, want %g", typ, i, got[i], want[i])
		}
	}
}

func TestQ8_0BlockLayout(t *testing.T) {
	b := make([]byte, 34)
	binary.LittleEndian.PutUint16(b, 0x3800) // d = 0.5
	want := make([]float32, 32)
	for j := range 32 {
		q := int8(j*8 - 128) // -128 .. 120
		b[2+j] = byte(q)
		want[j] = float32(q) * 0.5
	}
	expectFloats(t, Q8_0, dequantizeOrFail(t, Q8_0, b), want)
}

func TestQ4_0BlockLayout(t *testing.T) {
	b := make([]byte, 18)
	binary.LittleEndian.PutUint16(b, 0xC000) // d = -2
	want := make([]float32, 32)
	for j := range 16 {
		lo, hi := j, 15-j
		b[2+j] = byte(lo | hi<<4)
		want[j] = float32(lo-8) * -2
		want[j+16] = float32(hi-8) * -2
	}
	expectFloats(t, Q4_0, dequantizeOrFail(t, Q4_0, b), want)
}

func TestQ4_KBlockLayout(t *testing.T) {
	scales := [8]uint8{1, 63, 17, 32, 5, 48, 0, 62}
	mins := [8]uint8{63, 2, 33, 0, 47, 16, 31, 1}
	b := make([]byte, 144)
	binary.LittleEndian.PutUint16(b[0:], 0x3400) // d = 0.25
	binary.LittleEndian.PutUint16(b[2:], 0x3000) // dmin = 0.125
	for j := range 4 {                           // bytes 0..7: low 6 bits of scales/mins 0..3, top 2 bits of 4..7
		b[4+j] = scales[j] | (scales[j+4]>>4)<<6
		b[8+j] = mins[j] | (mins[j+4]>>4)<<6
		b[12+j] = scales[j+4]&15 | (mins[j+4]&15)<<4 // bytes 8..11: low 4 bits of 4..7
	}
	want := make([]float32, 256)
	for e := range 256 {
		q := uint8((e*7 + e/16) % 16)
		sub := e / 32        // sub-block: its own scale and min
		chunk := sub / 2     // 32 bytes of qs serve two sub-blocks
		i := chunk*32 + e%32 // byte within qs
		if sub%2 == 0 {      // even sub-blocks in the low nibbles
			b[16+i] |= q
		} else {
			b[16+i] |= q << 4
		}
		want[e] = 0.25*float32(scales[sub])*float32(q) - 0.125*float32(mins[sub])
	}
	for j := range 8 {
		if sc, m := ScaleMinK4(j, b[4:16]); sc != scales[j] || m != mins[j] {
			t.Errorf("ScaleMinK4(%d) = %d, %d, want %d, %d", j, sc, m, scales[j], mins[j])
		}
	}
	expectFloats(t, Q4K, dequantizeOrFail(t, Q4K, b), want)
}

func TestQ6_KBlockLayout(t *testing.T) {
	b := make([]byte, 210)
	var sc [16]int8
	for i := range sc {
		sc[i] = int8(i*17 - 128)
		b[192+i] = byte(sc[i])
	}
	binary.LittleEndian.PutUint16(b[208:], 0x2C00) // d = 1/16
	want := make([]float32, 256)
	for e := range 256 {
		q := uint8((e*11 + e/64) % 64) // 6 bits
		half, r := e/128, e%128        // each 128 elements: ql[64], qh[32], scales[8]
		quarter, l := r/32, r%32
		qlIdx := 64*half + l + 32*(quarter&1)
		if quarter < 2 {
			b[qlIdx] |= q & 15
		} else {
			b[qlIdx] |= (q & 15) << 4
		}
		b[128+32*half+l] |= (q >> 4) << (2 * quarter)
		s := sc[8*half+l/16+2*quarter]
		want[e] = float32(s) / 16 * float32(int(q)-32)
	}
	expectFloats(t, Q6K, dequantizeOrFail(t, Q6K, b), want)
}

func TestQ8_KBlockLayout(t *testing.T) {
	b := make([]byte, 292)
	binary.LittleEndian.PutUint32(b, math.Float32bits(-0.75))
	want := make([]float32, 256)
	for j := range 256 {
		q := int8(j - 128)
		b[4+j] = byte(q)
		want[j] = -0.75 * float32(q)
	}
	expectFloats(t, Q8K, dequantizeOrFail(t, Q8K, b), want)
}

func TestQuantizeQ8_0Fields(t *testing.T) {
	x := make([]float32, 32)
	for j := range x {
		x[j] = float32(j - 16) // amax 16
	}
	b := make([]byte, 34)
	if err := Quantize(Q8_0, x, b); err != nil {
		t.Fatal(err)
	}
	if got, want := binary.LittleEndian.Uint16(b), Float32ToFP16(16.0/127); got != want {
		t.Errorf("d = %#04x, want fp16(16/127) = %#04x", got, want)
	}
	for j := range x {
		// x·127/16 is never a tie here, so rounding is unambiguous.
		if got, want := int8(b[2+j]), int8(math.Round(float64(x[j])*127/16)); got != want {
			t.Errorf("qs[%d] = %d, want %d", j, got, want)
		}
	}
}

func TestQuantizeQ8_KFields(t *testing.T) {
	x := make([]float32, 256)
	for j := range x {
		x[j] = float32(math.Sin(float64(j))) * 3
	}
	x[77] = -4 // the max magnitude: it becomes -127 (iscale = -127/max), so d = 4/127
	b := make([]byte, 292)
	if err := Quantize(Q8K, x, b); err != nil {
		t.Fatal(err)
	}
	if d := math.Float32frombits(binary.LittleEndian.Uint32(b)); math.Abs(float64(d)-4.0/127) > 1e-7 {
		t.Errorf("d = %g, want 4/127", d)
	}
	if q := int8(b[4+77]); q != -127 {
		t.Errorf("qs[77] = %d, want -127", q)
	}
	for j := range 16 {
		var sum int
		for _, q := range b[4+16*j : 4+16*j+16] {
			sum += int(int8(q))
		}
		if got := int16(binary.LittleEndian.Uint16(b[260+2*j:])); int(got) != sum {
			t.Errorf("bsums[%d] = %d, want the sum of its 16 quants, %d", j, got, sum)
		}
	}
}

// TestQuantizeZeros checks that zeros come back as zeros and that Quantize
// writes every byte of dst (GGML leaves an all-zero Q8_K block's bsums
// unwritten; Quantize zeroes them).
func TestQuantizeZeros(t *testing.T) {
	for _, typ := range convertible {
		n := 256 * 4
		size, _ := typ.RowBytes(n)
		var got [2][]byte
		for k, stale := range []byte{0x00, 0xA5} {
			got[k] = make([]byte, size)
			for i := range got[k] {
				got[k][i] = stale
			}
			if err := Quantize(typ, make([]float32, n), got[k]); err != nil {
				t.Fatal(err)
			}
		}
		for i := range got[0] {
			if got[0][i] != got[1][i] {
				t.Fatalf("%s: byte %d depends on what dst held before: %#02x vs %#02x", typ, i, got[0][i], got[1][i])
			}
		}
		y := make([]float32, n)
		for i := range y {
			y[i] = 1
		}
		if err := Dequantize(typ, got[0], y); err != nil {
			t.Fatal(err)
		}
		for i, v := range y {
			if v != 0 {
				t.Fatalf("%s: zeros came back with element %d = %g", typ, i, v)
			}
		}
	}
}

func TestSizeAndTypeErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want []string
	}{
		{"unsupported type", Dequantize(Q5K, make([]byte, 176), make([]float32, 256)), []string{"Q5_K", "not supported", "Q4_K"}},
		{"unknown type", Quantize(Type(99), make([]float32, 1), make([]byte, 4)), []string{"type(99)", "not supported"}},
		{"partial block", Dequantize(Q4_0, make([]byte, 18), make([]float32, 33)), []string{"Q4_0", "33 elements", "blocks of 32"}},
		{"short src", Dequantize(Q6K, make([]byte, 209), make([]float32, 256)), []string{"Q6_K", "210 bytes", "src has 209"}},
		{"long src", Dequantize(F16, make([]byte, 10), make([]float32, 4)), []string{"F16", "8 bytes", "src has 10"}},
		{"partial super-block", Quantize(Q8K, make([]float32, 255), make([]byte, 292)), []string{"Q8_K", "255 elements", "blocks of 256"}},
		{"short dst", Quantize(Q8_0, make([]float32, 64), make([]byte, 67)), []string{"Q8_0", "68 bytes", "dst has 67"}},
	} {
		if c.err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(c.err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", c.name, c.err, w)
			}
		}
	}
	if _, err := Q4K.RowBytes(-256); err == nil {
		t.Error("RowBytes(-256): no error")
	}
	if err := Dequantize(Q4_0, nil, nil); err != nil {
		t.Errorf("zero elements: %v", err)
	}
}
