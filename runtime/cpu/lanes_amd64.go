//go:build amd64 && !purego

package cpu

//go:noescape
func q40LaneVec(w, a *byte, nb, groups int, out *float32)

//go:noescape
func q80LaneVec(w, a *byte, nb, groups int, out *float32)

//go:noescape
func q40LaneTile8(w, a *byte, nb, groups int, out *float32, stride, ntok, pf int)

//go:noescape
func q80LaneTile8(w, a *byte, nb, groups int, out *float32, stride, ntok, pf int)

//go:noescape
func q40LaneRows8(w, a *byte, nb, pairs int, out *float32, stride, n, tokBytes int)

//go:noescape
func q80LaneRows8(w, a *byte, nb, pairs int, out *float32, stride, n, tokBytes int)

//go:noescape
func q40LaneTile(w, a *byte, nb, groups int, out *float32, stride, ntok int)

//go:noescape
func q80LaneTile(w, a *byte, nb, groups int, out *float32, stride, ntok int)

// laneVec wraps a one-token lane kernel: out[4g+r] for the groups of w.
func laneVec(k func(w, a *byte, nb, groups int, out *float32)) laneVecFunc {
	return func(w, a []byte, nb, groups int, out []float32) {
		if nb > 0 && groups > 0 {
			_ = out[4*groups-1]
			k(&w[0], &a[0], nb, groups, &out[0])
		}
	}
}

// laneTile wraps the four-token lane kernels: out[t*stride+4g+r] for the
// first ntok (1..4) tokens. Pairs of groups go to k8, which reads each
// token's record once for eight rows, and prefetches as it goes the
// weights pf bytes on (0: none); an odd last group goes to k4.
func laneTile(k4 func(w, a *byte, nb, groups int, out *float32, stride, ntok int), k8 func(w, a *byte, nb, groups int, out *float32, stride, ntok, pf int)) laneTileFunc {
	return func(w, a []byte, nb, groups int, out []float32, stride, ntok, pf int) {
		if nb <= 0 || groups <= 0 || ntok <= 0 {
			return
		}
		_ = out[(min(ntok, 4)-1)*stride+4*groups-1]
		even := groups &^ 1 // w holds exactly the groups: len(w)/groups bytes each
		if even > 0 {
			k8(&w[0], &a[0], nb, even, &out[0], 4*stride, ntok, max(pf, 0))
		}
		if even < groups {
			k4(&w[len(w)/groups*even], &a[0], nb, 1, &out[4*even], 4*stride, ntok)
		}
	}
}

// laneRows wraps the whole-chunk lane kernels: out[t*stride+4g+r] for
// all n tokens (groups of four, tokBytes apart in a) and the groups of w.
// Pairs of groups go to k8 in one call; an odd last group goes to k4, one
// call per token group.
func laneRows(k4 func(w, a *byte, nb, groups int, out *float32, stride, ntok int), k8 func(w, a *byte, nb, pairs int, out *float32, stride, n, tokBytes int)) laneRowsFunc {
	return func(w, a []byte, nb, groups int, out []float32, stride, n, tokBytes int) {
		if nb <= 0 || groups <= 0 || n <= 0 {
			return
		}
		tg := (n + 3) / 4 // token groups
		_ = out[(n-1)*stride+4*groups-1]
		_ = a[(tg-1)*tokBytes+nb*4*laneTokBytes-1]
		pairs := groups / 2
		if pairs > 0 {
			k8(&w[0], &a[0], nb, pairs, &out[0], 4*stride, n, tokBytes)
		}
		if 2*pairs < groups {
			wl := &w[len(w)/groups*2*pairs] // w holds exactly the groups
			for g := 0; g < tg; g++ {
				k4(wl, &a[g*tokBytes], nb, 1, &out[4*g*stride+8*pairs], 4*stride, n-4*g)
			}
		}
	}
}

//go:noescape
func quantLaneAVX512(x *float32, rec *byte, nb, step, k int)

// quantLane wraps quantLaneAVX512 as quantizeLaneToken.
func quantLane(buf []byte, step int, x []float32, k int32) {
	nb := len(x) / 32
	if nb == 0 {
		return
	}
	_ = buf[(nb-1)*step+laneTokBytes-1]
	quantLaneAVX512(&x[0], &buf[0], nb, step, int(k))
}
