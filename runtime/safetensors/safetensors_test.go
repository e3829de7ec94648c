package safetensors

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	tensors := []Tensor{
		{Name: "a", DType: "F32", Shape: []int64{2, 3}, Data: bytes.Repeat([]byte{1, 2, 3, 4}, 6)},
		{Name: "b.weight", DType: "F16", Shape: []int64{5}, Data: []byte{9, 8, 7, 6, 5, 4, 3, 2, 1, 0}},
		{Name: "scalar", DType: "BF16", Shape: []int64{}, Data: []byte{0x80, 0x3f}},
	}
	var buf bytes.Buffer
	if err := Write(&buf, tensors, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	if hl := int(buf.Bytes()[0]); (8+hl)%8 != 0 {
		t.Errorf("data starts at %d, not 8-byte aligned", 8+hl)
	}
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if f.Metadata["format"] != "pt" || strings.Join(f.Names(), ",") != "a,b.weight,scalar" {
		t.Fatalf("metadata %v, names %v", f.Metadata, f.Names())
	}
	for _, want := range tensors {
		info := f.Tensors[want.Name]
		got := make([]byte, info.End-info.Begin)
		if err := f.ReadAt(info, got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Data) || info.DType != want.DType || info.Elements()*2 < int64(len(want.Data))/2 {
			t.Errorf("%s: %+v, bytes %v", want.Name, info, got)
		}
	}
	part := make([]byte, 4)
	if err := f.ReadAt(f.Tensors["a"], part, 20); err != nil || !bytes.Equal(part, []byte{1, 2, 3, 4}) {
		t.Errorf("a piece: %v %v", part, err)
	}
	if err := f.ReadAt(f.Tensors["a"], part, 22); err == nil {
		t.Error("reading past a tensor's end succeeded")
	}
	if err := Write(&buf, []Tensor{{Name: "x", DType: "F32", Shape: []int64{3}, Data: make([]byte, 8)}}, nil); err == nil {
		t.Error("a tensor whose data does not match its shape was written")
	}
}

func TestBadHeaders(t *testing.T) {
	for _, c := range []struct{ header, want string }{
		{`[]`, "not a JSON object"},
		{`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, "overlap"},
		{`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,800]}}`, "outside"},
		{`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, "needs 12 bytes"},
		{`{"a":{"dtype":"Q4","shape":[3],"data_offsets":[0,8]}}`, "unknown safetensors dtype"},
		{`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}}`, "bad shape"},
		{`{"__metadata__":{"a":1}}`, "__metadata__"},
	} {
		_, _, err := ParseHeader([]byte(c.header), 16)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.header, err, c.want)
		}
	}
	path := filepath.Join(t.TempDir(), "short")
	_ = os.WriteFile(path, []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, '{'}, 0o644)
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "beyond the file") {
		t.Errorf("a header length past the end: %v", err)
	}
}

// FuzzParseHeader: a checkpoint's header is untrusted input.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"format":"pt"}}`), int64(8))
	f.Add([]byte(`{"a":{"dtype":"BF16","shape":[4611686018427387904,4],"data_offsets":[0,8]}}`), int64(8))
	f.Fuzz(func(t *testing.T, header []byte, size int64) {
		tensors, _, err := ParseHeader(header, size)
		if err != nil {
			return
		}
		for _, ti := range tensors {
			if ti.Begin < 0 || ti.End > size || ti.End < ti.Begin {
				t.Fatalf("accepted %+v for %d bytes", ti, size)
			}
		}
	})
}
