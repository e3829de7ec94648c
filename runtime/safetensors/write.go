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
	header := map[string]any{}
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	var off int64
	for _, t := range tensors {
		size, err := DTypeSize(t.DType)
		if err != nil {
			return fmt.Errorf("tensor %s: %w", t.Name, err)
		}
		n := int64(1)
		for _, d := range t.Shape {
			n *= d
		}
		if n*int64(size) != int64(len(t.Data)) {
			return fmt.Errorf("tensor %s: shape %v of %s is %d bytes, the data %d", t.Name, t.Shape, t.DType, n*int64(size), len(t.Data))
		}
		if _, dup := header[t.Name]; dup || t.Name == "__metadata__" {
			return fmt.Errorf("tensor name %q used twice (or reserved)", t.Name)
		}
		header[t.Name] = headerEntry{DType: t.DType, Shape: t.Shape, DataOffsets: [2]int64{off, off + int64(len(t.Data))}}
		off += int64(len(t.Data))
	}
	js, err := json.Marshal(header)
	if err != nil {
		return err
	}
	for len(js)%8 != 0 { // the data starts 8-byte aligned, as the reference writer pads
		js = append(js, ' ')
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(js)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	if _, err := w.Write(js); err != nil {
		return err
	}
	for _, t := range tensors {
		if _, err := w.Write(t.Data); err != nil {
			return err
		}
	}
	return nil
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
