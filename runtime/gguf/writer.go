package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/leo-operator/leo/runtime/quant"
)

// MaxTensorName is the longest tensor name, in bytes, that the Writer
// accepts: GGML keeps names in a 64-byte buffer with a terminating NUL, so
// llama.cpp refuses longer ones.
const MaxTensorName = 63

// Writer builds a GGUF file: set the metadata, declare the tensors, then
// WriteTo or WriteFile streams the header and asks each tensor's callback
// for its bytes in turn, so tensor data never has to be in memory at once.
type Writer struct {
	// Version is the format version written, 2 or 3; NewWriter sets 3.
	// The two are the same for little-endian files.
	Version uint32

	kvs     []KV
	keys    map[string]int
	tensors []pendingTensor
	names   map[string]bool
}

type pendingTensor struct {
	info  TensorInfo
	write func(io.Writer) error
}

// NewWriter returns a Writer for a version 3 file with no metadata and no
// tensors. Tensor data is aligned to DefaultAlignment unless
// general.alignment is set (to any integer type).
func NewWriter() *Writer {
	return &Writer{Version: 3, keys: map[string]int{}, names: map[string]bool{}}
}

// Set sets a metadata key. Keys are written in the order they were first
// set; setting a key again replaces its value in place.
func (w *Writer) Set(key string, v Value) {
	if i, ok := w.keys[key]; ok {
		w.kvs[i].Value = v
		return
	}
	w.keys[key] = len(w.kvs)
	w.kvs = append(w.kvs, KV{Key: key, Value: v})
}

// SetString sets a STRING key.
func (w *Writer) SetString(key, v string) { w.Set(key, Value{typ: TypeString, str: v}) }

// SetUint32 sets a UINT32 key.
func (w *Writer) SetUint32(key string, v uint32) { w.Set(key, Value{typ: TypeUint32, bits: uint64(v)}) }

// SetInt32 sets an INT32 key.
func (w *Writer) SetInt32(key string, v int32) {
	w.Set(key, Value{typ: TypeInt32, bits: uint64(int64(v))})
}

// SetUint64 sets a UINT64 key.
func (w *Writer) SetUint64(key string, v uint64) { w.Set(key, Value{typ: TypeUint64, bits: v}) }

// SetFloat32 sets a FLOAT32 key.
func (w *Writer) SetFloat32(key string, v float32) {
	w.Set(key, Value{typ: TypeFloat32, bits: uint64(math.Float32bits(v))})
}

// SetBool sets a BOOL key.
func (w *Writer) SetBool(key string, v bool) { w.Set(key, boolValue(v)) }

// SetStrings sets an ARRAY of STRING key; the slice is copied.
func (w *Writer) SetStrings(key string, v []string) { w.Set(key, arrayValue(TypeString, clone(v))) }

// SetFloat32s sets an ARRAY of FLOAT32 key; the slice is copied.
func (w *Writer) SetFloat32s(key string, v []float32) {
	w.Set(key, arrayValue(TypeFloat32, clone(v)))
}

// SetInt32s sets an ARRAY of INT32 key; the slice is copied.
func (w *Writer) SetInt32s(key string, v []int32) { w.Set(key, arrayValue(TypeInt32, clone(v))) }

// AddTensor declares a tensor whose bytes write will produce when the file
// is written; write must write exactly the tensor's size (see
// TensorInfo.Shape for the order of dimensions). Tensors are written in the
// order they are added.
func (w *Writer) AddTensor(name string, typ quant.Type, shape []uint64, write func(io.Writer) error) error {
	switch {
	case name == "":
		return errors.New("gguf: a tensor name must not be empty")
	case len(name) > MaxTensorName:
		return fmt.Errorf("gguf: tensor name %q is %d bytes; GGML allows at most %d", name, len(name), MaxTensorName)
	case w.names[name]:
		return fmt.Errorf("gguf: tensor %q is added twice", name)
	case len(shape) > MaxDims:
		return fmt.Errorf("gguf: tensor %q has %d dimensions; GGML tensors have at most %d", name, len(shape), MaxDims)
	case write == nil:
		return fmt.Errorf("gguf: tensor %q has no write function", name)
	}
	size, err := tensorBytes(typ, shape)
	if err != nil {
		return fmt.Errorf("gguf: tensor %q: %w", name, err)
	}
	w.names[name] = true
	info := TensorInfo{Name: name, Shape: clone(shape), Type: typ, Size: size}
	w.tensors = append(w.tensors, pendingTensor{info: info, write: write})
	return nil
}

