package gguf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/leo-operator/leo/runtime/quant"
)

// everyValue holds one value of every type, edge values included, and
// nested arrays.
func everyValue(t testing.TB) []KV {
	nested := mustValue(t, []Value{mustValue(t, []int32{1, -2}), mustValue(t, []string{"x", ""}), mustValue(t, []bool{})})
	deep := mustValue(t, []float64{math.Inf(-1)})
	for range MaxArrayDepth - 1 {
		deep = mustValue(t, []Value{deep})
	}
	items := []struct {
		key string
		x   any
	}{
		{"uint8", uint8(255)},
		{"int8", int8(-128)},
		{"uint16", uint16(65535)},
		{"int16", int16(-32768)},
		{"uint32", uint32(math.MaxUint32)},
		{"int32", int32(math.MinInt32)},
		{"float32", float32(-0.15625)},
		{"float32.neg_zero", float32(math.Copysign(0, -1))},
		{"bool.true", true},
		{"bool.false", false},
		{"string", "naïve\x00▁tokens\n"},
		{"string.empty", ""},
		{"uint64", uint64(math.MaxUint64)},
		{"int64", int64(math.MinInt64)},
		{"float64", math.SmallestNonzeroFloat64},
		{"array.uint8", []uint8{0, 7, 255}},
		{"array.int8", []int8{-128, 0, 127}},
		{"array.uint16", []uint16{1, 65535}},
		{"array.int16", []int16{-32768, 32767}},
		{"array.uint32", []uint32{0, math.MaxUint32}},
		{"array.int32", []int32{math.MinInt32, math.MaxInt32}},
		{"array.float32", []float32{1.5, float32(math.Inf(1)), -3e38}},
		{"array.bool", []bool{true, false, true}},
		{"array.string", []string{"<unk>", "", "▁Once"}},
		{"array.uint64", []uint64{math.MaxUint64}},
		{"array.int64", []int64{math.MinInt64, -1}},
		{"array.float64", []float64{math.MaxFloat64, -0.5}},
		{"array.empty", []float32{}},
		{"array.nested", nested},
		{"array.nested.empty", []Value{}},
		{"array.nested.deepest", deep},
	}
	kvs := make([]KV, len(items))
	for i, it := range items {
		v, ok := it.x.(Value)
		if !ok {
			v = mustValue(t, it.x)
		}
		kvs[i] = KV{it.key, v}
	}
	return kvs
}

func TestRoundTrip(t *testing.T) {
	alignments := []struct {
		name string
		set  func(*Writer)
		want uint64
	}{
		{"default", func(*Writer) {}, 32},
		{"uint32 64", func(w *Writer) { w.SetUint32(AlignmentKey, 64) }, 64},
		{"uint8 1", func(w *Writer) { w.Set(AlignmentKey, mustValue(t, uint8(1))) }, 1},
		{"int32 8", func(w *Writer) { w.SetInt32(AlignmentKey, 8) }, 8},
		{"uint64 4096", func(w *Writer) { w.SetUint64(AlignmentKey, 4096) }, 4096},
	}
	dir := t.TempDir()
	for _, version := range []uint32{2, 3} {
		for _, al := range alignments {
			t.Run(fmt.Sprintf("v%d/%s", version, al.name), func(t *testing.T) {
				w := NewWriter()
				w.Version = version
				kvs := everyValue(t)
				for _, kv := range kvs {
					w.Set(kv.Key, kv.Value)
				}
				al.set(w)
				if v, ok := w.lookup(AlignmentKey); ok {
					kvs = append(kvs, KV{AlignmentKey, v})
				}
				tensors := sampleTensors(t)
				for _, s := range tensors {
					if err := w.AddTensorBytes(s.name, s.typ, s.shape, s.data); err != nil {
						t.Fatal(err)
					}
				}
				data := encode(t, w)
				path := filepath.Join(dir, fmt.Sprintf("v%d-%d.gguf", version, al.want))
				if err := w.WriteFile(path); err != nil {
					t.Fatal(err)
				}
				onDisk, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(onDisk, data) {
					t.Fatal("WriteFile and WriteTo wrote different bytes")
				}

				parsed, err := Parse(data)
				if err != nil {
					t.Fatal(err)
				}
				opened, err := Open(path)
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = opened.Close() }()
				for name, f := range map[string]*File{"Parse": parsed, "Open": opened} {
					checkFile(t, name, f, version, al.want, kvs, tensors)
				}
			})
		}
	}
}

