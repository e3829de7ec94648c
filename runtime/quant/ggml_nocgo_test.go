//go:build !cgo

package quant_test

import "testing"

// The comparisons with GGML (ggml_test.go) load libggml-base.so through cgo.
// Without cgo they cannot run, and that must show as a failure, not pass
// unnoticed.
func TestGGMLNeedsCgo(t *testing.T) {
	t.Fatal("the bit-for-bit comparisons with GGML need cgo: run with CGO_ENABLED=1 and a C compiler (gcc)")
}
