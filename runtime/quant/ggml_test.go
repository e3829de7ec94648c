//go:build cgo

package quant_test

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/leo-operator/leo/internal/ggmlref"
	"github.com/leo-operator/leo/runtime/quant"
)

// These tests hold the package to GGML itself: its libggml-base.so, from the
// llama.cpp build that node-llama-cpp 3.21.1 ships (hack/peer/install.sh
// installs it, from npm, on first use). Bytes and float bits must be equal.

var (
	libOnce sync.Once
	lib     *ggmlref.Lib
	libErr  error
)

// loadGGML installs (first time) and loads GGML, once per test binary.
func loadGGML() (*ggmlref.Lib, error) {
	libOnce.Do(func() {
		var path string
		if path, libErr = ggmlref.PeerLib(); libErr == nil {
			lib, libErr = ggmlref.Open(path)
		}
	})
	return lib, libErr
}

func ggml(t *testing.T) *ggmlref.Lib {
	t.Helper()
	l, err := loadGGML()
	if err != nil {
		t.Fatalf("loading GGML: %v", err)
	}
	return l
}

// The types Dequantize and Quantize support.
var types = []quant.Type{quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q4_0, quant.Q4K, quant.Q6K, quant.Q8K}

func TestGGMLVersion(t *testing.T) {
	v, commit := ggml(t).Version()
	t.Logf("GGML %s (commit %s) from %s", v, commit, ggml(t).Path())
}

// TestTypesMatchGGML compares types.go's names and layouts with GGML's.
func TestTypesMatchGGML(t *testing.T) {
	l := ggml(t)
	for id := range uint32(64) {
		typ := quant.Type(id)
		name, elems, size, _, ok := l.Traits(typ)
		if !typ.Known() {
			if ok {
				t.Logf("GGML has type %d (%s) that package quant does not know", id, name)
			}
			continue
		}
		if !ok {
			t.Errorf("%s (%d): GGML has no such type", typ, id)
			continue
		}
		if !strings.EqualFold(name, typ.String()) || elems != typ.BlockElems() || size != typ.BlockBytes() {
			t.Errorf("type %d: quant says %s, %d elements in %d bytes; GGML says %s, %d in %d", id, typ, typ.BlockElems(), typ.BlockBytes(), name, elems, size)
		}
		if quant.CanConvert(typ) {
			if _, err := l.Quantize(typ, make([]float32, max(elems, 256))); err != nil {
				t.Errorf("%s: GGML cannot quantize it: %v", typ, err)
			}
		}
	}
}

func TestFP16MatchesGGML(t *testing.T) {
	l := ggml(t)
	// Every half (NaNs included) to float32.
	halves := make([]byte, 2<<16)
	for i := range 1 << 16 {
		binary.LittleEndian.PutUint16(halves[2*i:], uint16(i))
	}
	compareDequantize(t, l, quant.F16, halves, 1<<16)
	for _, h := range []uint16{0, 0x0001, 0x03FF, 0x0400, 0x3C00, 0x7BFF, 0x7C00, 0x7C01, 0x7E00, 0xFC00, 0xFFFF} {
		if got, want := quant.FP16ToFloat32(h), l.FP16ToFloat32(h); math.Float32bits(got) != math.Float32bits(want) {
			t.Errorf("FP16ToFloat32(%#04x) = %#08x, GGML %#08x", h, math.Float32bits(got), math.Float32bits(want))
		}
	}
	// float32 to half: around every half's rounding boundaries, both signs,
	// plus random bit patterns (NaNs, infinities and all).
	var x []float32
	for i := range 0x7C01 {
		v := quant.FP16ToFloat32(uint16(i))
		next := quant.FP16ToFloat32(uint16(i + 1))
		mid := float32((float64(v) + float64(next)) / 2)
		for _, f := range []float32{v, mid, math.Nextafter32(mid, 0), math.Nextafter32(mid, 1e9)} {
			x = append(x, f, -f)
		}
	}
	r := rand.New(rand.NewPCG(7, 8))
	for range 1 << 20 {
		x = append(x, math.Float32frombits(r.Uint32()))
	}
	compareQuantize(t, l, quant.F16, x, fmt.Sprintf("%d boundary and random floats", len(x)))
	for _, f := range x[:4096] {
		if got, want := quant.Float32ToFP16(f), l.Float32ToFP16(f); got != want {
			t.Fatalf("Float32ToFP16(%#08x) = %#04x, GGML %#04x", math.Float32bits(f), got, want)
		}
	}
}

