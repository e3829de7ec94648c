//go:build cgo && linux

package cuda

import (
	"encoding/binary"
	"math"
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
	buf, err := toF16(nil, ok)
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
		_, err := toF16(nil, f32(1, 2, 3, 4, 5, bad, 7, 8))
		if err == nil || !strings.Contains(err.Error(), "row 1, column 1") || !strings.Contains(err.Error(), "beyond half precision") {
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
