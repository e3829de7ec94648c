package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"testing"

	"github.com/leo-operator/leo/runtime/quant"
)

func TestParseErrors(t *testing.T) {
	// oneKV is a file with a single key "k" of type typ and the given
	// payload.
	oneKV := func(typ ValueType, payload func(r *raw)) []byte {
		r := header(3, 0, 1).kv("k", typ)
		payload(r)
		return r.b
	}
	// oneTensor is a file with a single tensor and room for its data.
	oneTensor := func(name string, shape []uint64, typ quant.Type, offset uint64, data int) []byte {
		return header(3, 1, 0).tensor(name, shape, typ, offset).pad().data(data).b
	}
	alignment := func(typ ValueType, payload func(r *raw)) []byte {
		r := header(3, 1, 1).kv(AlignmentKey, typ)
		payload(r)
		return r.tensor("t", []uint64{1}, quant.F32, 0).pad().data(4).b
	}
	nested := func(depth int) []byte {
		r := header(3, 0, 1).kv("k", TypeArray)
		for range depth - 1 {
			r.u32(uint32(TypeArray)).u64(1)
		}
		return r.u32(uint32(TypeUint8)).u64(1).u8(1).b
	}
	bigEndian := append([]byte(Magic), 0, 0, 0, 3)
	bigEndian = binary.BigEndian.AppendUint64(bigEndian, 0)
	bigEndian = binary.BigEndian.AppendUint64(bigEndian, 0)

	cases := []struct {
		name string
		data []byte
		want []string
	}{
		{"empty", nil, []string{"0 bytes, too short"}},
		{"magic only", []byte("GGU"), []string{"3 bytes, too short"}},
		{"bad magic", []byte("GGJT\x03\x00\x00\x00"), []string{`starts with "GGJT", not "GGUF"`}},
		{"no version", []byte("GGUF\x03"), []string{"version needs 4 bytes at offset 4 but only 1 remain"}},
		{"version 1", header(1, 0, 0).b, []string{"GGUF version 1", "32-bit counts", "convert the model again"}},
		{"big-endian", bigEndian, []string{"big-endian", "byte-swapped 3", "little-endian"}},
		{"version 4", header(4, 0, 0).b, []string{"unsupported GGUF version 4"}},
		{"version 0", header(0, 0, 0).b, []string{"unsupported GGUF version 0"}},
		{"no tensor count", header(3, 0, 0).b[:12], []string{"tensor count needs 8 bytes"}},
		{"no metadata count", header(3, 0, 0).b[:20], []string{"metadata count needs 8 bytes"}},
		{"2^62 tensors", header(3, 1<<62, 0).b, []string{"claims 4611686018427387904 tensors", "0 bytes left"}},
		{"2^62 tensors, some bytes", header(3, 1<<62, 0).data(100).b, []string{"claims 4611686018427387904 tensors", "100 bytes left hold at most 4"}},
		{"2^64-1 pairs", header(3, 0, math.MaxUint64).data(100).b, []string{"claims 18446744073709551615 metadata key-value pairs"}},
		{"tensors left after metadata", header(3, 1, 1).kv("k", TypeString).str("0123456789abcdef").data(3).b,
			[]string{"claims 1 tensors", "3 bytes left after the metadata"}},
		{"key too long", header(3, 0, 1).u64(1 << 40).data(20).b, []string{"metadata pair 0: key at offset 24 claims 1099511627776 bytes but only 20 remain"}},
		{"empty key", header(3, 0, 1).kv("", TypeUint8).u8(0).data(4).b, []string{"metadata pair 0 at offset 24 has an empty key"}},
		{"duplicate key", header(3, 0, 2).kv("a.b", TypeUint8).u8(0).kv("a.b", TypeBool).u8(1).b, []string{`metadata key "a.b" appears twice`}},
		{"no value type", header(3, 0, 1).str("0123456789").b, []string{`metadata key "0123456789": value type needs 4 bytes`}},
		{"unknown value type", oneKV(13, func(r *raw) { r.u8(0) }), []string{`metadata key "k": unknown value type 13`}},
		{"truncated uint32", oneKV(TypeUint32, func(r *raw) { r.u8(0).u8(0) }), []string{`metadata key "k": UINT32 value needs 4 bytes`, "only 2 remain"}},
		{"truncated float64", oneKV(TypeFloat64, func(r *raw) { r.u32(0) }), []string{`metadata key "k": FLOAT64 value needs 8 bytes`}},
		{"bool 2", oneKV(TypeBool, func(r *raw) { r.u8(2) }), []string{`metadata key "k": BOOL at offset 37 is 2`}},
		{"string too long", oneKV(TypeString, func(r *raw) { r.u64(9).raw('a', 'b') }), []string{`metadata key "k": string at offset 37 claims 9 bytes but only 2 remain`}},
		{"array too long", oneKV(TypeArray, func(r *raw) { r.u32(uint32(TypeUint32)).u64(1 << 60).data(40) }),
			[]string{`metadata key "k": array at offset 37 claims 1152921504606846976 UINT32 items`, "only 40 bytes remain"}},
		{"array of strings too long", oneKV(TypeArray, func(r *raw) { r.u32(uint32(TypeString)).u64(6).data(40) }),
			[]string{`metadata key "k"`, "claims 6 STRING items, which need at least 8 bytes each"}},
		{"array item string truncated", oneKV(TypeArray, func(r *raw) { r.u32(uint32(TypeString)).u64(2).str("ok").u64(50).data(8) }),
			[]string{`metadata key "k": array item 1: string at offset`, "claims 50 bytes"}},
		{"array unknown element type", oneKV(TypeArray, func(r *raw) { r.u32(99).u64(1).u8(0) }),
			[]string{`metadata key "k": array at offset 37 has unknown element type 99`}},
		{"array no element type", oneKV(TypeArray, func(r *raw) { r.u8(0) }), []string{`metadata key "k": array element type needs 4 bytes`}},
		{"array no length", oneKV(TypeArray, func(r *raw) { r.u32(uint32(TypeUint8)) }), []string{`metadata key "k": array length needs 8 bytes`}},
		{"bool array item 2", oneKV(TypeArray, func(r *raw) { r.u32(uint32(TypeBool)).u64(3).raw(1, 0, 5) }),
			[]string{`metadata key "k": BOOL array item 2 at offset 51 is 5`}},
		{"nested array broken", oneKV(TypeArray, func(r *raw) { r.u32(uint32(TypeArray)).u64(2).u32(uint32(TypeUint8)).u64(0).u32(77).u64(0) }),
			[]string{`metadata key "k": array item 1: array at offset`, "unknown element type 77"}},
		{"arrays too deep", nested(MaxArrayDepth + 1), []string{`metadata key "k"`, fmt.Sprintf("arrays nest more than %d deep", MaxArrayDepth)}},
		{"alignment 0", alignment(TypeUint32, func(r *raw) { r.u32(0) }), []string{`"general.alignment" is 0`, "nonzero power of two"}},
		{"alignment 48", alignment(TypeUint64, func(r *raw) { r.u64(48) }), []string{`"general.alignment" is 48`, "power of two"}},
		{"alignment 2^63+2^62", alignment(TypeUint64, func(r *raw) { r.u64(3 << 62) }), []string{`"general.alignment" is 13835058055282163712`}},
		{"alignment negative", alignment(TypeInt16, func(r *raw) { r.raw(0xe0, 0xff) }), []string{`"general.alignment": is -32, want a non-negative integer`}},
		{"alignment float", alignment(TypeFloat32, func(r *raw) { r.u32(math.Float32bits(32)) }), []string{`"general.alignment": is FLOAT32, want an integer`}},
		{"alignment array", alignment(TypeArray, func(r *raw) { r.u32(uint32(TypeUint32)).u64(1).u32(32) }), []string{`"general.alignment": is ARRAY of UINT32`}},
		{"empty tensor name", header(3, 1, 0).tensor("", []uint64{1}, quant.F32, 0).pad().data(4).b, []string{"tensor 0 at offset 24 has an empty name"}},
		{"tensor name too long", header(3, 1, 0).u64(1 << 50).data(30).b, []string{"tensor 0: name at offset 24 claims 1125899906842624 bytes"}},
		{"five dims", oneTensor("t", []uint64{1, 1, 1, 1, 1}, quant.F32, 0, 4), []string{`tensor "t": 5 dimensions; GGML tensors have at most 4`}},
		{"unknown tensor type", oneTensor("blk.0.attn_q.weight", []uint64{32}, quant.Type(4), 0, 32), []string{`tensor "blk.0.attn_q.weight": unknown type id 4`}},
		{"huge tensor type", oneTensor("t", []uint64{32}, quant.Type(1<<31), 0, 32), []string{`tensor "t": unknown type id 2147483648`}},
		{"partial block", oneTensor("t", []uint64{33, 2}, quant.Q4_0, 0, 64), []string{`tensor "t": shape [33 2]: row length 33`, "blocks of 32"}},
		{"too many elements", oneTensor("t", []uint64{1 << 32, 1 << 32}, quant.F32, 0, 4), []string{`tensor "t": shape [4294967296 4294967296] has more than 2^63 elements`}},
		{"too many elements, 4 dims", oneTensor("t", []uint64{1 << 16, 1 << 16, 1 << 16, 1 << 16}, quant.F32, 0, 4), []string{`tensor "t"`, "more than 2^63 elements"}},
		{"too many bytes", oneTensor("t", []uint64{1 << 31, 1 << 31}, quant.F32, 0, 4), []string{`tensor "t": shape [2147483648 2147483648] of F32 is more than 2^63 bytes`}},
		{"row too long", oneTensor("t", []uint64{1 << 62}, quant.F32, 0, 4), []string{`tensor "t": shape [4611686018427387904]: rows of 4611686018427387904 elements are too long`}},
		{"misaligned offset", oneTensor("t", []uint64{1}, quant.F32, 4, 8), []string{`tensor "t": offset 4 is not a multiple of the alignment 32`}},
		{"past the end", oneTensor("t", []uint64{4}, quant.F32, 0, 15), []string{`tensor "t": its 16 bytes at data offset 0 extend past the end of the file (79 bytes, data from offset 64)`}},
		{"offset past the end", oneTensor("t", []uint64{1}, quant.F32, 32, 4), []string{`tensor "t": its 4 bytes at data offset 32`, "past the end"}},
		{"offset overflows", oneTensor("t", []uint64{1}, quant.F32, math.MaxUint64-31, 4), []string{`tensor "t"`, "data offset 18446744073709551584", "past the end"}},
		{"duplicate tensor", header(3, 2, 0).tensor("t", []uint64{1}, quant.F32, 0).tensor("t", []uint64{1}, quant.F32, 32).pad().data(64).b,
			[]string{`tensor "t" appears twice`}},
		{"truncated dims", header(3, 1, 0).str("t").u32(2).u64(1).data(7).b, []string{`tensor "t": dimension needs 8 bytes`}},
		{"truncated type", header(3, 1, 0).str("tensor-name").u32(1).u64(1).raw(0, 0).b, []string{`tensor "tensor-name": type needs 4 bytes`}},
		{"truncated offset", header(3, 1, 0).str("tensor-name").u32(0).u32(0).raw(1, 2, 3).b, []string{`tensor "tensor-name": offset needs 8 bytes`}},
		{"no dimension count", header(3, 1, 0).str("0123456789abcdef").raw(1, 2).b, []string{`tensor "0123456789abcdef": dimension count needs 4 bytes`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Parse(c.data)
			if f != nil {
				t.Errorf("Parse returned a file along with the error")
			}
			wantError(t, err, append([]string{"gguf: "}, c.want...)...)
		})
	}
}

