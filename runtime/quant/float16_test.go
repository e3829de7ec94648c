package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

// halfValue decodes an IEEE binary16 from its definition, independently of
// FP16ToFloat32; ok is false for NaN.
func halfValue(h uint16) (v float64, ok bool) {
	e, m := int(h>>10&0x1F), float64(h&0x3FF)
	switch {
	case e == 0x1F && m != 0:
		return 0, false
	case e == 0x1F:
		v = math.Inf(1)
	case e == 0:
		v = math.Ldexp(m, -24)
	default:
		v = math.Ldexp(1024+m, e-25)
	}
	if h&0x8000 != 0 {
		v = -v
	}
	return v, true
}

// nearestHalf rounds f to binary16 from the definition: the nearest value,
// ties to the even mantissa, ±Inf from 65520 (the midpoint of 65504 and
// 2^16) up.
func nearestHalf(f float32) uint16 {
	a := math.Abs(float64(f))
	var sign uint16
	if math.Signbit(float64(f)) {
		sign = 0x8000
	}
	if a >= 65520 {
		return sign | 0x7C00
	}
	// The largest finite half not above a (halves are ordered by their bits).
	lo, hi := uint16(0), uint16(0x7BFF)
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if v, _ := halfValue(mid); v <= a {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	below, _ := halfValue(lo)
	above, _ := halfValue(lo + 1)
	switch da, db := a-below, above-a; {
	case da < db:
		return sign | lo
	case db < da:
		return sign | (lo + 1)
	case lo&1 == 0:
		return sign | lo
	default:
		return sign | (lo + 1)
	}
}

func TestFP16KnownValues(t *testing.T) {
	for _, c := range []struct {
		f float32
		h uint16
	}{
		{0, 0x0000},
		{float32(math.Copysign(0, -1)), 0x8000},
		{1, 0x3C00},
		{-2, 0xC000},
		{0.5, 0x3800},
		{65504, 0x7BFF},    // largest finite
		{65519.99, 0x7BFF}, // just under the midpoint to 2^16
		{65520, 0x7C00},    // the midpoint rounds to even: Inf
		{float32(math.Inf(-1)), 0xFC00},
		{0x1p-14, 0x0400},             // smallest normal
		{0x1p-24, 0x0001},             // smallest subnormal
		{0x1p-25, 0x0000},             // half of it: tie to even (0)
		{0x1.8p-24, 0x0002},           // 1.5 of it: tie to even (2)
		{0x1.000002p-25, 0x0001},      // just over the tie
		{1 + 0x1p-11, 0x3C00},         // tie between 1 and 1+2^-10: even
		{1 + 0x1.8p-10, 0x3C02},       // tie between 1+2^-10 and 1+2^-9: even
		{float32(math.NaN()), 0x7E00}, // GGML's canonical quiet NaN
		{math.Float32frombits(0xFF800001), 0xFE00},
	} {
		if got := Float32ToFP16(c.f); got != c.h {
			t.Errorf("Float32ToFP16(%g [%#08x]) = %#04x, want %#04x", c.f, math.Float32bits(c.f), got, c.h)
		}
	}
}

func TestFP16AllHalves(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		f := FP16ToFloat32(h)
		want, ok := halfValue(h)
		if !ok {
			bits := math.Float32bits(f)
			if !math.IsNaN(float64(f)) || bits>>31 != uint32(h>>15) || bits&0x400000 == 0 || bits>>13&0x3FF != uint32(h&0x3FF)|0x200 {
				t.Fatalf("FP16ToFloat32(%#04x) = %#08x, want the quiet NaN with its sign and payload", h, bits)
			}
			if back := Float32ToFP16(f); back != h&0x8000|0x7E00 {
				t.Fatalf("Float32ToFP16(FP16ToFloat32(%#04x)) = %#04x, want %#04x", h, back, h&0x8000|0x7E00)
			}
			continue
		}
		if float64(f) != want || math.Signbit(float64(f)) != (h&0x8000 != 0) {
			t.Fatalf("FP16ToFloat32(%#04x) = %g, want %g", h, f, want)
		}
		if back := Float32ToFP16(f); back != h {
			t.Fatalf("Float32ToFP16(FP16ToFloat32(%#04x)) = %#04x", h, back)
		}
	}
}