func TestBF16MatchesGGML(t *testing.T) {
	l := ggml(t)
	halves := make([]byte, 2<<16)
	for i := range 1 << 16 {
		binary.LittleEndian.PutUint16(halves[2*i:], uint16(i))
	}
	compareDequantize(t, l, quant.BF16, halves, 1<<16)
	var x []float32
	for i := range 1 << 16 {
		// Each bf16 value, the ties after it and one float32 step either side.
		base := uint32(i) << 16
		for _, bits := range []uint32{base, base | 0x8000, base | 0x7FFF, base | 0x8001, base | 0x0001, base | 0xFFFF} {
			x = append(x, math.Float32frombits(bits))
		}
	}
	r := rand.New(rand.NewPCG(9, 10))
	for range 1 << 20 {
		x = append(x, math.Float32frombits(r.Uint32()))
	}
	compareQuantize(t, l, quant.BF16, x, fmt.Sprintf("%d boundary and random floats", len(x)))
	for _, f := range x[:4096] {
		if got, want := quant.Float32ToBF16(f), l.Float32ToBF16(f); got != want {
			t.Fatalf("Float32ToBF16(%#08x) = %#04x, GGML %#04x", math.Float32bits(f), got, want)
		}
		h := uint16(math.Float32bits(f) >> 16)
		if got, want := quant.BF16ToFloat32(h), l.BF16ToFloat32(h); math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("BF16ToFloat32(%#04x) = %#08x, GGML %#08x", h, math.Float32bits(got), math.Float32bits(want))
		}
	}
}

// inputCase is a named way of filling n floats.
type inputCase struct {
	name string
	fill func(r *rand.Rand, x []float32)
}

func gaussian(scale float64) func(r *rand.Rand, x []float32) {
	return func(r *rand.Rand, x []float32) {
		for i := range x {
			x[i] = float32(r.NormFloat64() * scale)
		}
	}
}

// inputCases are the inputs every quantizer is compared on: the shapes of
// real weights and activations, and the corners of each algorithm (all-zero
// groups, constant groups, one outlier, rounding ties, scales that overflow
// fp16, magnitudes near float32's limits).
var inputCases = []inputCase{
	{"gaussian", gaussian(1)},
	{"gaussian weights σ=0.02", gaussian(0.02)},
	{"uniform [-1,1)", func(r *rand.Rand, x []float32) {
		for i := range x {
			x[i] = float32(r.Float64()*2 - 1)
		}
	}},
	{"zeros", func(r *rand.Rand, x []float32) { clear(x) }},
	{"negative zeros", func(r *rand.Rand, x []float32) {
		for i := range x {
			x[i] = float32(math.Copysign(0, -1))
		}
	}},
	{"tiny 1e-6", gaussian(1e-6)},
	{"tiny 1e-16 (below GROUP_MAX_EPS)", gaussian(1e-16)},
	{"subnormal", gaussian(1e-40)},
	{"huge 1e4", gaussian(1e4)},
	{"fp16 limit 6e4", gaussian(6e4)},
	{"fp16 overflow 1e6", gaussian(1e6)},
	{"fp16 overflow 1e8", gaussian(1e8)},
	{"huge 1e18", gaussian(1e18)},
	{"all negative", func(r *rand.Rand, x []float32) {
		for i := range x {
			x[i] = -float32(math.Abs(r.NormFloat64()))
		}
	}},
	{"all positive", func(r *rand.Rand, x []float32) {
		for i := range x {
			x[i] = float32(math.Abs(r.NormFloat64()))
		}
	}},
	{"all equal 0.5", func(r *rand.Rand, x []float32) {
		for i := range x {
			x[i] = 0.5
		}
	}},
	{"all equal -3 ", func(r *rand.Rand, x []float32) {
		for i := range x {
			x[i] = -3
		}
	}},
	{"constant per 16", func(r *rand.Rand, x []float32) {
		for i := range x {
			x[i] = float32(i/16%7) - 3
		}
	}},
	{"one outlier per 32", func(r *rand.Rand, x []float32) {
		for i := range x {
			x[i] = float32(r.NormFloat64() * 0.01)
			if i%32 == r.IntN(32) {
				x[i] = float32(100 * (1 - 2*float64(r.IntN(2))))
			}
		}
	}},
	{"one outlier per 256", func(r *rand.Rand, x []float32) {
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		for b := 0; b < len(x); b += 256 {
			x[b+r.IntN(256)] = -500
		}
	}},
	{"sparse", func(r *rand.Rand, x []float32) {
		for i := range x {
			x[i] = 0
			if r.IntN(10) == 0 {
				x[i] = float32(r.NormFloat64())
			}
		}
	}},
	{"mixed sub-blocks", func(r *rand.Rand, x []float32) {
		// Some 16/32-element groups zero, some tiny, some large, some constant.
		for g := 0; g < len(x); g += 16 {
			kind := r.IntN(5)
			for i := g; i < g+16; i++ {
				switch kind {
				case 0:
					x[i] = 0
				case 1:
					x[i] = float32(r.NormFloat64() * 1e-9)
				case 2:
					x[i] = float32(r.NormFloat64() * 1e3)
				case 3:
					x[i] = 2.5
				default:
					x[i] = float32(r.NormFloat64())
				}
			}
		}
	}},
	{"half-integer ties", func(r *rand.Rand, x []float32) {
		// With amax 127 (Q8_0: d = 1) or max -127 (Q8_K: iscale = 1),
		// x·id lands exactly on k+0.5: roundf and nearest_int differ here.
		for i := range x {
			x[i] = float32(r.IntN(254)-127) + 0.5
			if i%32 == 0 {
				x[i] = -127
			}
		}
	}},
	{"small integers", func(r *rand.Rand, x []float32) {
		for i := range x {
			x[i] = float32(r.IntN(16) - 8)
		}
	}},
	{"ramp", func(r *rand.Rand, x []float32) {
		for i := range x {
			x[i] = float32(i%256)/64 - 2
		}
	}},
	// Not what a model holds, but what a broken one might: GGML's output is
	// deterministic on x86 (NaNs propagate by the same SSE rules in Go), and
	// so is ours.
	{"sprinkled +Inf", sprinkled(float32(math.Inf(1)))},
	{"sprinkled -Inf", sprinkled(float32(math.Inf(-1)))},
	{"sprinkled NaN", sprinkled(float32(math.NaN()))},
	{"sprinkled 3e38", sprinkled(3e38)},
}