// TestHugeCountsFailFast checks that a header claiming 2^62 tensors (or
// pairs) is refused before anything is allocated for them.
func TestHugeCountsFailFast(t *testing.T) {
	for _, data := range [][]byte{header(3, 1<<62, 0).b, header(3, 0, 1<<62).b, header(3, 1<<62, 1<<62).data(1 << 10).b} {
		allocs := testing.AllocsPerRun(20, func() {
			if _, err := Parse(data); err == nil {
				t.Fatal("no error")
			}
		})
		// Only the error message is allocated.
		if allocs > 10 {
			t.Errorf("refusing a huge count made %v allocations", allocs)
		}
	}
	if _, err := Parse([]byte("GGUF")); err == nil {
		t.Error("a 4-byte file parsed")
	}
}

// TestParseAcceptsEdgeCases covers files that are odd but valid.
func TestParseAcceptsEdgeCases(t *testing.T) {
	cases := []struct {
		name  string
		data  []byte
		check func(t *testing.T, f *File)
	}{
		{"header only", header(2, 0, 0).b, func(t *testing.T, f *File) {
			if f.Version != 2 || f.DataOffset != 32 || len(f.KVs) != 0 || len(f.Tensors) != 0 {
				t.Errorf("got %+v", f)
			}
		}},
		{"scalar tensor", header(3, 1, 0).tensor("s", nil, quant.F32, 0).pad().data(4).b, func(t *testing.T, f *File) {
			if s, _ := f.Tensor("s"); s.Size != 4 || s.Elements() != 1 || len(s.Shape) != 0 {
				t.Errorf("scalar tensor %+v", s)
			}
		}},
		{"zero-sized tensor at the end", header(3, 1, 0).tensor("z", []uint64{0, 8}, quant.Q4K, 0).pad().b, func(t *testing.T, f *File) {
			if z, _ := f.Tensor("z"); z.Size != 0 || len(f.TensorData(z)) != 0 {
				t.Errorf("zero tensor %+v", z)
			}
		}},
		{"alignment 1, packed", header(3, 2, 1).kv(AlignmentKey, TypeUint8).u8(1).
			tensor("a", []uint64{3}, quant.F16, 0).tensor("b", []uint64{1}, quant.F32, 6).raw(1, 2, 3, 4, 5, 6, 7, 8, 9, 10).b,
			func(t *testing.T, f *File) {
				b, _ := f.Tensor("b")
				if f.Alignment != 1 || string(f.TensorData(b)) != "\x07\x08\x09\x0a" {
					t.Errorf("alignment %d, b = %x", f.Alignment, f.TensorData(b))
				}
			}},
		{"overlapping tensors", header(3, 2, 0).tensor("a", []uint64{8}, quant.F32, 0).tensor("b", []uint64{8}, quant.F32, 0).pad().data(32).b,
			func(t *testing.T, f *File) {
				if len(f.Tensors) != 2 {
					t.Errorf("%d tensors", len(f.Tensors))
				}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Parse(c.data)
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, f)
		})
	}
}

func TestTensorDataRefusesForeignInfo(t *testing.T) {
	f, err := Parse(encode(t, sampleWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range []TensorInfo{
		{Name: "x", Offset: 1 << 40, Size: 4},
		{Name: "x", Offset: math.MaxUint64, Size: 4},
		{Name: "x", Offset: 0, Size: math.MaxUint64},
	} {
		if d := f.TensorData(ti); d != nil {
			t.Errorf("TensorData(%+v) = %d bytes, want nil", ti, len(d))
		}
	}
}