// checkFile checks f against what was written.
func checkFile(t *testing.T, how string, f *File, version uint32, align uint64, kvs []KV, tensors []sampleTensor) {
	t.Helper()
	if f.Version != version || f.Alignment != align {
		t.Errorf("%s: version %d alignment %d, want %d and %d", how, f.Version, f.Alignment, version, align)
	}
	if f.DataOffset%align != 0 {
		t.Errorf("%s: data offset %d is not aligned to %d", how, f.DataOffset, align)
	}
	if !reflect.DeepEqual(f.KVs, kvs) {
		t.Errorf("%s: metadata differs\n got %v\nwant %v", how, f.KVs, kvs)
	}
	if len(f.Tensors) != len(tensors) {
		t.Fatalf("%s: %d tensors, want %d", how, len(f.Tensors), len(tensors))
	}
	for i, s := range tensors {
		got, ok := f.Tensor(s.name)
		if !ok || !reflect.DeepEqual(got, f.Tensors[i]) {
			t.Errorf("%s: Tensor(%q) = %v, %v; want the %d-th tensor", how, s.name, got, ok, i)
		}
		if got.Name != s.name || got.Type != s.typ || !slices.Equal(got.Shape, s.shape) || got.Size != uint64(len(s.data)) {
			t.Errorf("%s: tensor %d is %+v, want %s %s %v of %d bytes", how, i, got, s.name, s.typ, s.shape, len(s.data))
		}
		if got.Offset%align != 0 {
			t.Errorf("%s: tensor %q at offset %d, not aligned to %d", how, s.name, got.Offset, align)
		}
		if !bytes.Equal(f.TensorData(got), s.data) {
			t.Errorf("%s: tensor %q data differs", how, s.name)
		}
	}
	if _, ok := f.Tensor("missing"); ok {
		t.Errorf("%s: Tensor(missing) found something", how)
	}
}

// TestNaNBitsSurvive checks that float NaN payloads, which reflect.DeepEqual
// cannot compare, are kept bit for bit.
func TestNaNBitsSurvive(t *testing.T) {
	nan32 := math.Float32frombits(0x7fc0_1234)
	nan64 := math.Float64frombits(0x7ff8_0000_0000_beef)
	w := NewWriter()
	w.SetFloat32("f32", nan32)
	w.Set("f64", mustValue(t, nan64))
	w.SetFloat32s("f32s", []float32{nan32})
	f, err := Parse(encode(t, w))
	if err != nil {
		t.Fatal(err)
	}
	v, _ := f.Lookup("f32")
	v64, _ := f.Lookup("f64")
	s, err := f.Float32s("f32s")
	if err != nil {
		t.Fatal(err)
	}
	if math.Float32bits(v.Interface().(float32)) != 0x7fc0_1234 || math.Float64bits(v64.Interface().(float64)) != 0x7ff8_0000_0000_beef ||
		math.Float32bits(s[0]) != 0x7fc0_1234 {
		t.Errorf("NaN payloads changed: %#x %#x %#x", math.Float32bits(v.Interface().(float32)), math.Float64bits(v64.Interface().(float64)), math.Float32bits(s[0]))
	}
}

