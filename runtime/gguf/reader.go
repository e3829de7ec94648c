// Package gguf reads and writes GGUF files, the model format of ggml and
// llama.cpp: a header of typed key-value metadata and tensor descriptions,
// then the tensors' bytes, each aligned.
//
// Reading maps the file into memory and hands out tensor bytes without
// copying them. Files are untrusted: every count, length, shape and offset
// is checked against the bytes the file really has before anything is
// allocated, so a corrupt or hostile file gives an error naming the key or
// tensor at fault, never a panic or an outsized allocation.
//
// Writing streams: the header is written from declared tensor infos, then
// each tensor's bytes come from a callback, so a model larger than memory
// can be converted.
//
// The format is described in ggml's docs/gguf.md. Versions 2 and 3 (which
// differ only in that v3 allows big-endian files) are read, little-endian
// only; version 3 is written.
package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"os"

	"github.com/leo-operator/leo/runtime/quant"
)

// Magic is the four bytes a GGUF file starts with.
const Magic = "GGUF"

// DefaultAlignment is the alignment of tensor data when the file does not
// set general.alignment.
const DefaultAlignment = 32

// AlignmentKey is the metadata key that sets the alignment of tensor data.
const AlignmentKey = "general.alignment"

// MaxDims is the most dimensions a tensor may have (GGML_MAX_DIMS).
const MaxDims = 4

// Least encoded sizes, used to bound the header's counts by the bytes left
// before allocating: a key-value pair is at least a key length (8), one key
// byte, a type (4) and a one-byte value; a tensor info is at least a name
// length (8), one name byte, n_dims (4), a type (4) and an offset (8).
const (
	minKVBytes     = 8 + 1 + 4 + 1
	minTensorBytes = 8 + 1 + 4 + 4 + 8
)

// File is a parsed GGUF file. Metadata is copied out of the file; tensor
// bytes stay in it (see TensorData).
type File struct {
	// Version is the file's format version, 2 or 3.
	Version uint32
	// KVs is the metadata in file order.
	KVs []KV
	// Tensors describes the tensors in file order.
	Tensors []TensorInfo
	// Alignment is the alignment of the data section and of every tensor's
	// offset: general.alignment, or DefaultAlignment.
	Alignment uint64
	// DataOffset is where the data section starts, from the start of the
	// file: the end of the header rounded up to Alignment.
	DataOffset uint64

	data    []byte
	unmap   func() error
	keys    map[string]int
	tensors map[string]int
}

// KV is one metadata key-value pair.
type KV struct {
	Key   string
	Value Value
}

// TensorInfo describes one tensor.
type TensorInfo struct {
	// Name is the tensor's name, e.g. "blk.0.attn_q.weight".
	Name string
	// Shape lists the dimensions, innermost first as GGML does: Shape[0] is
	// the length of a row (ne[0]), and a [out][in] matrix has Shape {in, out}.
	Shape []uint64
	// Type is the element type.
	Type quant.Type
	// Offset is where the tensor's bytes start, from the start of the data
	// section. It is a multiple of the file's alignment.
	Offset uint64
	// Size is the tensor's length in bytes.
	Size uint64
}

// Elements returns the number of elements of the tensor.
func (t TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Shape {
		n *= d // cannot overflow: parsing and AddTensor bound the product
	}
	return n
}

// Open maps the file at path read-only and parses it. Tensor bytes are
// served from the mapping, so Close must be called when they are no longer
// used, and not before.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	defer func() { _ = fh.Close() }() // the mapping outlives the descriptor; read only, so nothing is lost
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	size := st.Size()
	if size == 0 {
		return nil, fmt.Errorf("gguf: %s: the file is empty, not a GGUF file", path)
	}
	if uint64(size) > math.MaxInt {
		return nil, fmt.Errorf("gguf: %s: %d bytes is more than this platform can map", path, size)
	}
	data, unmap, err := mapFile(fh, int(size))
	if err != nil {
		return nil, fmt.Errorf("gguf: %s: mapping the file: %w", path, err)
	}
	f, err := parse(data)
	if err != nil {
		_ = unmap()
		return nil, fmt.Errorf("gguf: %s: %w", path, err)
	}
	f.unmap = unmap
	return f, nil
}

