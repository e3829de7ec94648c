package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/leo-operator/leo/runtime/quant"
)

// TestLaneKernels runs each lane kernel this CPU has against laneRef on
// random weights and tokens: within 2e-6 of Σ|terms| (the integer sums are
// exact; only the float summation order differs).
func TestLaneKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	ran := 0
	defer func() { t.Logf("%d lane kernel configurations checked", ran) }()
	for _, ks := range kernelSets {
		for _, typ := range []quant.Type{quant.Q4_0, quant.Q8_0} {
			vec, tile := ks.laneVec(typ), ks.laneTile(typ)
			if vec == nil {
				continue
			}
			for _, s := range []struct{ groups, nb int }{{1, 1}, {3, 2}, {2, 64}, {5, 7}} {
				ran++
				name := fmt.Sprintf("%s/%s/groups=%d/nb=%d", ks.name, typ, s.groups, s.nb)
				m := Matrix{Type: typ, Rows: 4 * s.groups, Cols: 32 * s.nb}
				for range m.Rows {
					m.Data = append(m.Data, randRow(r, typ, m.Cols)...)
				}
				rowBytes, _ := typ.RowBytes(m.Cols)
				w := interleaveLanes(m, rowBytes)
				k := int32(8)
				if typ == quant.Q8_0 {
					k = 128
				}
				x := randX(r, 4, m.Cols)
				// One token, one record per block.
				a1 := make([]byte, s.nb*laneTokBytes)
				quantizeLaneToken(a1, laneTokBytes, x[:m.Cols], k)
				got := make([]float32, 4*s.groups)
				vec(w, a1, s.nb, s.groups, got)
				want := make([]float32, 4)
				for g := 0; g < s.groups; g++ {
					laneRef(typ, w[g*4*rowBytes:], a1, s.nb, laneTokBytes, 1, want)
					checkClose(t, name+" vec", got[4*g:4*g+4], want)
				}
				// Four tokens, block by block.
				a4 := make([]byte, s.nb*4*laneTokBytes)
				for tok := 0; tok < 4; tok++ {
					quantizeLaneToken(a4[tok*laneTokBytes:], 4*laneTokBytes, x[tok*m.Cols:(tok+1)*m.Cols], k)
				}
				stride := 4*s.groups + 3 // rows of the output, with room to spare
				out := make([]float32, 4*stride)
				tile(w, a4, s.nb, s.groups, out, stride, 4, 4*rowBytes)
				want4 := make([]float32, 16)
				for g := 0; g < s.groups; g++ {
					laneRef(typ, w[g*4*rowBytes:], a4, s.nb, 4*laneTokBytes, 4, want4)
					for tok := 0; tok < 4; tok++ {
						checkClose(t, fmt.Sprintf("%s tile token %d", name, tok), out[tok*stride+4*g:tok*stride+4*g+4], want4[4*tok:4*tok+4])
					}
				}
			}
		}
	}
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

// TestLaneRows runs each whole-chunk lane kernel this CPU has against
// laneTile called per pair of groups and token group (as laneRows calls it
// without one), which it must equal bit for bit, and against laneRef, on
// odd and even group counts and token counts that leave a partial last
// token group; the output's other values must stay untouched.
func TestLaneRows(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	ran := 0
	defer func() { t.Logf("%d lane rows configurations checked", ran) }()
	for _, ks := range kernelSets {
		for _, typ := range []quant.Type{quant.Q4_0, quant.Q8_0} {
			rowsK, tile := ks.laneRows(typ), ks.laneTile(typ)
			if rowsK == nil {
				continue
			}
			for _, s := range []struct{ groups, nb, n int }{{1, 1, 1}, {2, 9, 16}, {3, 2, 5}, {8, 9, 13}, {5, 7, 4}, {4, 3, 2}, {6, 24, 17}} {
				ran++
				name := fmt.Sprintf("%s/%s/groups=%d/nb=%d/n=%d", ks.name, typ, s.groups, s.nb, s.n)
				m := Matrix{Type: typ, Rows: 4 * s.groups, Cols: 32 * s.nb}
				for range m.Rows {
					m.Data = append(m.Data, randRow(r, typ, m.Cols)...)
				}
				rowBytes, _ := typ.RowBytes(m.Cols)
				w := interleaveLanes(m, rowBytes)
				k := int32(8)
				if typ == quant.Q8_0 {
					k = 128
				}
				x := randX(r, s.n, m.Cols)
				tg := (s.n + 3) / 4
				tokBytes := s.nb * 4 * laneTokBytes
				a := make([]byte, tg*tokBytes) // padding tokens zero
				for tok := 0; tok < s.n; tok++ {
					quantizeLaneToken(a[tok/4*tokBytes+tok%4*laneTokBytes:], 4*laneTokBytes, x[tok*m.Cols:(tok+1)*m.Cols], k)
				}
				stride := m.Rows + 5
				got := make([]float32, s.n*stride)
				want := make([]float32, s.n*stride)
				for i := range got {
					got[i], want[i] = -7, -7
				}
				rowsK(w, a, s.nb, s.groups, got, stride, s.n, tokBytes)
				for g0 := 0; g0 < s.groups; g0 += 2 {
					ng := min(2, s.groups-g0)
					wr := w[g0*4*rowBytes : (g0+ng)*4*rowBytes]
					for g := 0; g < tg; g++ {
						tile(wr, a[g*tokBytes:(g+1)*tokBytes], s.nb, ng, want[4*g*stride+4*g0:], stride, s.n-4*g, 0)
					}
				}
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s: out[%d] = %g, laneTile gives %g", name, i, got[i], want[i])
					}
				}
				ref := make([]float32, 16)
				for g := 0; g < s.groups; g++ {
					for g4 := 0; g4 < tg; g4++ {
						laneRef(typ, w[g*4*rowBytes:], a[g4*tokBytes:], s.nb, 4*laneTokBytes, 4, ref)
						for tok := 4 * g4; tok < min(s.n, 4*g4+4); tok++ {
							checkClose(t, fmt.Sprintf("%s ref token %d", name, tok), got[tok*stride+4*g:tok*stride+4*g+4], ref[4*(tok%4):4*(tok%4)+4])
						}
					}
				}
			}
		}
	}
}