// TestWriterMatchesSpecification compares the Writer's bytes with a file
// laid out by hand from the specification, and reads the hand-made file.
func TestWriterMatchesSpecification(t *testing.T) {
	w := NewWriter()
	w.SetString("general.architecture", "llama")
	w.SetInt32s("x", []int32{-1, 2})
	w.Set("nested", mustValue(t, []Value{mustValue(t, []uint16{7})}))
	tensor := randomBytes(9, 2*3*4)
	if err := w.AddTensorBytes("t", quant.F32, []uint64{2, 3}, tensor); err != nil {
		t.Fatal(err)
	}
	if err := w.AddTensorBytes("u", quant.F16, []uint64{1}, []byte{0x00, 0x3c}); err != nil {
		t.Fatal(err)
	}

	r := header(3, 2, 3)
	r.kv("general.architecture", TypeString).str("llama")
	r.kv("x", TypeArray).u32(uint32(TypeInt32)).u64(2).u32(math.MaxUint32).u32(2)
	r.kv("nested", TypeArray).u32(uint32(TypeArray)).u64(1).u32(uint32(TypeUint16)).u64(1).raw(7, 0)
	r.tensor("t", []uint64{2, 3}, quant.F32, 0)
	r.tensor("u", []uint64{1}, quant.F16, 32) // 24 bytes, padded to 32
	dataOffset := len(r.pad().b)
	r.raw(tensor...).pad().raw(0x00, 0x3c).pad()

	if got := encode(t, w); !bytes.Equal(got, r.b) {
		t.Fatalf("Writer bytes differ from the specification's layout\n got %x\nwant %x", got, r.b)
	}
	f, err := Parse(r.b)
	if err != nil {
		t.Fatal(err)
	}
	if f.DataOffset != uint64(dataOffset) {
		t.Errorf("DataOffset = %d, want %d", f.DataOffset, dataOffset)
	}
	u, _ := f.Tensor("u")
	if u.Offset != 32 || !bytes.Equal(f.TensorData(u), []byte{0, 0x3c}) {
		t.Errorf("tensor u = %+v with data %x", u, f.TensorData(u))
	}
	x, err := f.Int32s("x")
	if err != nil || !slices.Equal(x, []int32{-1, 2}) {
		t.Errorf("x = %v, %v", x, err)
	}
}

func TestSetReplacesInPlace(t *testing.T) {
	w := NewWriter()
	w.SetString("a", "1")
	w.SetString("b", "2")
	w.SetUint32("a", 3)
	f, err := Parse(encode(t, w))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.KVs) != 2 || f.KVs[0].Key != "a" || f.KVs[0].Value.Interface() != uint32(3) || f.KVs[1].Key != "b" {
		t.Errorf("KVs = %v, want a=3 then b", f.KVs)
	}
}

func TestSettersCopyTheirSlices(t *testing.T) {
	w := NewWriter()
	s := []string{"a"}
	w.SetStrings("s", s)
	s[0] = "changed"
	f, err := Parse(encode(t, w))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := f.Strings("s"); got[0] != "a" {
		t.Errorf("Strings(s) = %v; the Writer kept the caller's slice", got)
	}
}

