package quant

import (
	"encoding/binary"
	"math"
)

// The k-quant super-block formats (ggml-common.h), QK_K = 256 elements each:
//
//	Q4_K {fp16 d, dmin; uint8 scales[12]; uint8 qs[128]}          144 bytes
//	Q6_K {uint8 ql[128]; uint8 qh[64]; int8 scales[16]; fp16 d}  210 bytes
//	Q8_K {float32 d; int8 qs[256]; int16 bsums[16]}              292 bytes
//
// The functions follow ggml-quants.c's dequantize_row_* and
// quantize_row_*_ref line by line (as of ggml 0.23.0, the one bundled with
// node-llama-cpp 3.21.1), helpers included, so that the bytes and floats
// are GGML's bit for bit.

// Byte offsets of the fields within a block.
const (
	q4KD      = 0
	q4KDmin   = 2
	q4KScales = 4
	q4KQs     = 16
	q4KBytes  = 144

	q6KQl     = 0
	q6KQh     = 128
	q6KScales = 192
	q6KD      = 208
	q6KBytes  = 210

	q8KD     = 0
	q8KQs    = 4
	q8KBsums = 260
	q8KBytes = 292
)

// groupMaxEps is GGML's GROUP_MAX_EPS: a group whose largest magnitude is
// below it is treated as all zeros.
const groupMaxEps = 1e-15

// ScaleMinK4 unpacks the 6-bit scale and min of sub-block j (0..7) from a
// Q4_K (or Q5_K) block's 12 scale bytes, as GGML's get_scale_min_k4: the
// first four pairs sit in the low 6 bits of bytes 0..7, the last four are
// split between bytes 8..11 (low 4 bits) and the top 2 bits of bytes 0..7.
func ScaleMinK4(j int, scales []byte) (sc, m uint8) {
	q := scales[:12]
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return (q[j+4] & 0xF) | ((q[j-4] >> 6) << 4), (q[j+4] >> 4) | ((q[j] >> 6) << 4)
}

func dequantizeQ4K(src []byte, dst []float32) {
	for ; len(dst) > 0; src, dst = src[q4KBytes:], dst[QKK:] {
		d := fp16At(src[q4KD:])
		dmin := fp16At(src[q4KDmin:])
		scales := src[q4KScales : q4KScales+12]
		q := src[q4KQs:q4KBytes]
		y := dst[:QKK]
		is := 0
		for j := 0; j < QKK; j += 64 {
			sc, m := ScaleMinK4(is, scales)
			d1, m1 := float32(d*float32(sc)), float32(dmin*float32(m))
			sc, m = ScaleMinK4(is+1, scales)
			d2, m2 := float32(d*float32(sc)), float32(dmin*float32(m))
			for l := 0; l < 32; l++ {
				y[j+l] = float32(d1*float32(q[l]&0xF)) - m1
			}
			for l := 0; l < 32; l++ {
				y[j+32+l] = float32(d2*float32(q[l]>>4)) - m2
			}
			q = q[32:]
			is += 2
		}
	}
}

