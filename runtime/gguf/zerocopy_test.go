package gguf

import "testing"

// TestParseTensorDataAliasesInput checks that TensorData is a view of the
// bytes given to Parse, not a copy, and cannot be appended into the next
// tensor.
func TestParseTensorDataAliasesInput(t *testing.T) {
	data := encode(t, sampleWriter(t))
	f, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	ti := f.Tensors[0]
	view := f.TensorData(ti)
	if &view[0] != &data[f.DataOffset+ti.Offset] {
		t.Fatal("TensorData is not a view of Parse's input")
	}
	if cap(view) != len(view) {
		t.Errorf("TensorData has capacity %d beyond its %d bytes", cap(view), len(view))
	}
	data[f.DataOffset+ti.Offset] ^= 0xff
	if view[0] != data[f.DataOffset+ti.Offset] {
		t.Error("a change to the input does not show through TensorData")
	}
}
