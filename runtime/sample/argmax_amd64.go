//go:build amd64 && !purego

package sample

import (
	"math"

	"golang.org/x/sys/cpu"
)

// hasAVX2 selects the assembly argmax (argmax_amd64.s).
var hasAVX2 = cpu.X86.HasAVX2

// maxAVX2 returns the largest non-NaN value of x[0:n] (n a positive
// multiple of 32), -inf if there is none.
//
//go:noescape
func maxAVX2(x *float32, n int) float32

// firstEqAVX2 returns the first index i < n (n a multiple of 8) with
// x[i] == v, or n if there is none.
//
//go:noescape
func firstEqAVX2(x *float32, n int, v float32) int

// argmax is argmaxGo in AVX2 where the CPU has it: one pass for the
// maximum, one for its first index, each 8 scores an instruction.
func argmax(logits []float32) int32 {
	n := len(logits) &^ 31
	if !hasAVX2 || n == 0 {
		return argmaxGo(logits)
	}
	best := maxAVX2(&logits[0], n)
	for _, v := range logits[n:] {
		if v > best {
			best = v
		}
	}
	if best == float32(math.Inf(-1)) {
		return 0 // every score NaN or -inf: the first, as argmaxGo
	}
	n8 := len(logits) &^ 7
	if i := firstEqAVX2(&logits[0], n8, best); i < n8 {
		return int32(i)
	}
	for j := n8; j < len(logits); j++ {
		if logits[j] == best {
			return int32(j)
		}
	}
	return 0 // not reached
}