func sprinkled(v float32) func(r *rand.Rand, x []float32) {
	return func(r *rand.Rand, x []float32) {
		for i := range x {
			x[i] = float32(r.NormFloat64())
			if r.IntN(50) == 0 {
				x[i] = v
			}
		}
	}
}

func TestQuantizeMatchesGGML(t *testing.T) {
	l := ggml(t)
	const n = 256 * 16
	for _, typ := range types {
		for k, c := range inputCases {
			r := rand.New(rand.NewPCG(uint64(k), uint64(typ)))
			x := make([]float32, n)
			c.fill(r, x)
			compareQuantize(t, l, typ, x, c.name)
		}
		w := quant.StoriesWeights(t)
		compareQuantize(t, l, typ, w[:len(w)/256*256], "stories260K weights")
	}
}

// TestDequantizeMatchesGGML decodes random bytes, so every bit pattern of
// scales and quants occurs, fp16 scales that are NaN, Inf or subnormal too.
func TestDequantizeMatchesGGML(t *testing.T) {
	l := ggml(t)
	for _, typ := range types {
		r := rand.New(rand.NewPCG(11, uint64(typ)))
		n := 256 * 64
		size, _ := typ.RowBytes(n)
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		compareDequantize(t, l, typ, b, n)
	}
}

func compareQuantize(t *testing.T, l *ggmlref.Lib, typ quant.Type, x []float32, what string) {
	t.Helper()
	want, err := l.Quantize(typ, x)
	if err != nil {
		t.Fatalf("GGML: %v", err)
	}
	got := make([]byte, len(want))
	if err := quant.Quantize(typ, x, got); err != nil {
		t.Fatal(err)
	}
	bb := typ.BlockBytes()
	for i := range want {
		if got[i] != want[i] {
			blk := i / bb
			t.Errorf("Quantize(%s, %s): block %d byte %d is %#02x, GGML's %#02x\n input %v\n got  % x\n GGML % x",
				typ, what, blk, i%bb, got[i], want[i],
				x[blk*typ.BlockElems():(blk+1)*typ.BlockElems()], got[blk*bb:(blk+1)*bb], want[blk*bb:(blk+1)*bb])
			return
		}
	}
	// And the floats the bytes decode to.
	compareDequantize(t, l, typ, want, len(x))
}

func compareDequantize(t *testing.T, l *ggmlref.Lib, typ quant.Type, b []byte, n int) {
	t.Helper()
	want, err := l.Dequantize(typ, b, n)
	if err != nil {
		t.Fatalf("GGML: %v", err)
	}
	got := make([]float32, n)
	if err := quant.Dequantize(typ, b, got); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			blk := i / typ.BlockElems()
			bb := typ.BlockBytes()
			t.Errorf("Dequantize(%s): element %d = %g [%#08x], GGML's %g [%#08x]; block %d: % x",
				typ, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]), blk, b[blk*bb:(blk+1)*bb])
			return
		}
	}
}

// BenchmarkGGML times GGML's reference code on the same data as
// BenchmarkDequantize and BenchmarkQuantize (bytes: 4 per element), for
// comparison. Each call allocates its output and crosses cgo once.
func BenchmarkGGML(b *testing.B) {
	l, err := loadGGML()
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 1))
	x := make([]float32, 1<<16)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	for _, typ := range types {
		enc, err := l.Quantize(typ, x)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("Dequantize/"+typ.String(), func(b *testing.B) {
			b.SetBytes(int64(4 * len(x)))
			for b.Loop() {
				if _, err := l.Dequantize(typ, enc, len(x)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("Quantize/"+typ.String(), func(b *testing.B) {
			b.SetBytes(int64(4 * len(x)))
			for b.Loop() {
				if _, err := l.Quantize(typ, x); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