// Parse parses a GGUF file held in memory. TensorData returns slices of
// data, which must not change while they are used.
func Parse(data []byte) (*File, error) {
	f, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	return f, nil
}

// Close unmaps a file opened with Open; slices from TensorData must not be
// used afterwards. Metadata stays readable. Close is a no-op for a parsed
// file and on a second call.
func (f *File) Close() error {
	f.data = nil
	if f.unmap == nil {
		return nil
	}
	unmap := f.unmap
	f.unmap = nil
	if err := unmap(); err != nil {
		return fmt.Errorf("gguf: unmapping: %w", err)
	}
	return nil
}

// Tensor returns the tensor with the given name.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := f.tensors[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Tensors[i], true
}

// TensorData returns the bytes of tensor t without copying them: a view of
// the mapped file (or of Parse's input). It returns nil when t does not lie
// inside the file, or after Close.
func (f *File) TensorData(t TensorInfo) []byte {
	start, ok1 := add(f.DataOffset, t.Offset)
	end, ok2 := add(start, t.Size)
	if !ok1 || !ok2 || end > uint64(len(f.data)) {
		return nil
	}
	// The capacity is cut at the end so that an append cannot write into
	// the next tensor.
	return f.data[start:end:end]
}

// Release tells the kernel that tensor t's pages will not be read again
// soon, so that they leave this process's resident memory (a pass over a
// whole model, such as quantizing it, then holds one tensor at a time
// rather than the file). The bytes stay readable. A no-op for a parsed
// file.
func (f *File) Release(t TensorInfo) {
	if f.unmap == nil {
		return
	}
	if b := f.TensorData(t); len(b) > 0 {
		release(f.data, b)
	}
}

// Lookup returns the value of a metadata key.
func (f *File) Lookup(key string) (Value, bool) {
	i, ok := f.keys[key]
	if !ok {
		return Value{}, false
	}
	return f.KVs[i].Value, true
}

// decoder reads little-endian fields from b, tracking the offset for error
// messages.
type decoder struct {
	b   []byte
	off uint64
}

func (d *decoder) left() uint64 { return uint64(len(d.b)) - d.off }

