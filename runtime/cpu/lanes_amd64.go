//go:build amd64 && !purego

package cpu

// A group's bytes per block in the lane layout (lanes.go), as the
// assembly steps through them: sixteen Q4_0 (18-byte) or Q8_0 (34-byte)
// blocks.
const (
	q40LaneGroupBytes = laneGroupRows * 18 // 288
	q80LaneGroupBytes = laneGroupRows * 34 // 544
)

//go:noescape
func q40LaneVec(w, a *byte, nb, groups int, out *float32)

//go:noescape
func q80LaneVec(w, a *byte, nb, groups int, out *float32)

//go:noescape
func q40LaneRows(w, a *byte, nb, groups int, out *float32, stride, n, tokBytes int)

//go:noescape
func q80LaneRows(w, a *byte, nb, groups int, out *float32, stride, n, tokBytes int)

// laneVec wraps a one-token lane kernel for weights of gb bytes per group
// and block: out[16g+r] for the groups of w.
func laneVec(k func(w, a *byte, nb, groups int, out *float32), gb int) laneVecFunc {
	return func(w, a []byte, nb, groups int, out []float32) {
		if nb > 0 && groups > 0 {
			_ = out[laneGroupRows*groups-1]
			_ = a[nb*laneTokBytes-1]
			_ = w[groups*nb*gb-1]
			k(&w[0], &a[0], nb, groups, &out[0])
		}
	}
}

// laneRowsKernel wraps a many-token lane kernel for weights of gb bytes per
// group and block: out[t*stride+16g+r] for all n tokens (groups of
// laneTokens, tokBytes apart in a) and the groups of w.
func laneRowsKernel(k func(w, a *byte, nb, groups int, out *float32, stride, n, tokBytes int), gb int) laneRowsFunc {
	return func(w, a []byte, nb, groups int, out []float32, stride, n, tokBytes int) {
		if nb <= 0 || groups <= 0 || n <= 0 {
			return
		}
		tg := (n + laneTokens - 1) / laneTokens
		_ = out[(n-1)*stride+laneGroupRows*groups-1]
		_ = a[(tg-1)*tokBytes+nb*laneTokens*laneTokBytes-1]
		_ = w[groups*nb*gb-1]
		k(&w[0], &a[0], nb, groups, &out[0], stride, n, tokBytes)
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