// AddTensorBytes declares a tensor whose bytes are data, which must be
// exactly the tensor's size. data is not copied: it must not change until
// the file is written.
func (w *Writer) AddTensorBytes(name string, typ quant.Type, shape []uint64, data []byte) error {
	size, err := tensorBytes(typ, shape)
	if err != nil {
		return fmt.Errorf("gguf: tensor %q: %w", name, err)
	}
	if uint64(len(data)) != size {
		return fmt.Errorf("gguf: tensor %q: %s %v takes %d bytes but %d were given", name, typ, shape, size, len(data))
	}
	return w.AddTensor(name, typ, shape, func(out io.Writer) error {
		_, err := out.Write(data)
		return err
	})
}

// WriteTo writes the file to out: header, padding, then each tensor's bytes
// from its callback, each padded to the alignment. It fails, naming the
// tensor, when a callback fails or writes other than the tensor's size.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	if w.Version != 2 && w.Version != 3 {
		return 0, fmt.Errorf("gguf: cannot write version %d; versions 2 and 3 are supported", w.Version)
	}
	align, err := alignmentOf(w.lookup(AlignmentKey))
	if err != nil {
		return 0, fmt.Errorf("gguf: %w", err)
	}
	for i, kv := range w.kvs {
		if kv.Key == "" {
			return 0, fmt.Errorf("gguf: metadata pair %d has an empty key", i)
		}
	}
	var offset uint64
	infos := make([]TensorInfo, len(w.tensors))
	for i, t := range w.tensors {
		infos[i] = t.info
		infos[i].Offset = offset
		var ok bool
		if offset, ok = add(offset, padded(t.info.Size, align)); !ok {
			return 0, errors.New("gguf: the tensors add up to more than 2^64 bytes")
		}
	}

	cw := &countingWriter{w: out}
	bw := bufio.NewWriterSize(cw, 1<<20)
	e := encoder{w: bw}
	e.bytes([]byte(Magic))
	e.u32(w.Version)
	e.u64(uint64(len(infos)))
	e.u64(uint64(len(w.kvs)))
	for _, kv := range w.kvs {
		e.str(kv.Key)
		e.u32(uint32(kv.Value.typ))
		e.value(kv.Value)
	}
	for _, t := range infos {
		e.str(t.Name)
		e.u32(uint32(len(t.Shape)))
		for _, d := range t.Shape {
			e.u64(d)
		}
		e.u32(uint32(t.Type))
		e.u64(t.Offset)
	}
	if e.err != nil {
		return cw.n, fmt.Errorf("gguf: writing the header: %w", e.err)
	}
	header := cw.n + int64(bw.Buffered())
	e.zeros(padded(uint64(header), align) - uint64(header))

	for _, t := range w.tensors {
		if e.err != nil {
			break
		}
		tw := &tensorWriter{w: bw, left: t.info.Size}
		if err := t.write(tw); err != nil {
			return cw.n, fmt.Errorf("gguf: writing tensor %q: %w", t.info.Name, err)
		}
		if tw.err != nil {
			return cw.n, fmt.Errorf("gguf: writing tensor %q: %w", t.info.Name, tw.err)
		}
		if tw.left != 0 {
			return cw.n, fmt.Errorf("gguf: writing tensor %q: its callback wrote %d bytes, want %d",
				t.info.Name, t.info.Size-tw.left, t.info.Size)
		}
		e.zeros(padded(t.info.Size, align) - t.info.Size)
	}
	if e.err == nil {
		e.err = bw.Flush()
	}
	if e.err != nil {
		return cw.n, fmt.Errorf("gguf: %w", e.err)
	}
	return cw.n, nil
}

