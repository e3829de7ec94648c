//go:build amd64 && !purego

package cpu

//go:noescape
func q40LaneVec(w, a *byte, nb, groups int, out *float32)

//go:noescape
func q80LaneVec(w, a *byte, nb, groups int, out *float32)

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

// laneTile wraps a four-token lane kernel: out[t*stride+4g+r] for the
// first ntok (1..4) tokens.
func laneTile(k func(w, a *byte, nb, groups int, out *float32, stride, ntok int)) laneTileFunc {
	return func(w, a []byte, nb, groups int, out []float32, stride, ntok int) {
		if nb > 0 && groups > 0 && ntok > 0 {
			_ = out[(min(ntok, 4)-1)*stride+4*groups-1]
			k(&w[0], &a[0], nb, groups, &out[0], 4*stride, ntok)
		}
	}
}
