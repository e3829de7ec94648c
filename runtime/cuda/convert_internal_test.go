//go:build cgo && linux

package cuda

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
)

// F32 and BF16 weights become F16 on the GPU: values in F16's range
// convert (65504 and just below the rounding to infinity included), one
// beyond it is an error naming where it is, not an infinity.
func TestToF16Range(t *testing.T) {
	f32 := func(vals ...float32) *model.Weight {
		w := &model.Weight{Name: "blk.0.ffn_down.weight", Type: quant.F32, Rows: 2, Cols: len(vals) / 2}
		for _, v := range vals {
			w.Data = binary.LittleEndian.AppendUint32(w.Data, math.Float32bits(v))
		}
		return w
	}
	ok := f32(1, -2, 0.5, 65504, -65519, 3, 0, 1e-3)
	buf, err := convert(nil, ok, quant.F16)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 8)
	if err := quant.Dequantize(quant.F16, buf, got); err != nil {
		t.Fatal(err)
	}
	for i, want := range []float32{1, -2, 0.5, 65504, -65504, 3, 0} {
		if got[i] != want {
			t.Errorf("value %d: %v, want %v", i, got[i], want)
		}
	}
	for _, bad := range []float32{65520, -1e6, float32(math.Inf(1)), float32(math.NaN())} {
		_, err := convert(nil, f32(1, 2, 3, 4, 5, bad, 7, 8), quant.F16)
		if err == nil || !strings.Contains(err.Error(), "row 1, column 1") || !strings.Contains(err.Error(), "GPU's F16 copy") {
			t.Errorf("%v: %v, want an error naming row 1, column 1", bad, err)
		}
	}
}

// TestDeviceBytes checks the GPU's size of a quantized matrix against its
// layout on the device (kernels.cuh): quants, then each row's scales padded
// to a multiple of 8 blocks.
func TestDeviceBytes(t *testing.T) {
	for _, c := range []struct {
		typ        quant.Type
		rows, cols int
		want       uint64
	}{
		{quant.Q4_0, 2, 288, 2 * (288/2 + 16*2)},    // 9 blocks: scales padded to 16
		{quant.Q8_0, 2, 288, 2 * (288 + 16*2)},      // likewise
		{quant.Q4_0, 3, 4096, 3 * (4096/2 + 128*2)}, // 128 blocks: no padding
		{quant.F16, 3, 288, 3 * 288 * 2},
	} {
		w := &model.Weight{Type: c.typ, Rows: c.rows, Cols: c.cols}
		if got := deviceBytes(c.typ, w); got != c.want {
			t.Errorf("%s %d×%d: %d bytes, want %d", c.typ, c.rows, c.cols, got, c.want)
		}
	}
}

// TestDeviceType checks which type each group of matrices gets on the GPU.
func TestDeviceType(t *testing.T) {
	for _, c := range []struct {
		types []quant.Type
		want  quant.Type
	}{
		{[]quant.Type{quant.F16, quant.F16}, quant.F16},
		{[]quant.Type{quant.Q4_0, quant.Q4_0, quant.Q4_0}, quant.Q4_0},
		{[]quant.Type{quant.Q8_0}, quant.Q8_0},
		{[]quant.Type{quant.Q4K, quant.Q4K, quant.Q6K}, quant.Q8_0}, // Q4_K_M's Q, K, V
		{[]quant.Type{quant.Q6K}, quant.Q8_0},
		{[]quant.Type{quant.Q4_0, quant.Q8_0}, quant.Q8_0},
		{[]quant.Type{quant.F32}, quant.F16},
		{[]quant.Type{quant.BF16, quant.Q4K}, quant.F16},
		{[]quant.Type{quant.F16, quant.Q4_0}, quant.F16},
	} {
		var ws []*model.Weight
		for _, typ := range c.types {
			ws = append(ws, &model.Weight{Type: typ})
		}
		if got := deviceType(ws); got != c.want {
			t.Errorf("%v: %s, want %s", c.types, got, c.want)
		}
	}
}