func quantizeQ4K(src []float32, dst []byte) {
	var (
		L       [QKK]uint8
		laux    [32]uint8
		weights [32]float32
		mins    [QKK / 32]float32
		scales  [QKK / 32]float32
	)
	for ; len(src) > 0; src, dst = src[QKK:], dst[q4KBytes:] {
		x := src[:QKK]
		y := dst[:q4KBytes]
		var maxScale, maxMin float32 // as the min is subtracted, scales are positive
		for j := 0; j < QKK/32; j++ {
			xs := x[32*j : 32*j+32]
			var sumX2 float32
			for _, v := range xs {
				sumX2 += float32(v * v)
			}
			avX := float32(math.Sqrt(float64(sumX2 / 32)))
			for l, v := range xs {
				weights[l] = avX + abs32(v)
			}
			scales[j], mins[j] = makeQKX2Quants(15, xs, weights[:], L[32*j:32*j+32], laux[:], -1, 0.1, 20, false)
			if scales[j] > maxScale {
				maxScale = scales[j]
			}
			if mins[j] > maxMin {
				maxMin = mins[j]
			}
		}

		var invScale, invMin float32
		if maxScale > 0 {
			invScale = 63 / maxScale
		}
		if maxMin > 0 {
			invMin = 63 / maxMin
		}
		var sc [12]byte
		for j := 0; j < QKK/32; j++ {
			// C stores nearest_int's int in a uint8_t, then takes MIN(63, ·).
			ls := min(63, uint8(nearestInt(float32(invScale*scales[j]))))
			lm := min(63, uint8(nearestInt(float32(invMin*mins[j]))))
			if j < 4 {
				sc[j] = ls
				sc[j+4] = lm
			} else {
				sc[j+4] = (ls & 0xF) | ((lm & 0xF) << 4)
				sc[j-4] |= (ls >> 4) << 6
				sc[j] |= (lm >> 4) << 6
			}
		}
		copy(y[q4KScales:], sc[:])
		binary.LittleEndian.PutUint16(y[q4KD:], Float32ToFP16(maxScale/63))
		binary.LittleEndian.PutUint16(y[q4KDmin:], Float32ToFP16(maxMin/63))

		// Requantize against the scales as stored (6-bit, times fp16 d).
		dd := fp16At(y[q4KD:])
		ddmin := fp16At(y[q4KDmin:])
		for j := 0; j < QKK/32; j++ {
			s, m := ScaleMinK4(j, sc[:])
			d := float32(dd * float32(s))
			if d == 0 {
				continue // keeps make_qkx2_quants' levels, as GGML does
			}
			dm := float32(ddmin * float32(m))
			for ii := 0; ii < 32; ii++ {
				l := nearestInt((x[32*j+ii] + dm) / d)
				L[32*j+ii] = uint8(max(0, min(15, l)))
			}
		}

		q := y[q4KQs:]
		for j := 0; j < QKK; j += 64 {
			for l := 0; l < 32; l++ {
				q[l] = L[j+l] | L[j+l+32]<<4
			}
			q = q[32:]
		}
	}
}

