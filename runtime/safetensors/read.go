package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
)

// maxHeader bounds the JSON header (the reference implementation refuses
// headers over 100 MB too).
const maxHeader = 100 << 20

// TensorInfo is one tensor of a file: its bytes are [Begin, End) of the
// data section.
type TensorInfo struct {
	Name       string
	DType      string
	Shape      []int64
	Begin, End int64
}

// Elements is the product of the shape.
func (t TensorInfo) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// File is an open safetensors file. Tensors are read with ReadAt (no
// mapping): converting a checkpoint holds one piece at a time in memory.
type File struct {
	f        *os.File
	dataOff  int64
	Tensors  map[string]TensorInfo
	Metadata map[string]string
}

// Open reads path's header and checks it against the file's size.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	var n [8]byte
	if _, err := f.ReadAt(n[:], 0); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: not a safetensors file (%d bytes, no header length)", path, fi.Size())
	}
	hlen := binary.LittleEndian.Uint64(n[:])
	if hlen > maxHeader || int64(hlen) > fi.Size()-8 { //nolint:gosec // bounded just before
		_ = f.Close()
		return nil, fmt.Errorf("%s: header length %d is beyond the file (%d bytes) or the 100 MB limit", path, hlen, fi.Size())
	}
	header := make([]byte, hlen)
	if _, err := f.ReadAt(header, 8); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	dataOff := 8 + int64(hlen) //nolint:gosec // bounded above
	tensors, meta, err := ParseHeader(header, fi.Size()-dataOff)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &File{f: f, dataOff: dataOff, Tensors: tensors, Metadata: meta}, nil
}

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }

// Names returns the tensors' names, sorted.
func (f *File) Names() []string {
	names := make([]string, 0, len(f.Tensors))
	for k := range f.Tensors {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// ReadAt reads len(p) bytes of tensor t starting at byte off of its data.
func (f *File) ReadAt(t TensorInfo, p []byte, off int64) error {
	if off < 0 || off+int64(len(p)) > t.End-t.Begin {
		return fmt.Errorf("tensor %s: bytes [%d, %d) are outside its %d bytes", t.Name, off, off+int64(len(p)), t.End-t.Begin)
	}
	_, err := f.f.ReadAt(p, f.dataOff+t.Begin+off)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// ParseHeader checks a header's JSON against a data section of dataSize
// bytes: known dtypes, sizes that match shapes, byte ranges inside the
// data and not overlapping.
func ParseHeader(header []byte, dataSize int64) (map[string]TensorInfo, map[string]string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(header, &raw); err != nil {
		return nil, nil, fmt.Errorf("the header is not a JSON object: %w", err)
	}
	var meta map[string]string
	tensors := map[string]TensorInfo{}
	for name, v := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(v, &meta); err != nil {
				return nil, nil, fmt.Errorf("__metadata__ must map strings to strings: %w", err)
			}
			continue
		}
		var e headerEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		size, err := DTypeSize(e.DType)
		if err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		n := int64(1)
		for _, d := range e.Shape {
			if d < 0 || (d > 0 && n > (1<<62)/d) {
				return nil, nil, fmt.Errorf("tensor %q: bad shape %v", name, e.Shape)
			}
			n *= d
		}
		b, end := e.DataOffsets[0], e.DataOffsets[1]
		if b < 0 || end < b || end > dataSize {
			return nil, nil, fmt.Errorf("tensor %q: data_offsets %v are outside the %d bytes of data", name, e.DataOffsets, dataSize)
		}
		if n > (1<<62)/int64(size) || end-b != n*int64(size) {
			return nil, nil, fmt.Errorf("tensor %q: shape %v of %s needs %d bytes, data_offsets give %d", name, e.Shape, e.DType, n*int64(size), end-b)
		}
		tensors[name] = TensorInfo{Name: name, DType: e.DType, Shape: e.Shape, Begin: b, End: end}
	}
	// No two tensors may share bytes.
	list := make([]TensorInfo, 0, len(tensors))
	for _, t := range tensors {
		list = append(list, t)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Begin < list[j].Begin })
	for i := 1; i < len(list); i++ {
		if list[i].Begin < list[i-1].End {
			return nil, nil, fmt.Errorf("tensors %q and %q overlap", list[i-1].Name, list[i].Name)
		}
	}
	return tensors, meta, nil
}