// fp16Probes returns float32s around every binary16 value: the midpoints to
// the next half and one float32 step either side of them, where rounding
// decides.
func fp16Probes() []float32 {
	var out []float32
	for h := uint16(0); h < 0x7C00; h++ {
		a, _ := halfValue(h)
		b, _ := halfValue(h + 1)
		mid := float32((a + b) / 2) // exact: a and b have few bits
		out = append(out, float32(a), mid, math.Nextafter32(mid, 0), math.Nextafter32(mid, 70000))
	}
	return out
}

func TestFloat32ToFP16RoundsToNearestEven(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	probes := fp16Probes()
	for range 200000 {
		// Random floats from below the subnormals to beyond the range.
		probes = append(probes, float32(math.Ldexp(r.Float64(), r.IntN(50)-30)))
	}
	for _, f := range probes {
		for _, v := range []float32{f, -f} {
			if got, want := Float32ToFP16(v), nearestHalf(v); got != want {
				t.Fatalf("Float32ToFP16(%g [%#08x]) = %#04x, want %#04x", v, math.Float32bits(v), got, want)
			}
		}
	}
}

func TestBF16(t *testing.T) {
	// Known values.
	for _, c := range []struct {
		f float32
		h uint16
	}{
		{1, 0x3F80},
		{-2, 0xC000},
		{math.Float32frombits(0x3F808000), 0x3F80}, // tie, even below
		{math.Float32frombits(0x3F818000), 0x3F82}, // tie, even above
		{math.Float32frombits(0x3F808001), 0x3F81},
		{math.Float32frombits(0x7F7FFFFF), 0x7F80}, // max float32 rounds to Inf
		{math.Float32frombits(0x00000001), 0x0000}, // subnormal, rounded, not flushed
		{math.Float32frombits(0x00018000), 0x0002},
		{math.Float32frombits(0x7F800001), 0x7FC0}, // signalling NaN made quiet
		{math.Float32frombits(0xFFC12345), 0xFFC1},
	} {
		if got := Float32ToBF16(c.f); got != c.h {
			t.Errorf("Float32ToBF16(%#08x) = %#04x, want %#04x", math.Float32bits(c.f), got, c.h)
		}
	}
	// Every bf16 is exact as float32 and comes back unchanged (NaNs quiet).
	for i := range 1 << 16 {
		h := uint16(i)
		f := BF16ToFloat32(h)
		if math.Float32bits(f) != uint32(h)<<16 {
			t.Fatalf("BF16ToFloat32(%#04x) = %#08x", h, math.Float32bits(f))
		}
		want := h
		if math.IsNaN(float64(f)) {
			want |= 0x40
		}
		if got := Float32ToBF16(f); got != want {
			t.Fatalf("Float32ToBF16(BF16ToFloat32(%#04x)) = %#04x, want %#04x", h, got, want)
		}
	}
	// Random finite floats round to the nearer neighbour, ties to even.
	r := rand.New(rand.NewPCG(3, 4))
	for range 200000 {
		f := math.Float32frombits(r.Uint32())
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			continue
		}
		got := Float32ToBF16(f)
		lo := uint16(math.Float32bits(f) >> 16) // truncated: toward zero
		a, x := float64(BF16ToFloat32(lo)), float64(f)
		b := float64(BF16ToFloat32(lo + 1)) // away from zero
		if (lo+1)&0x7FFF == 0x7F80 {
			// Past the largest finite bf16 lies 2^128 (with an unbounded
			// exponent), which is what rounds to Inf.
			b = math.Copysign(0x1p128, x)
		}
		want := lo
		if da, db := math.Abs(x-a), math.Abs(b-x); db < da || (da == db && lo&1 == 1) {
			want = lo + 1
		}
		if got != want {
			t.Fatalf("Float32ToBF16(%#08x) = %#04x, want %#04x", math.Float32bits(f), got, want)
		}
	}
}
