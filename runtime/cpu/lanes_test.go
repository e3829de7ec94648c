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
				tile(w, a4, s.nb, s.groups, out, stride, 4)
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