func (d *decoder) take(n uint64, what string) ([]byte, error) {
	if n > d.left() {
		return nil, fmt.Errorf("%s needs %d bytes at offset %d but only %d remain: the file is truncated or corrupt", what, n, d.off, d.left())
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p, nil
}

func (d *decoder) u32(what string) (uint32, error) {
	p, err := d.take(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(p), nil
}

func (d *decoder) u64(what string) (uint64, error) {
	p, err := d.take(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(p), nil
}

// str reads a string: a uint64 length, then that many bytes.
func (d *decoder) str(what string) (string, error) {
	at := d.off
	if d.left() < 8 {
		// Composed here, not passed to u64: concatenating on every call
		// would cost an allocation per vocabulary token.
		_, err := d.u64(what + " length")
		return "", err
	}
	n, _ := d.u64("")
	if n > d.left() {
		return "", fmt.Errorf("%s at offset %d claims %d bytes but only %d remain: the file is truncated or corrupt", what, at, n, d.left())
	}
	p, _ := d.take(n, what)
	return string(p), nil
}

// value reads a value of type t; depth counts the arrays it is inside.
func (d *decoder) value(t ValueType, depth int) (Value, error) {
	switch t {
	case TypeString:
		s, err := d.str("string")
		return Value{typ: TypeString, str: s}, err
	case TypeArray:
		if depth >= MaxArrayDepth {
			return Value{}, fmt.Errorf("arrays nest more than %d deep at offset %d", MaxArrayDepth, d.off)
		}
		at := d.off
		et, err := d.u32("array element type")
		if err != nil {
			return Value{}, err
		}
		n, err := d.u64("array length")
		if err != nil {
			return Value{}, err
		}
		return d.array(ValueType(et), n, at, depth+1)
	}
	if !t.known() {
		return Value{}, fmt.Errorf("unknown value type %d at offset %d (GGUF defines 0 to 12)", uint32(t), d.off-4)
	}
	at := d.off
	p, err := d.take(t.size(), t.String()+" value")
	if err != nil {
		return Value{}, err
	}
	v := Value{typ: t}
	switch len(p) {
	case 1:
		v.bits = uint64(p[0])
		if t == TypeInt8 {
			v.bits = uint64(int64(int8(p[0])))
		}
		if t == TypeBool && p[0] > 1 {
			return Value{}, fmt.Errorf("BOOL at offset %d is %d; GGUF allows only 0 and 1", at, p[0])
		}
	case 2:
		v.bits = uint64(binary.LittleEndian.Uint16(p))
		if t == TypeInt16 {
			v.bits = uint64(int64(int16(v.bits)))
		}
	case 4:
		v.bits = uint64(binary.LittleEndian.Uint32(p))
		if t == TypeInt32 {
			v.bits = uint64(int64(int32(v.bits)))
		}
	case 8:
		v.bits = binary.LittleEndian.Uint64(p)
	}
	return v, nil
}

// array reads n items of type et, for the array that starts at offset at.
// The count is checked against the bytes
// left, at the least size of one item, before the items are allocated.
func (d *decoder) array(et ValueType, n, at uint64, depth int) (Value, error) {
	if !et.known() {
		return Value{}, fmt.Errorf("array at offset %d has unknown element type %d (GGUF defines 0 to 12)", at, uint32(et))
	}
	if n > d.left()/et.size() {
		return Value{}, fmt.Errorf("array at offset %d claims %d %s items, which need at least %d bytes each, but only %d bytes remain: the file is truncated or corrupt",
			at, n, et, et.size(), d.left())
	}
	count := int(n) // fits: n ≤ len(d.b)
	switch et {
	case TypeString:
		items := make([]string, count)
		for i := range items {
			s, err := d.str("string")
			if err != nil {
				return Value{}, fmt.Errorf("array item %d: %w", i, err)
			}
			items[i] = s
		}
		return arrayValue(et, items), nil
	case TypeArray:
		items := make([]Value, count)
		for i := range items {
			v, err := d.value(TypeArray, depth)
			if err != nil {
				return Value{}, fmt.Errorf("array item %d: %w", i, err)
			}
			items[i] = v
		}
		return arrayValue(et, items), nil
	}
	p, _ := d.take(n*et.size(), "array") // checked above
	var items any
	switch et {
	case TypeUint8:
		items = clone(p)
	case TypeInt8:
		items = decode(p, 1, func(b []byte) int8 { return int8(b[0]) })
	case TypeBool:
		for i, c := range p {
			if c > 1 {
				return Value{}, fmt.Errorf("BOOL array item %d at offset %d is %d; GGUF allows only 0 and 1", i, d.off-n+uint64(i), c)
			}
		}
		items = decode(p, 1, func(b []byte) bool { return b[0] != 0 })
	case TypeUint16:
		items = decode(p, 2, binary.LittleEndian.Uint16)
	case TypeInt16:
		items = decode(p, 2, func(b []byte) int16 { return int16(binary.LittleEndian.Uint16(b)) })
	case TypeUint32:
		items = decode(p, 4, binary.LittleEndian.Uint32)
	case TypeInt32:
		items = decode(p, 4, func(b []byte) int32 { return int32(binary.LittleEndian.Uint32(b)) })
	case TypeFloat32:
		items = decode(p, 4, func(b []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b)) })
	case TypeUint64:
		items = decode(p, 8, binary.LittleEndian.Uint64)
	case TypeInt64:
		items = decode(p, 8, func(b []byte) int64 { return int64(binary.LittleEndian.Uint64(b)) })
	case TypeFloat64:
		items = decode(p, 8, func(b []byte) float64 { return math.Float64frombits(binary.LittleEndian.Uint64(b)) })
	}
	return arrayValue(et, items), nil
}

func decode[T any](p []byte, size int, conv func([]byte) T) []T {
	s := make([]T, len(p)/size)
	for i := range s {
		s[i] = conv(p[i*size : i*size+size])
	}
	return s
}

// parse does Parse's work; its errors lack the "gguf: " prefix so that Open
// can put the path after it.
func parse(data []byte) (*File, error) {
	d := &decoder{b: data}
	if len(data) < 4 {
		return nil, fmt.Errorf("the file is %d bytes, too short to be a GGUF file", len(data))
	}
	if m := string(data[:4]); m != Magic {
		return nil, fmt.Errorf("not a GGUF file: it starts with %q, not %q", m, Magic)
	}
	d.off = 4
	version, err := d.u32("version")
	if err != nil {
		return nil, err
	}
	switch {
	case version == 2 || version == 3:
	case version == 1:
		return nil, fmt.Errorf("GGUF version 1 (32-bit counts) is not supported; convert the model again with a current llama.cpp")
	case bits.ReverseBytes32(version) == 2 || bits.ReverseBytes32(version) == 3:
		return nil, fmt.Errorf("the file is big-endian GGUF (version reads %#x, byte-swapped %d); only little-endian files are supported, so convert it again for a little-endian host",
			version, bits.ReverseBytes32(version))
	default:
		return nil, fmt.Errorf("unsupported GGUF version %d; versions 2 and 3 are supported", version)
	}
	nTensors, err := d.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nKVs, err := d.u64("metadata count")
	if err != nil {
		return nil, err
	}
	// Bound both counts by the bytes left before allocating anything.
	if nKVs > d.left()/minKVBytes {
		return nil, fmt.Errorf("the header claims %d metadata key-value pairs but the %d bytes left hold at most %d: the file is truncated or corrupt",
			nKVs, d.left(), d.left()/minKVBytes)
	}
	if nTensors > d.left()/minTensorBytes {
		return nil, fmt.Errorf("the header claims %d tensors but the %d bytes left hold at most %d: the file is truncated or corrupt",
			nTensors, d.left(), d.left()/minTensorBytes)
	}

	f := &File{
		Version: version,
		KVs:     make([]KV, 0, nKVs),
		keys:    make(map[string]int, nKVs),
		data:    data,
	}
	for i := range int(nKVs) {
		at := d.off
		key, err := d.str("key")
		if err != nil {
			return nil, fmt.Errorf("metadata pair %d: %w", i, err)
		}
		if key == "" {
			return nil, fmt.Errorf("metadata pair %d at offset %d has an empty key", i, at)
		}
		if _, dup := f.keys[key]; dup {
			return nil, fmt.Errorf("metadata key %q appears twice (again at offset %d)", key, at)
		}
		t, err := d.u32("value type")
		if err == nil {
			var v Value
			v, err = d.value(ValueType(t), 0)
			f.keys[key] = len(f.KVs)
			f.KVs = append(f.KVs, KV{Key: key, Value: v})
		}
		if err != nil {
			return nil, fmt.Errorf("metadata key %q: %w", key, err)
		}
	}
	if f.Alignment, err = alignmentOf(f.Lookup(AlignmentKey)); err != nil {
		return nil, err
	}

	if nTensors > d.left()/minTensorBytes {
		return nil, fmt.Errorf("the header claims %d tensors but the %d bytes left after the metadata hold at most %d: the file is truncated or corrupt",
			nTensors, d.left(), d.left()/minTensorBytes)
	}
	f.Tensors = make([]TensorInfo, 0, nTensors)
	f.tensors = make(map[string]int, nTensors)
	for i := range int(nTensors) {
		t, err := d.tensorInfo(i)
		if err != nil {
			return nil, err
		}
		if _, dup := f.tensors[t.Name]; dup {
			return nil, fmt.Errorf("tensor %q appears twice", t.Name)
		}
		if t.Offset%f.Alignment != 0 {
			return nil, fmt.Errorf("tensor %q: offset %d is not a multiple of the alignment %d", t.Name, t.Offset, f.Alignment)
		}
		f.tensors[t.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, t)
	}

	// No overflow: d.off < 2^63 and the step is at most Alignment ≤ 2^63.
	f.DataOffset = d.off
	if r := d.off % f.Alignment; r != 0 {
		f.DataOffset += f.Alignment - r
	}
	for _, t := range f.Tensors {
		start, ok1 := add(f.DataOffset, t.Offset)
		end, ok2 := add(start, t.Size)
		if !ok1 || !ok2 || end > uint64(len(data)) {
			return nil, fmt.Errorf("tensor %q: its %d bytes at data offset %d extend past the end of the file (%d bytes, data from offset %d): the file is truncated or corrupt",
				t.Name, t.Size, t.Offset, len(data), f.DataOffset)
		}
	}
	return f, nil
}

// tensorInfo reads the description of tensor i.
func (d *decoder) tensorInfo(i int) (TensorInfo, error) {
	at := d.off
	name, err := d.str("name")
	if err != nil {
		return TensorInfo{}, fmt.Errorf("tensor %d: %w", i, err)
	}
	if name == "" {
		return TensorInfo{}, fmt.Errorf("tensor %d at offset %d has an empty name", i, at)
	}
	fail := func(err error) (TensorInfo, error) {
		return TensorInfo{}, fmt.Errorf("tensor %q: %w", name, err)
	}
	nDims, err := d.u32("dimension count")
	if err != nil {
		return fail(err)
	}
	if nDims > MaxDims {
		return fail(fmt.Errorf("%d dimensions; GGML tensors have at most %d", nDims, MaxDims))
	}
	t := TensorInfo{Name: name, Shape: make([]uint64, nDims)}
	for j := range t.Shape {
		if t.Shape[j], err = d.u64("dimension"); err != nil {
			return fail(err)
		}
	}
	typ, err := d.u32("type")
	if err != nil {
		return fail(err)
	}
	t.Type = quant.Type(typ)
	if t.Offset, err = d.u64("offset"); err != nil {
		return fail(err)
	}
	if t.Size, err = tensorBytes(t.Type, t.Shape); err != nil {
		return fail(err)
	}
	return t, nil
}

// tensorBytes returns the size of a tensor of the given type and shape,
// refusing unknown types, rows that are not whole blocks and sizes that
// overflow.
func tensorBytes(typ quant.Type, shape []uint64) (uint64, error) {
	if !typ.Known() {
		return 0, fmt.Errorf("unknown type id %d: not a GGML type this build knows", uint32(typ))
	}
	elems := uint64(1)
	for _, d := range shape {
		hi, lo := bits.Mul64(elems, d)
		if hi != 0 || lo > math.MaxInt64 {
			return 0, fmt.Errorf("shape %v has more than 2^63 elements", shape)
		}
		elems = lo
	}
	if elems == 0 {
		return 0, nil
	}
	row := uint64(1)
	if len(shape) > 0 {
		row = shape[0]
	}
	// Bound the row's bytes before RowBytes computes them in an int.
	if row > math.MaxInt || row/uint64(typ.BlockElems()) > math.MaxInt/uint64(typ.BlockBytes()) {
		return 0, fmt.Errorf("shape %v: rows of %d elements are too long", shape, row)
	}
	rowBytes, err := typ.RowBytes(int(row))
	if err != nil {
		return 0, fmt.Errorf("shape %v: row length %d: %w", shape, row, err)
	}
	hi, size := bits.Mul64(uint64(rowBytes), elems/row)
	if hi != 0 || size > math.MaxInt64 {
		return 0, fmt.Errorf("shape %v of %s is more than 2^63 bytes", shape, typ)
	}
	return size, nil
}

// alignmentOf checks the value of general.alignment: any integer type, a
// nonzero power of two.
func alignmentOf(v Value, ok bool) (uint64, error) {
	if !ok {
		return DefaultAlignment, nil
	}
	a, err := v.uint()
	if err != nil {
		return 0, fmt.Errorf("metadata key %q: %w", AlignmentKey, err)
	}
	if a == 0 || a&(a-1) != 0 {
		return 0, fmt.Errorf("metadata key %q is %d; the alignment must be a nonzero power of two", AlignmentKey, a)
	}
	return a, nil
}

func add(a, b uint64) (uint64, bool) {
	s, carry := bits.Add64(a, b, 0)
	return s, carry == 0
}