// makeQKX2Quants is GGML's make_qkx2_quants: it fits
// x ≈ scale·levels − min with levels in 0..nmax (GGML's L), trying
// nstep+1 scales around nmax/(max−min) and keeping the one with the least
// weighted error. It returns the scale and the min (as a positive number
// to subtract). laux is scratch of len(x).
func makeQKX2Quants(nmax int32, x, weights []float32, levels, laux []uint8, rmin, rdelta float32, nstep int, useMAD bool) (scale, theMin float32) {
	n := len(x)
	xmin, xmax := x[0], x[0]
	sumW := weights[0]
	sumX := float32(sumW * x[0])
	for i := 1; i < n; i++ {
		if x[i] < xmin {
			xmin = x[i]
		}
		if x[i] > xmax {
			xmax = x[i]
		}
		w := weights[i]
		sumW += w
		sumX += float32(w * x[i])
	}
	if xmin > 0 {
		xmin = 0
	}
	if xmax == xmin {
		for i := range n {
			levels[i] = 0
		}
		return 0, -xmin
	}
	errOf := func(diff float32) float32 {
		if useMAD {
			return abs32(diff)
		}
		return float32(diff * diff)
	}
	iscale := float32(nmax) / (xmax - xmin)
	scale = 1 / iscale
	var bestError float32
	for i := range n {
		l := nearestInt(float32(iscale * (x[i] - xmin)))
		levels[i] = uint8(clamp(l, 0, nmax))
		diff := float32(float32(scale*float32(levels[i]))+xmin) - x[i]
		bestError += float32(weights[i] * errOf(diff))
	}
	if nstep < 1 {
		return scale, -xmin
	}
	for is := 0; is <= nstep; is++ {
		iscale = (float32(rmin+float32(rdelta*float32(is))) + float32(nmax)) / (xmax - xmin)
		var sumL, sumL2, sumXL float32
		for i := range n {
			l := clamp(nearestInt(float32(iscale*(x[i]-xmin))), 0, nmax)
			laux[i] = uint8(l)
			w := weights[i]
			fl := float32(l)
			sumL += float32(w * fl)
			sumL2 += float32(float32(w*fl) * fl)
			sumXL += float32(float32(w*fl) * x[i])
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if D > 0 {
			thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
			thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
			if thisMin > 0 {
				thisMin = 0
				thisScale = sumXL / sumL2
			}
			var curError float32
			for i := range n {
				diff := float32(float32(thisScale*float32(laux[i]))+thisMin) - x[i]
				curError += float32(weights[i] * errOf(diff))
			}
			if curError < bestError {
				copy(levels[:n], laux[:n])
				bestError = curError
				scale = thisScale
				xmin = thisMin
			}
		}
	}
	return scale, -xmin
}

func clamp(v, lo, hi int32) int32 { return max(lo, min(hi, v)) }

func dequantizeQ6K(src []byte, dst []float32) {
	for ; len(dst) > 0; src, dst = src[q6KBytes:], dst[QKK:] {
		d := fp16At(src[q6KD:])
		ql := src[q6KQl:q6KQh]
		qh := src[q6KQh:q6KScales]
		sc := src[q6KScales:q6KD]
		y := dst[:QKK]
		for n := 0; n < QKK; n += 128 {
			for l := 0; l < 32; l++ {
				is := l / 16
				q1 := int32((ql[l+0]&0xF)|((qh[l]>>0)&3)<<4) - 32
				q2 := int32((ql[l+32]&0xF)|((qh[l]>>2)&3)<<4) - 32
				q3 := int32((ql[l+0]>>4)|((qh[l]>>4)&3)<<4) - 32
				q4 := int32((ql[l+32]>>4)|((qh[l]>>6)&3)<<4) - 32
				y[l+0] = float32(d*float32(int8(sc[is+0]))) * float32(q1)
				y[l+32] = float32(d*float32(int8(sc[is+2]))) * float32(q2)
				y[l+64] = float32(d*float32(int8(sc[is+4]))) * float32(q3)
				y[l+96] = float32(d*float32(int8(sc[is+6]))) * float32(q4)
			}
			y = y[128:]
			ql = ql[64:]
			qh = qh[32:]
			sc = sc[8:]
		}
	}
}

func quantizeQ6K(src []float32, dst []byte) {
	var (
		L      [QKK]int8
		scales [QKK / 16]float32
	)
	for ; len(src) > 0; src, dst = src[QKK:], dst[q6KBytes:] {
		x := src[:QKK]
		y := dst[:q6KBytes]
		var maxScale, maxAbsScale float32
		for ib := 0; ib < QKK/16; ib++ {
			scale := makeQXQuants(32, x[16*ib:16*ib+16], L[16*ib:16*ib+16])
			scales[ib] = scale
			if a := abs32(scale); a > maxAbsScale {
				maxAbsScale = a
				maxScale = scale
			}
		}
		if maxAbsScale < groupMaxEps {
			clear(y) // d = fp16(0) = 0 too
			continue
		}

		iscale := -128 / maxScale
		binary.LittleEndian.PutUint16(y[q6KD:], Float32ToFP16(1/iscale))
		ys := y[q6KScales:q6KD]
		for ib := range ys {
			// C: MIN(127, nearest_int(·)) stored in an int8_t.
			ys[ib] = uint8(int8(min(127, nearestInt(float32(iscale*scales[ib])))))
		}

		dd := fp16At(y[q6KD:])
		for j := 0; j < QKK/16; j++ {
			d := float32(dd * float32(int8(ys[j])))
			if d == 0 {
				continue // keeps make_qx_quants' levels, as GGML does
			}
			for ii := 0; ii < 16; ii++ {
				l := clamp(nearestInt(x[16*j+ii]/d), -32, 31)
				L[16*j+ii] = int8(l + 32)
			}
		}

		ql := y[q6KQl:q6KQh]
		qh := y[q6KQh:q6KScales]
		for j := 0; j < QKK; j += 128 {
			for l := 0; l < 32; l++ {
				q1 := uint8(L[j+l+0]) & 0xF
				q2 := uint8(L[j+l+32]) & 0xF
				q3 := uint8(L[j+l+64]) & 0xF
				q4 := uint8(L[j+l+96]) & 0xF
				ql[l+0] = q1 | q3<<4
				ql[l+32] = q2 | q4<<4
				qh[l] = uint8(L[j+l]>>4) | uint8(L[j+l+32]>>4)<<2 | uint8(L[j+l+64]>>4)<<4 | uint8(L[j+l+96]>>4)<<6
			}
			ql = ql[64:]
			qh = qh[32:]
		}
	}
}

// makeQXQuants is GGML's make_qx_quants with rmse_type 1 and no importance
// weights (the only use the reference quantizers make of it): it fits
// x ≈ scale·(levels − nmax) with levels in 0..2·nmax−1 (GGML's L),
// weighting by x², trying 19 scales around −nmax/max, and returns the
// best scale.
func makeQXQuants(nmax int32, x []float32, levels []int8) float32 {
	n := len(x)
	var xmax, amax float32
	for i := range n {
		if ax := abs32(x[i]); ax > amax {
			amax = ax
			xmax = x[i]
		}
	}
	if amax < groupMaxEps { // all zero
		for i := range n {
			levels[i] = 0
		}
		return 0
	}
	iscale := float32(-nmax) / xmax
	var sumLX, sumL2 float32
	for i := range n {
		l := clamp(nearestInt(float32(iscale*x[i])), -nmax, nmax-1)
		levels[i] = int8(l + nmax)
		w := float32(x[i] * x[i])
		fl := float32(l)
		sumLX += float32(float32(w*x[i]) * fl)
		sumL2 += float32(float32(w*fl) * fl)
	}
	var scale float32
	if sumL2 != 0 {
		scale = sumLX / sumL2
	}
	best := float32(scale * sumLX)
	for is := int32(-9); is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(float32(nmax) + float32(float32(0.1)*float32(is))) / xmax
		sumLX, sumL2 = 0, 0
		for i := range n {
			l := clamp(nearestInt(float32(iscale*x[i])), -nmax, nmax-1)
			w := float32(x[i] * x[i])
			fl := float32(l)
			sumLX += float32(float32(w*x[i]) * fl)
			sumL2 += float32(float32(w*fl) * fl)
		}
		if sumL2 > 0 && float32(sumLX*sumLX) > float32(best*sumL2) {
			for i := range n {
				l := clamp(nearestInt(float32(iscale*x[i])), -nmax, nmax-1)
				levels[i] = int8(nmax + l)
			}
			scale = sumLX / sumL2
			best = float32(scale * sumLX)
		}
	}
	return scale
}

