package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/leo-operator/leo/runtime/quant"
)

// TestLaneKernels runs each one-token lane kernel this CPU has against
// laneRef on random weights and tokens: within 2e-6 of Σ|terms| (the
// integer sums are exact; only the float rounding differs).
func TestLaneKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	ran := 0
	defer func() { t.Logf("%d lane kernel configurations checked", ran) }()
	for _, ks := range kernelSets {
		for _, typ := range []quant.Type{quant.Q4_0, quant.Q8_0} {
			vec := ks.laneVec(typ)
			if vec == nil {
				continue
			}
			for _, s := range []struct{ groups, nb int }{{1, 1}, {3, 2}, {2, 64}, {5, 7}} {
				ran++
				name := fmt.Sprintf("%s/%s/groups=%d/nb=%d", ks.name, typ, s.groups, s.nb)
				w, rowBytes, k := randLaneMatrix(r, typ, s.groups, s.nb)
				x := randX(r, 1, 32*s.nb)
				a1 := make([]byte, s.nb*laneTokBytes)
				quantizeLaneToken(a1, laneTokBytes, x, k)
				got := make([]float32, laneGroupRows*s.groups+1)
				got[len(got)-1] = -7
				vec(w, a1, s.nb, s.groups, got[:len(got)-1])
				if got[len(got)-1] != -7 {
					t.Fatalf("%s: wrote past its output", name)
				}
				want := make([]float32, laneGroupRows)
				for g := 0; g < s.groups; g++ {
					laneRef(typ, w[g*laneGroupRows*rowBytes:], a1, s.nb, laneTokBytes, 1, want)
					checkClose(t, name+" vec", got[laneGroupRows*g:laneGroupRows*(g+1)], want)
				}
			}
		}
	}
}

// randLaneMatrix is a random matrix of groups groups of rows and nb blocks
// in the lane layout, its plain row size, and its activations' offset.
func randLaneMatrix(r *rand.Rand, typ quant.Type, groups, nb int) (w []byte, rowBytes int, k int32) {
	m := Matrix{Type: typ, Rows: laneGroupRows * groups, Cols: 32 * nb}
	for range m.Rows {
		m.Data = append(m.Data, randRow(r, typ, m.Cols)...)
	}
	rowBytes, _ = typ.RowBytes(m.Cols)
	k = 8
	if typ == quant.Q8_0 {
		k = 128
	}
	return interleaveLanes(m, rowBytes), rowBytes, k
}

// checkClose compares within 1e-4 relative plus 1e-3 absolute: the sums
// have hundreds of terms of size about 1, so float reordering stays far
// below that, while any wrong quant, scale or lane is far above it.
func checkClose(t *testing.T, name string, got, want []float32) {
	t.Helper()
	for i := range want {
		tol := 1e-4*math.Abs(float64(want[i])) + 1e-3
		if math.IsNaN(float64(got[i])) || math.Abs(float64(got[i]-want[i])) > tol {
			t.Fatalf("%s: row %d = %g, reference %g", name, i, got[i], want[i])
		}
	}
}

// TestQuantLane checks each kernel set's lane quantizer against
// quantizeLaneToken byte for byte, on random blocks and edge cases (zeros,
// tiny values, NaN, ±Inf, fp16-overflowing scales).
func TestQuantLane(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	x := randX(r, 1, 32*40)
	x[3] = float32(math.NaN())
	for i := 64; i < 96; i++ {
		x[i] = 0
	}
	x[100] = float32(math.Inf(1))
	x[140] = float32(math.Inf(-1))
	for i := 160; i < 192; i++ {
		x[i] = float32(r.NormFloat64() * 1e30)
	}
	for i := 192; i < 224; i++ {
		x[i] = float32(r.NormFloat64() * 1e-38)
	}
	for _, ks := range kernelSets {
		if ks.quantLane == nil {
			continue
		}
		for _, k := range []int32{8, 128} {
			for _, step := range []int{laneTokBytes, 4 * laneTokBytes} {
				want := make([]byte, 40*step)
				got := make([]byte, 40*step)
				for i := range got {
					got[i], want[i] = 0xAA, 0xAA // bytes between records must stay
				}
				quantizeLaneToken(want, step, x, k)
				ks.quantLane(got, step, x, k)
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("%s k=%d step=%d: byte %d (block %d, offset %d) is %#x, want %#x", ks.name, k, step, i, i/step, i%step, got[i], want[i])
					}
				}
			}
		}
	}
}

// TestLaneRows runs each many-token lane kernel this CPU has against the
// one-token kernel on each token, which it must equal bit for bit (a
// sequence's results must not depend on its batch), and against laneRef,
// on token counts that leave a partial last token group; the output's
// other values must stay untouched.
func TestLaneRows(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	ran := 0
	defer func() { t.Logf("%d lane rows configurations checked", ran) }()
	for _, ks := range kernelSets {
		for _, typ := range []quant.Type{quant.Q4_0, quant.Q8_0} {
			rowsK, vec := ks.laneRows(typ), ks.laneVec(typ)
			if rowsK == nil {
				continue
			}
			for _, s := range []struct{ groups, nb, n int }{{1, 1, 1}, {2, 9, 16}, {3, 2, 5}, {8, 9, 13}, {5, 7, 4}, {4, 3, 2}, {6, 24, 17}, {1, 9, 8}, {2, 3, 9}} {
				ran++
				name := fmt.Sprintf("%s/%s/groups=%d/nb=%d/n=%d", ks.name, typ, s.groups, s.nb, s.n)
				w, rowBytes, k := randLaneMatrix(r, typ, s.groups, s.nb)
				rows := laneGroupRows * s.groups
				x := randX(r, s.n, 32*s.nb)
				tg := (s.n + laneTokens - 1) / laneTokens
				step := laneTokens * laneTokBytes
				tokBytes := s.nb * step
				a := make([]byte, tg*tokBytes) // padding tokens zero
				for tok := 0; tok < s.n; tok++ {
					quantizeLaneToken(a[tok/laneTokens*tokBytes+tok%laneTokens*laneTokBytes:], step, x[tok*32*s.nb:(tok+1)*32*s.nb], k)
				}
				stride := rows + 5
				got := make([]float32, s.n*stride)
				want := make([]float32, s.n*stride)
				for i := range got {
					got[i], want[i] = -7, -7
				}
				rowsK(w, a, s.nb, s.groups, got, stride, s.n, tokBytes)
				a1 := make([]byte, s.nb*laneTokBytes)
				for tok := 0; tok < s.n; tok++ {
					quantizeLaneToken(a1, laneTokBytes, x[tok*32*s.nb:(tok+1)*32*s.nb], k)
					vec(w, a1, s.nb, s.groups, want[tok*stride:tok*stride+rows])
				}
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s: out[%d] = %g, the one-token kernel gives %g", name, i, got[i], want[i])
					}
				}
				ref := make([]float32, laneGroupRows*laneTokens)
				for g := 0; g < s.groups; g++ {
					for g8 := 0; g8 < tg; g8++ {
						laneRef(typ, w[g*laneGroupRows*rowBytes:], a[g8*tokBytes:], s.nb, step, laneTokens, ref)
						for tok := laneTokens * g8; tok < min(s.n, laneTokens*(g8+1)); tok++ {
							i := tok % laneTokens
							checkClose(t, fmt.Sprintf("%s ref token %d", name, tok), got[tok*stride+laneGroupRows*g:][:laneGroupRows], ref[laneGroupRows*i:][:laneGroupRows])
						}
					}
				}
			}
		}
	}
}