// TestConvertToQ8_0 converts K-quant weights to Q8_0: each value within
// half a step of the file's (its 32-element block's maximum/254), plus the
// rounding of the step to F16 (up to 127 steps of 2^-11 relative error:
// the maximum/2048).
func TestConvertToQ8_0(t *testing.T) {
	const rows, cols = 3, 512
	rng := rand.New(rand.NewPCG(5, 6))
	src := make([]float32, rows*cols)
	for i := range src {
		src[i] = float32(rng.NormFloat64()) * 0.02
	}
	for _, typ := range []quant.Type{quant.Q4K, quant.Q6K} {
		rb, err := typ.RowBytes(cols)
		if err != nil {
			t.Fatal(err)
		}
		w := &model.Weight{Name: "blk.0.attn_q.weight", Type: typ, Rows: rows, Cols: cols, Data: make([]byte, rows*rb)}
		for r := range rows {
			if err := quant.Quantize(typ, src[r*cols:(r+1)*cols], w.Data[r*rb:(r+1)*rb]); err != nil {
				t.Fatal(err)
			}
		}
		buf, err := convert(nil, w, quant.Q8_0)
		if err != nil {
			t.Fatal(err)
		}
		qb, _ := quant.Q8_0.RowBytes(cols)
		want, got := make([]float32, cols), make([]float32, cols)
		worst := 0.0
		for r := range rows {
			if err := quant.Dequantize(typ, w.Data[r*rb:(r+1)*rb], want); err != nil {
				t.Fatal(err)
			}
			if err := quant.Dequantize(quant.Q8_0, buf[r*qb:(r+1)*qb], got); err != nil {
				t.Fatal(err)
			}
			for b := 0; b < cols; b += 32 {
				amax := 0.0
				for _, v := range want[b : b+32] {
					amax = max(amax, math.Abs(float64(v)))
				}
				for i := b; i < b+32; i++ {
					err := math.Abs(float64(got[i] - want[i]))
					worst = max(worst, err/amax)
					if bound := amax/254 + amax/2048; err > bound {
						t.Fatalf("%s row %d element %d: %g, want %g within %g", typ, r, i, got[i], want[i], bound)
					}
				}
			}
		}
		t.Logf("%s → Q8_0: worst error %.4f of a block's maximum (bound 1/254 + 1/2048 = %.4f)", typ, worst, 1.0/254+1.0/2048)
	}
}

// TestConvertQ8_0Range: a value whose block's scale (maximum/127) F16
// cannot hold is an error naming where it is; and a buffer reused for a
// smaller matrix after a larger one holds the smaller one's rows only.
func TestConvertQ8_0Range(t *testing.T) {
	f32 := func(rows int, vals ...float32) *model.Weight {
		w := &model.Weight{Name: "output.weight", Type: quant.F32, Rows: rows, Cols: len(vals) / rows}
		for _, v := range vals {
			w.Data = binary.LittleEndian.AppendUint32(w.Data, math.Float32bits(v))
		}
		return w
	}
	row := func(v float32) []float32 {
		r := make([]float32, 32)
		for i := range r {
			r[i] = v * float32(i%5-2)
		}
		return r
	}
	big := f32(2, append(row(1), row(5e6)...)...) // 1e7 > 65520·127
	if _, err := convert(nil, big, quant.Q8_0); err == nil || !strings.Contains(err.Error(), "row 1, column 0") {
		t.Errorf("a block beyond Q8_0's scale: %v, want an error naming row 1, column 0", err)
	}
	buf, err := convert(nil, f32(2, append(row(1), row(2)...)...), quant.Q8_0)
	if err != nil {
		t.Fatal(err)
	}
	buf, err = convert(buf, f32(1, row(0.5)...), quant.Q8_0)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := quant.Q8_0.RowBytes(32); len(buf) != want {
		t.Fatalf("reused buffer holds %d bytes, want one row's %d", len(buf), want)
	}
	got := make([]float32, 32)
	if err := quant.Dequantize(quant.Q8_0, buf, got); err != nil {
		t.Fatal(err)
	}
	for i, v := range row(0.5) {
		if math.Abs(float64(got[i]-v)) > 0.5/127 {
			t.Errorf("element %d: %v, want %v", i, got[i], v)
		}
	}
}
