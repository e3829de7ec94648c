package gguf

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/leo-operator/leo/runtime/quant"
)

// raw builds GGUF bytes field by field, straight from the specification,
// so that tests can make files the Writer would refuse to make.
type raw struct{ b []byte }

func header(version uint32, nTensors, nKVs uint64) *raw {
	r := &raw{b: []byte(Magic)}
	return r.u32(version).u64(nTensors).u64(nKVs)
}

func (r *raw) u8(v uint8) *raw { r.b = append(r.b, v); return r }

func (r *raw) u32(v uint32) *raw { r.b = binary.LittleEndian.AppendUint32(r.b, v); return r }

func (r *raw) u64(v uint64) *raw { r.b = binary.LittleEndian.AppendUint64(r.b, v); return r }

func (r *raw) str(s string) *raw { r.u64(uint64(len(s))); r.b = append(r.b, s...); return r }

// kv writes a key and a type; the caller writes the payload.
func (r *raw) kv(key string, t ValueType) *raw { return r.str(key).u32(uint32(t)) }

func (r *raw) tensor(name string, shape []uint64, t quant.Type, offset uint64) *raw {
	r.str(name).u32(uint32(len(shape)))
	for _, d := range shape {
		r.u64(d)
	}
	return r.u32(uint32(t)).u64(offset)
}

// pad appends zeros up to a multiple of DefaultAlignment.
func (r *raw) pad() *raw {
	for len(r.b)%DefaultAlignment != 0 {
		r.b = append(r.b, 0)
	}
	return r
}

func (r *raw) data(n int) *raw { r.b = append(r.b, make([]byte, n)...); return r }

func (r *raw) raw(p ...byte) *raw { r.b = append(r.b, p...); return r }

// mustValue is ValueOf for values known to be valid.
func mustValue(t testing.TB, x any) Value {
	t.Helper()
	v, err := ValueOf(x)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	return p
}

// sampleTensor is a tensor the sample files carry.
type sampleTensor struct {
	name  string
	typ   quant.Type
	shape []uint64
	data  []byte
}

// sampleTensors returns tensors of several types, with sizes that are not
// multiples of 32 so that padding between them matters.
func sampleTensors(t testing.TB) []sampleTensor {
	t.Helper()
	specs := []struct {
		name  string
		typ   quant.Type
		shape []uint64
	}{
		{"token_embd.weight", quant.F32, []uint64{8, 3}},
		{"blk.0.attn_norm.weight", quant.F16, []uint64{3}},
		{"blk.0.attn_q.weight", quant.Q4_0, []uint64{64, 2}},
		{"blk.0.ffn_up.weight", quant.Q8_0, []uint64{32, 1, 1}},
		{"blk.0.ffn_down.weight", quant.Q4K, []uint64{256, 1}},
		{"blk.0.ffn_gate.weight", quant.Q6K, []uint64{256, 2, 1, 1}},
		{"output_norm.weight", quant.BF16, []uint64{5}},
		{"empty", quant.F32, []uint64{0, 4}},
	}
	out := make([]sampleTensor, len(specs))
	for i, s := range specs {
		n, err := tensorBytes(s.typ, s.shape)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = sampleTensor{s.name, s.typ, s.shape, randomBytes(uint64(i), int(n))}
	}
	return out
}

// sampleWriter returns a Writer holding metadata of many types and the
// sample tensors.
func sampleWriter(t testing.TB) *Writer {
	t.Helper()
	w := NewWriter()
	w.SetString("general.architecture", "llama")
	w.SetUint32("llama.context_length", 4096)
	w.SetInt32("test.int32", -7)
	w.SetFloat32("llama.attention.layer_norm_rms_epsilon", 1e-5)
	w.SetBool("tokenizer.ggml.add_bos_token", true)
	w.SetUint64("test.uint64", 1<<40)
	w.SetStrings("tokenizer.ggml.tokens", []string{"<unk>", "<s>", "</s>", "▁the"})
	w.SetFloat32s("tokenizer.ggml.scores", []float32{0, 0, 0, -1.5})
	w.SetInt32s("tokenizer.ggml.token_type", []int32{2, 3, 3, 1})
	w.Set("test.nested", mustValue(t, []Value{mustValue(t, []uint8{1, 2}), mustValue(t, []string{"a"})}))
	for _, s := range sampleTensors(t) {
		if err := w.AddTensorBytes(s.name, s.typ, s.shape, s.data); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// encode writes w to memory.
func encode(t testing.TB, w *Writer) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := w.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo reported %d bytes, wrote %d", n, buf.Len())
	}
	return buf.Bytes()
}

// rewrite writes a parsed file again with the Writer: same version,
// metadata (general.alignment included) and tensors.
func rewrite(f *File) ([]byte, error) {
	w := NewWriter()
	w.Version = f.Version
	for _, kv := range f.KVs {
		w.Set(kv.Key, kv.Value)
	}
	for _, t := range f.Tensors {
		if err := w.AddTensorBytes(t.Name, t.Type, t.Shape, f.TensorData(t)); err != nil {
			return nil, err
		}
	}
	var buf bytes.Buffer
	_, err := w.WriteTo(&buf)
	return buf.Bytes(), err
}