func TestGetters(t *testing.T) {
	w := NewWriter()
	for _, kv := range everyValue(t) {
		w.Set(kv.Key, kv.Value)
	}
	w.Set("array.int64.small", mustValue(t, []int64{-5, 1<<31 - 1}))
	w.Set("array.uint64.big", mustValue(t, []uint64{1, 1 << 31}))
	w.Set("array.int64.low", mustValue(t, []int64{0, 0, -1<<31 - 1}))
	f, err := Parse(encode(t, w))
	if err != nil {
		t.Fatal(err)
	}
	uints := map[string]uint64{"uint8": 255, "uint16": 65535, "uint32": math.MaxUint32, "uint64": math.MaxUint64}
	for key, want := range uints {
		if got, err := f.Uint(key); got != want || err != nil {
			t.Errorf("Uint(%s) = %d, %v; want %d", key, got, err, want)
		}
	}
	w2 := NewWriter()
	w2.Set("i8", mustValue(t, int8(5)))
	w2.Set("i16", mustValue(t, int16(300)))
	w2.SetInt32("i32", 70000)
	w2.Set("i64", mustValue(t, int64(1<<40)))
	f2, err := Parse(encode(t, w2))
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]uint64{"i8": 5, "i16": 300, "i32": 70000, "i64": 1 << 40} {
		if got, err := f2.Uint(key); got != want || err != nil {
			t.Errorf("Uint(%s) = %d, %v; want %d", key, got, err, want)
		}
	}
	if got, err := f.Float("float32"); got != -0.15625 || err != nil {
		t.Errorf("Float(float32) = %v, %v", got, err)
	}
	if got, err := f.Float("float64"); got != math.SmallestNonzeroFloat64 || err != nil {
		t.Errorf("Float(float64) = %v, %v", got, err)
	}
	if got, err := f.String("string"); got != "naïve\x00▁tokens\n" || err != nil {
		t.Errorf("String = %q, %v", got, err)
	}
	if got, err := f.Bool("bool.true"); !got || err != nil {
		t.Errorf("Bool = %v, %v", got, err)
	}
	if got, err := f.Strings("array.string"); !slices.Equal(got, []string{"<unk>", "", "▁Once"}) || err != nil {
		t.Errorf("Strings = %q, %v", got, err)
	}
	if got, err := f.Float32s("array.float32"); len(got) != 3 || got[0] != 1.5 || err != nil {
		t.Errorf("Float32s = %v, %v", got, err)
	}
	int32s := map[string][]int32{
		"array.int32":       {math.MinInt32, math.MaxInt32},
		"array.uint8":       {0, 7, 255},
		"array.int8":        {-128, 0, 127},
		"array.uint16":      {1, 65535},
		"array.int16":       {-32768, 32767},
		"array.int64.small": {-5, 1<<31 - 1},
	}
	for key, want := range int32s {
		if got, err := f.Int32s(key); !slices.Equal(got, want) || err != nil {
			t.Errorf("Int32s(%s) = %v, %v; want %v", key, got, err, want)
		}
	}

	errs := []struct {
		name string
		call func() error
		want []string
	}{
		{"missing", func() error { _, err := f.Uint("nope"); return err }, []string{`"nope" not found`}},
		{"negative", func() error { _, err := f.Uint("int8"); return err }, []string{`"int8"`, "-128", "non-negative"}},
		{"uint of float", func() error { _, err := f.Uint("float32"); return err }, []string{`"float32"`, "is FLOAT32", "want an integer"}},
		{"float of int", func() error { _, err := f.Float("uint32"); return err }, []string{`"uint32"`, "is UINT32"}},
		{"string of array", func() error { _, err := f.String("array.string"); return err }, []string{`"array.string"`, "is ARRAY of STRING", "want a STRING"}},
		{"bool of uint8", func() error { _, err := f.Bool("uint8"); return err }, []string{`"uint8"`, "is UINT8", "want a BOOL"}},
		{"strings of int32s", func() error { _, err := f.Strings("array.int32"); return err }, []string{`"array.int32"`, "is ARRAY of INT32"}},
		{"float32s of float64s", func() error { _, err := f.Float32s("array.float64"); return err }, []string{"is ARRAY of FLOAT64", "want an ARRAY of FLOAT32"}},
		{"int32s of floats", func() error { _, err := f.Int32s("array.float32"); return err }, []string{"is ARRAY of FLOAT32", "want an ARRAY of integers"}},
		{"int32s of scalar", func() error { _, err := f.Int32s("int32"); return err }, []string{`"int32"`, "is INT32"}},
		{"int32s too big", func() error { _, err := f.Int32s("array.uint64.big"); return err }, []string{`"array.uint64.big"`, "item 1 is 2147483648", "int32 range"}},
		{"int32s too small", func() error { _, err := f.Int32s("array.int64.low"); return err }, []string{"item 2 is -2147483649"}},
		{"int32s of uint32 max", func() error { _, err := f.Int32s("array.uint32"); return err }, []string{"item 1 is 4294967295"}},
		{"missing array", func() error { _, err := f.Float32s("nope"); return err }, []string{`"nope" not found`}},
	}
	for _, c := range errs {
		t.Run(c.name, func(t *testing.T) { wantError(t, c.call(), c.want...) })
	}
}

