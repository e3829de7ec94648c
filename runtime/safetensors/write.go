// Package safetensors reads and writes Hugging Face's safetensors files:
// an 8-byte little-endian header length, a JSON header naming each
// tensor's dtype, shape and byte range, then the tensors' bytes.
package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
)

// Tensor is one tensor to write: Data holds its elements, row-major, in
// DType's little-endian encoding.
type Tensor struct {
	Name  string
	DType string // "F32", "F16", "BF16", ...
	Shape []int64
	Data  []byte
}

// headerEntry is a tensor in the JSON header.
type headerEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// Write writes tensors (in the order given) and metadata as a safetensors
// file. Sizes are checked against dtypes and shapes.
func Write(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	specs := make([]Spec, len(tensors))
	for i, t := range tensors {
		specs[i] = Spec{Name: t.Name, DType: t.DType, Shape: t.Shape}
		if n, err := specs[i].Bytes(); err != nil || n != int64(len(t.Data)) {
			if err != nil {
				return fmt.Errorf("tensor %s: %w", t.Name, err)
			}
			return fmt.Errorf("tensor %s: shape %v of %s is %d bytes, the data %d", t.Name, t.Shape, t.DType, n, len(t.Data))
		}
	}
	h, err := Header(specs, metadata)
	if err != nil {
		return err
	}
	if _, err := w.Write(h); err != nil {
		return err
	}
	for _, t := range tensors {
		if _, err := w.Write(t.Data); err != nil {
			return err
		}
	}
	return nil
}

// Spec is a tensor's name, dtype and shape, without its data.
type Spec struct {
	Name  string
	DType string
	Shape []int64
}

// Bytes is the size of the tensor's data.
func (s Spec) Bytes() (int64, error) {
	size, err := DTypeSize(s.DType)
	if err != nil {
		return 0, err
	}
	n := int64(size)
	for _, d := range s.Shape {
		n *= d
	}
	return n, nil
}

// Header returns the start of a safetensors file holding tensors of these
// specs in this order: the header's length and the header, padded so that
// the data starts 8-byte aligned. The tensors' bytes follow it, in order
// (a writer of large files streams them).
func Header(specs []Spec, metadata map[string]string) ([]byte, error) {
	header := map[string]any{}
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	var off int64
	for _, s := range specs {
		n, err := s.Bytes()
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", s.Name, err)
		}
		if _, dup := header[s.Name]; dup || s.Name == "__metadata__" {
			return nil, fmt.Errorf("tensor name %q used twice (or reserved)", s.Name)
		}
		header[s.Name] = headerEntry{DType: s.DType, Shape: s.Shape, DataOffsets: [2]int64{off, off + n}}
		off += n
	}
	js, err := json.Marshal(header)
	if err != nil {
		return nil, err
	}
	for len(js)%8 != 0 { // as the reference writer pads
		js = append(js, ' ')
	}
	out := make([]byte, 8, 8+len(js))
	binary.LittleEndian.PutUint64(out, uint64(len(js)))
	return append(out, js...), nil
}

// DTypeSize is the bytes of one element of a safetensors dtype.
func DTypeSize(dtype string) (int, error) {
	switch dtype {
	case "F64", "I64", "U64":
		return 8, nil
	case "F32", "I32", "U32":
		return 4, nil
	case "F16", "BF16", "I16", "U16":
		return 2, nil
	case "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2":
		return 1, nil
	}
	return 0, fmt.Errorf("unknown safetensors dtype %q", dtype)
}