// WriteFile writes the file to path by way of path+".tmp", synced and then
// renamed, so that path never names a half-written file. On failure the
// temporary file is removed and path is left as it was.
func (w *Writer) WriteFile(path string) (err error) {
	tmp := path + ".tmp"
	fh, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	defer func() {
		if err != nil { // err says what failed; these only clean up after it
			_ = fh.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err = w.WriteTo(fh); err != nil {
		return fmt.Errorf("%w (writing %s)", err, path)
	}
	if err = fh.Sync(); err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	if err = fh.Close(); err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	// Sync the directory so that the rename itself survives a crash; not
	// every platform can, so a failure here is not reported.
	if dir, derr := os.Open(filepath.Dir(path)); derr == nil {
		_ = dir.Sync()
		_ = dir.Close()
	}
	return nil
}

func (w *Writer) lookup(key string) (Value, bool) {
	i, ok := w.keys[key]
	if !ok {
		return Value{}, false
	}
	return w.kvs[i].Value, true
}

// padded rounds n up to a multiple of align (a power of two). Sizes here
// are below 2^63, so it cannot overflow.
func padded(n, align uint64) uint64 { return (n + align - 1) &^ (align - 1) }

// encoder writes little-endian fields, keeping the first error.
type encoder struct {
	w   io.Writer
	err error
	buf [8]byte
}

func (e *encoder) bytes(p []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(p)
	}
}

func (e *encoder) u8(v uint8) { e.buf[0] = v; e.bytes(e.buf[:1]) }

func (e *encoder) u16(v uint16) {
	binary.LittleEndian.PutUint16(e.buf[:], v)
	e.bytes(e.buf[:2])
}

func (e *encoder) u32(v uint32) {
	binary.LittleEndian.PutUint32(e.buf[:], v)
	e.bytes(e.buf[:4])
}

func (e *encoder) u64(v uint64) {
	binary.LittleEndian.PutUint64(e.buf[:], v)
	e.bytes(e.buf[:8])
}

func (e *encoder) str(s string) {
	e.u64(uint64(len(s)))
	if e.err == nil {
		_, e.err = io.WriteString(e.w, s)
	}
}

var zeroPad [256]byte

func (e *encoder) zeros(n uint64) {
	for n > 0 && e.err == nil {
		k := min(n, uint64(len(zeroPad)))
		e.bytes(zeroPad[:k])
		n -= k
	}
}

// value writes v's payload (its type tag is written by the caller).
func (e *encoder) value(v Value) {
	switch v.typ {
	case TypeUint8, TypeInt8, TypeBool:
		e.u8(uint8(v.bits))
	case TypeUint16, TypeInt16:
		e.u16(uint16(v.bits))
	case TypeUint32, TypeInt32, TypeFloat32:
		e.u32(uint32(v.bits))
	case TypeUint64, TypeInt64, TypeFloat64:
		e.u64(v.bits)
	case TypeString:
		e.str(v.str)
	case TypeArray:
		e.u32(uint32(v.elem))
		e.u64(uint64(v.Len()))
		switch a := v.arr.(type) {
		case []uint8:
			e.bytes(a)
		case []int8:
			each(a, func(x int8) { e.u8(uint8(x)) })
		case []bool:
			each(a, func(x bool) { e.value(boolValue(x)) })
		case []uint16:
			each(a, e.u16)
		case []int16:
			each(a, func(x int16) { e.u16(uint16(x)) })
		case []uint32:
			each(a, e.u32)
		case []int32:
			each(a, func(x int32) { e.u32(uint32(x)) })
		case []float32:
			each(a, func(x float32) { e.u32(math.Float32bits(x)) })
		case []uint64:
			each(a, e.u64)
		case []int64:
			each(a, func(x int64) { e.u64(uint64(x)) })
		case []float64:
			each(a, func(x float64) { e.u64(math.Float64bits(x)) })
		case []string:
			each(a, e.str)
		case []Value:
			// Items are bare values (the outer array gave their type);
			// each inner array starts with its own element type and count.
			each(a, e.value)
		}
	}
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// tensorWriter is what a tensor callback writes to: it refuses bytes past
// the tensor's size, so a faulty callback cannot shift every later tensor.
type tensorWriter struct {
	w    io.Writer
	left uint64
	err  error
}

func (t *tensorWriter) Write(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	if uint64(len(p)) > t.left {
		t.err = fmt.Errorf("its callback wrote more than the tensor's size (%d bytes too many)", uint64(len(p))-t.left)
		return 0, t.err
	}
	n, err := t.w.Write(p)
	t.left -= uint64(n)
	if err != nil {
		t.err = err
	}
	return n, err
}

func each[T any](s []T, f func(T)) {
	for _, x := range s {
		f(x)
	}
}