func dequantizeQ8K(src []byte, dst []float32) {
	for ; len(dst) > 0; src, dst = src[q8KBytes:], dst[QKK:] {
		d := math.Float32frombits(binary.LittleEndian.Uint32(src[q8KD:]))
		qs := src[q8KQs:q8KBsums]
		y := dst[:QKK]
		for j, q := range qs {
			y[j] = d * float32(int8(q))
		}
	}
}

func quantizeQ8K(src []float32, dst []byte) {
	for ; len(src) > 0; src, dst = src[QKK:], dst[q8KBytes:] {
		x := src[:QKK]
		y := dst[:q8KBytes]
		var xmax, amax float32
		for _, v := range x {
			if a := abs32(v); a > amax {
				amax = a
				xmax = v
			}
		}
		if amax == 0 {
			// GGML zeroes d and qs and leaves bsums alone; zeros are the
			// right sums, and leave no stale bytes behind.
			clear(y)
			continue
		}
		// -127, not -128, so that no value needs 8 bits plus sign (ggml's
		// comment: IQ2_XXS's AVX code needs it).
		iscale := -127 / xmax
		qs := y[q8KQs:q8KBsums]
		for j, v := range x {
			qs[j] = uint8(int8(min(127, nearestInt(float32(iscale*v)))))
		}
		for j := 0; j < QKK/16; j++ {
			var sum int32
			for _, q := range qs[16*j : 16*j+16] {
				sum += int32(int8(q))
			}
			binary.LittleEndian.PutUint16(y[q8KBsums+2*j:], uint16(int16(sum)))
		}
		binary.LittleEndian.PutUint32(y[q8KD:], math.Float32bits(1/iscale))
	}
}