// wantError fails unless err is non-nil and mentions every want.
func wantError(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one mentioning %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

func TestValueString(t *testing.T) {
	cases := []struct {
		x    any
		want string
	}{
		{uint8(7), "7"},
		{int64(-3), "-3"},
		{float32(0.1), "0.1"},
		{1e-5, "1e-05"},
		{true, "true"},
		{"a\"b\n", `"a\"b\n"`},
		{[]string{"x", "y"}, `["x", "y"]`},
		{[]int32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, "[1, 2, 3, 4, 5, 6, 7, 8, … 2 more]"},
		{[]float32{}, "[]"},
		{[]bool{true}, "[true]"},
	}
	for _, c := range cases {
		if got := mustValue(t, c.x).String(); got != c.want {
			t.Errorf("String of %#v = %s, want %s", c.x, got, c.want)
		}
	}
	nested := mustValue(t, []Value{mustValue(t, []uint8{1}), mustValue(t, []string{"s"})})
	if got := nested.String(); got != `[[1], ["s"]]` {
		t.Errorf("nested String = %s", got)
	}
	if nested.Len() != 2 || nested.ElemType() != TypeArray || nested.Type() != TypeArray {
		t.Errorf("nested: Len %d ElemType %s Type %s", nested.Len(), nested.ElemType(), nested.Type())
	}
	if got := ValueType(13).String(); got != "type(13)" {
		t.Errorf("ValueType(13) = %s", got)
	}
}

func TestValueOfValuesOfScalars(t *testing.T) {
	v := mustValue(t, []Value{mustValue(t, int16(-2)), mustValue(t, int16(9))})
	if v.ElemType() != TypeInt16 || !reflect.DeepEqual(v.Interface(), []int16{-2, 9}) {
		t.Errorf("[]Value of INT16 = %s %#v", v.ElemType(), v.Interface())
	}
}

func TestValueOfErrors(t *testing.T) {
	deep := mustValue(t, []uint8{1})
	for range MaxArrayDepth - 1 {
		deep = mustValue(t, []Value{deep})
	}
	cases := []struct {
		name string
		x    any
		want []string
	}{
		{"int", 5, []string{"cannot store a int"}},
		{"map", map[string]int{}, []string{"map[string]int"}},
		{"mixed scalars", []Value{mustValue(t, uint8(1)), mustValue(t, "s")}, []string{"item 1 is STRING", "item 0 is UINT8"}},
		{"array then scalar", []Value{mustValue(t, []uint8{1}), mustValue(t, "s")}, []string{"item 1 is STRING", "item 0 is an ARRAY"}},
		{"too deep", []Value{deep}, []string{fmt.Sprintf("nest %d deep", MaxArrayDepth+1)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ValueOf(c.x)
			wantError(t, err, c.want...)
		})
	}
}

func TestDescribe(t *testing.T) {
	w := sampleWriter(t)
	vocab := make([]string, 1000)
	for i := range vocab {
		vocab[i] = fmt.Sprintf("tok%d", i)
	}
	w.SetStrings("tokenizer.ggml.tokens", vocab)
	w.SetString("tokenizer.chat_template", strings.Repeat("{% if x %}", 100))
	f, err := Parse(encode(t, w))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := f.Describe(&out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{
		"GGUF v3: 11 metadata keys, 8 tensors",
		"alignment 32",
		fmt.Sprintf("data at offset %d", f.DataOffset),
		`general.architecture`, `"llama"`,
		"STRING[1000]", `["tok0", "tok1",`, "… 992 more]",
		"(1002 bytes in all)",
		"llama.context_length", "UINT32", "4096",
		"blk.0.attn_q.weight", "Q4_0", "[64 2]",
		"blk.0.ffn_gate.weight", "Q6_K", "[256 2 1 1]",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("Describe output lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "tok999") || strings.Count(s, "{% if x %}") > 20 {
		t.Errorf("Describe did not abbreviate:\n%s", s)
	}
}

func TestWriterErrors(t *testing.T) {
	ok := func(io.Writer) error { return nil }
	cases := []struct {
		name string
		add  func(w *Writer) error
		want []string
	}{
		{"empty name", func(w *Writer) error { return w.AddTensor("", quant.F32, []uint64{1}, ok) }, []string{"name must not be empty"}},
		{"long name", func(w *Writer) error { return w.AddTensor(strings.Repeat("n", 64), quant.F32, []uint64{1}, ok) }, []string{"is 64 bytes", "at most 63"}},
		{"duplicate", func(w *Writer) error {
			if err := w.AddTensor("a", quant.F32, []uint64{1}, ok); err != nil {
				return err
			}
			return w.AddTensor("a", quant.F16, []uint64{1}, ok)
		}, []string{`tensor "a" is added twice`}},
		{"five dims", func(w *Writer) error { return w.AddTensor("a", quant.F32, []uint64{1, 1, 1, 1, 1}, ok) }, []string{`tensor "a" has 5 dimensions`}},
		{"nil write", func(w *Writer) error { return w.AddTensor("a", quant.F32, []uint64{1}, nil) }, []string{`tensor "a" has no write function`}},
		{"unknown type", func(w *Writer) error { return w.AddTensor("a", quant.Type(4), []uint64{1}, ok) }, []string{`tensor "a"`, "unknown type id 4"}},
		{"partial block", func(w *Writer) error { return w.AddTensor("a", quant.Q4_0, []uint64{48}, ok) }, []string{`tensor "a"`, "row length 48", "blocks of 32"}},
		{"overflow", func(w *Writer) error { return w.AddTensor("a", quant.F32, []uint64{1 << 31, 1 << 31}, ok) }, []string{`tensor "a"`, "more than 2^63 bytes"}},
		{"too many elements", func(w *Writer) error { return w.AddTensor("a", quant.F32, []uint64{1 << 32, 1 << 31}, ok) }, []string{`tensor "a"`, "more than 2^63 elements"}},
		{"bytes length", func(w *Writer) error { return w.AddTensorBytes("a", quant.F16, []uint64{3}, make([]byte, 5)) }, []string{`tensor "a"`, "takes 6 bytes but 5 were given"}},
		{"bytes unknown type", func(w *Writer) error { return w.AddTensorBytes("a", quant.Type(99), []uint64{3}, nil) }, []string{`tensor "a"`, "unknown type id 99"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { wantError(t, c.add(NewWriter()), c.want...) })
	}

	writeCases := []struct {
		name  string
		setup func(w *Writer)
		want  []string
	}{
		{"version 1", func(w *Writer) { w.Version = 1 }, []string{"cannot write version 1"}},
		{"alignment 48", func(w *Writer) { w.SetUint32(AlignmentKey, 48) }, []string{`"general.alignment" is 48`, "power of two"}},
		{"alignment 0", func(w *Writer) { w.SetUint64(AlignmentKey, 0) }, []string{`"general.alignment" is 0`}},
		{"alignment negative", func(w *Writer) { w.SetInt32(AlignmentKey, -32) }, []string{`"general.alignment"`, "is -32"}},
		{"alignment string", func(w *Writer) { w.SetString(AlignmentKey, "32") }, []string{`"general.alignment"`, "is STRING"}},
		{"empty key", func(w *Writer) { w.SetBool("", true) }, []string{"metadata pair 0 has an empty key"}},
		{"short callback", func(w *Writer) {
			_ = w.AddTensor("short", quant.F32, []uint64{4}, func(out io.Writer) error { _, err := out.Write(make([]byte, 15)); return err })
		}, []string{`tensor "short"`, "wrote 15 bytes, want 16"}},
		{"long callback", func(w *Writer) {
			_ = w.AddTensor("long", quant.F32, []uint64{4}, func(out io.Writer) error { _, err := out.Write(make([]byte, 17)); return err })
		}, []string{`tensor "long"`, "more than the tensor's size (1 bytes too many)"}},
		{"long callback ignoring the error", func(w *Writer) {
			_ = w.AddTensor("long", quant.F32, []uint64{1}, func(out io.Writer) error {
				_, _ = out.Write(make([]byte, 3))
				_, _ = out.Write(make([]byte, 3))
				return nil
			})
		}, []string{`tensor "long"`, "more than the tensor's size"}},
		{"failing callback", func(w *Writer) {
			_ = w.AddTensor("bad", quant.F32, []uint64{4}, func(io.Writer) error { return errors.New("source gone") })
		}, []string{`tensor "bad"`, "source gone"}},
	}
	for _, c := range writeCases {
		t.Run(c.name, func(t *testing.T) {
			w := NewWriter()
			c.setup(w)
			_, err := w.WriteTo(io.Discard)
			wantError(t, err, c.want...)
		})
	}
}

// failingWriter accepts limit bytes, then fails.
type failingWriter struct{ limit int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.limit {
		n := f.limit
		f.limit = 0
		return n, errors.New("disk full")
	}
	f.limit -= len(p)
	return len(p), nil
}

func TestWriteToReportsOutputErrors(t *testing.T) {
	w := sampleWriter(t)
	size := len(encode(t, w))
	for _, limit := range []int{0, 100, size - 1} {
		n, err := w.WriteTo(&failingWriter{limit: limit})
		wantError(t, err, "disk full")
		if n != int64(limit) {
			t.Errorf("limit %d: WriteTo reported %d bytes written", limit, n)
		}
	}
}

func TestWriteFileLeavesNoPartialFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.gguf")
	if err := os.WriteFile(path, []byte("previous"), 0o644); err != nil {
		t.Fatal(err)
	}
	w := sampleWriter(t)
	_ = w.AddTensor("late", quant.F32, []uint64{1 << 16}, func(out io.Writer) error {
		if _, err := out.Write(make([]byte, 1000)); err != nil {
			return err
		}
		return errors.New("download interrupted")
	})
	wantError(t, w.WriteFile(path), `tensor "late"`, "download interrupted", path)
	if got, err := os.ReadFile(path); err != nil || string(got) != "previous" {
		t.Errorf("after a failed write the file holds %q, %v; want the previous contents", got, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("a failed write left files behind: %v", entries)
	}

	if err := sampleWriter(t).WriteFile(path); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("a good write left files behind: %v", entries)
	}
	if len(f.Tensors) != 8 {
		t.Errorf("%d tensors after WriteFile, want 8", len(f.Tensors))
	}
	wantError(t, sampleWriter(t).WriteFile(filepath.Join(dir, "no", "such", "dir.gguf")), "no such file or directory")
}

// TestWriterStreams writes a 64 MiB tensor from a callback and checks that
// the Writer allocated a small fraction of that: tensor data passes
// through, it is not gathered.
func TestWriterStreams(t *testing.T) {
	const size = 64 << 20
	chunk := make([]byte, 64<<10)
	w := NewWriter()
	err := w.AddTensor("big", quant.F32, []uint64{size / 4}, func(out io.Writer) error {
		for range size / len(chunk) {
			if _, err := out.Write(chunk); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	n, err := w.WriteTo(io.Discard)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if n < size {
		t.Errorf("wrote %d bytes, want at least %d", n, size)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("writing a %d-byte tensor allocated %d bytes; tensor data should stream", size, alloc)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(filepath.Join(dir, "missing.gguf"))
	wantError(t, err, "missing.gguf", "no such file")
	empty := filepath.Join(dir, "empty.gguf")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Open(empty)
	wantError(t, err, empty, "empty")
	bad := filepath.Join(dir, "bad.gguf")
	if err := os.WriteFile(bad, header(1, 0, 0).b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Open(bad)
	wantError(t, err, "gguf: "+bad+": GGUF version 1")
}

func TestCloseTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := sampleWriter(t).WriteFile(path); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if d := f.TensorData(f.Tensors[0]); d != nil {
		t.Errorf("TensorData after Close = %d bytes, want nil", len(d))
	}
	if s, err := f.String("general.architecture"); s != "llama" || err != nil {
		t.Errorf("metadata after Close: %q, %v", s, err)
	}
}
