//go:build cgo

package ggmlref

import (
	"strings"
	"testing"

	"github.com/leo-operator/leo/runtime/quant"
)

func open(t *testing.T) *Lib {
	t.Helper()
	path, err := PeerLib()
	if err != nil {
		t.Fatal(err)
	}
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestOpen(t *testing.T) {
	l := open(t)
	if v, commit := l.Version(); v != WantVersion || commit == "" {
		t.Errorf("Version() = %q, %q; want %q and a commit", v, commit, WantVersion)
	}
	if _, err := Open("/nonexistent/libggml-base.so"); err == nil || !strings.Contains(err.Error(), "/nonexistent/libggml-base.so") {
		t.Errorf("Open of a missing file: %v, want an error naming it", err)
	}
	// A real library that is not GGML's.
	if _, err := Open("libm.so.6"); err == nil || !strings.Contains(err.Error(), "no symbol ggml_version") {
		t.Errorf("Open(libm.so.6): %v, want a missing-symbol error", err)
	}
}

func TestConversions(t *testing.T) {
	l := open(t)
	if h := l.Float32ToFP16(1); h != 0x3C00 {
		t.Errorf("Float32ToFP16(1) = %#04x, want 0x3c00", h)
	}
	if f := l.FP16ToFloat32(0xC000); f != -2 {
		t.Errorf("FP16ToFloat32(0xc000) = %g, want -2", f)
	}
	if h := l.Float32ToBF16(1); h != 0x3F80 {
		t.Errorf("Float32ToBF16(1) = %#04x, want 0x3f80", h)
	}
	if f := l.BF16ToFloat32(0x4040); f != 3 {
		t.Errorf("BF16ToFloat32(0x4040) = %g, want 3", f)
	}
	x := make([]float32, 256)
	for i := range x {
		x[i] = float32(i%32) - 16
	}
	for _, typ := range []quant.Type{quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q8K} {
		b, err := l.Quantize(typ, x)
		if err != nil {
			t.Fatalf("Quantize(%s): %v", typ, err)
		}
		if want, _ := typ.RowBytes(len(x)); len(b) != want {
			t.Fatalf("Quantize(%s): %d bytes, want %d", typ, len(b), want)
		}
		y, err := l.Dequantize(typ, b, len(x))
		if err != nil {
			t.Fatalf("Dequantize(%s): %v", typ, err)
		}
		for i := range x { // exact for F32/F16/BF16; within half a step (16/127/2) for Q8_0, Q8_K
			if d := y[i] - x[i]; d > 0.07 || d < -0.07 {
				t.Fatalf("%s: element %d came back as %g, want %g", typ, i, y[i], x[i])
			}
		}
	}
}

// TestRefusals checks that calls GGML would abort the process on (or read
// out of bounds for) come back as errors.
func TestRefusals(t *testing.T) {
	l := open(t)
	for _, c := range []struct {
		name string
		err  error
	}{
		{"partial block", func() error { _, err := l.Quantize(quant.Q4_0, make([]float32, 33)); return err }()},
		{"no elements", func() error { _, err := l.Quantize(quant.Q4_0, nil); return err }()},
		{"needs an importance matrix", func() error { _, err := l.Quantize(quant.IQ2XXS, make([]float32, 256)); return err }()},
		{"integer type", func() error { _, err := l.Quantize(quant.I32, make([]float32, 4)); return err }()},
		{"retired id", func() error { _, err := l.Quantize(quant.Type(4), make([]float32, 32)); return err }()},
		{"id past the table", func() error { _, err := l.Dequantize(quant.Type(1000), make([]byte, 4), 1); return err }()},
		{"short src", func() error { _, err := l.Dequantize(quant.Q8_0, make([]byte, 33), 32); return err }()},
		{"no dequantizer", func() error { _, err := l.Dequantize(quant.I8, make([]byte, 4), 4); return err }()},
	} {
		if c.err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
}
