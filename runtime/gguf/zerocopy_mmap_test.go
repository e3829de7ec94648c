//go:build linux || darwin || freebsd

package gguf

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"
)

// These systems map files coherently with write(2), which the test uses.

// TestOpenTensorDataIsTheMapping checks that Open serves tensor bytes from
// a mapping of the file: they lie outside the Go heap's copy of anything,
// and a write to the file through another descriptor shows through them,
// which a copy made at Open could not do.
func TestOpenTensorDataIsTheMapping(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := sampleWriter(t).WriteFile(path); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	ti, _ := f.Tensor("blk.0.attn_q.weight")
	view := f.TensorData(ti)
	start := uintptr(unsafe.Pointer(unsafe.SliceData(f.data)))
	if p := uintptr(unsafe.Pointer(&view[0])); p != start+uintptr(f.DataOffset+ti.Offset) {
		t.Fatalf("tensor data at %#x, want %#x inside the mapping", p, start+uintptr(f.DataOffset+ti.Offset))
	}
	if start%4096 != 0 {
		t.Errorf("the file's bytes start at %#x, not on a page: not a mapping", start)
	}

	fh, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fh.Close() }()
	want := view[0] ^ 0x5a
	if _, err := fh.WriteAt([]byte{want}, int64(f.DataOffset+ti.Offset)); err != nil {
		t.Fatal(err)
	}
	if view[0] != want {
		t.Errorf("a write to the file does not show through TensorData (got %#x, want %#x): the data was copied", view[0], want)
	}
}
