package gguf

import (
	"bytes"
	"io"
	"testing"
)

// FuzzParse feeds Parse small valid files made by the Writer, truncated
// and corrupted copies of them and hand-made oddities. Whatever the input,
// Parse must not panic and must keep its promises about what it accepts:
// every tensor's bytes inside the input, the getters and Describe safe,
// and a file written again from what was parsed parses to the same thing.
func FuzzParse(f *testing.F) {
	sample := encode(f, sampleWriter(f))
	w := NewWriter()
	for _, kv := range everyValue(f) {
		w.Set(kv.Key, kv.Value)
	}
	w.SetUint32(AlignmentKey, 8)
	values := encode(f, w)
	v2 := sampleWriter(f)
	v2.Version = 2
	seeds := [][]byte{sample, values, encode(f, v2), encode(f, NewWriter()), header(3, 1<<62, 0).b}
	for _, s := range [][]byte{sample, values} {
		for _, n := range []int{4, 8, 23, 24, 40, len(s) / 3, len(s) / 2, len(s) - 1} {
			seeds = append(seeds, s[:n])
		}
		for _, at := range []int{5, 17, 25, 33, 60, len(s) / 4, len(s) / 2} {
			c := bytes.Clone(s)
			c[at] ^= 0x80
			seeds = append(seeds, c)
		}
	}
	for _, s := range seeds {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			if file != nil {
				t.Fatal("Parse returned a file and an error")
			}
			return
		}
		for _, ti := range file.Tensors {
			if got := file.TensorData(ti); uint64(len(got)) != ti.Size {
				t.Fatalf("tensor %q: %d bytes of data, want %d", ti.Name, len(got), ti.Size)
			}
			if ti.Offset%file.Alignment != 0 {
				t.Fatalf("tensor %q is not aligned", ti.Name)
			}
		}
		for _, kv := range file.KVs {
			_, _ = file.Uint(kv.Key)
			_, _ = file.Float(kv.Key)
			_, _ = file.String(kv.Key)
			_, _ = file.Bool(kv.Key)
			_, _ = file.Strings(kv.Key)
			_, _ = file.Float32s(kv.Key)
			_, _ = file.Int32s(kv.Key)
			_ = kv.Value.String()
		}
		if err := file.Describe(io.Discard); err != nil {
			t.Fatal(err)
		}

		// Writing what was read must give a file that reads back the same:
		// its bytes are a fixed point of parse-then-write.
		once, err := rewrite(file)
		if err != nil {
			return // e.g. a tensor name longer than the Writer allows
		}
		again, err := Parse(once)
		if err != nil {
			t.Fatalf("a file written from a parsed one does not parse: %v", err)
		}
		twice, err := rewrite(again)
		if err != nil {
			t.Fatalf("a file written from a parsed one cannot be written again: %v", err)
		}
		if !bytes.Equal(once, twice) {
			t.Fatal("writing a parsed file is not stable")
		}
		if len(again.KVs) != len(file.KVs) || len(again.Tensors) != len(file.Tensors) {
			t.Fatal("metadata or tensors were lost in a rewrite")
		}
		for i, ti := range file.Tensors {
			if !bytes.Equal(again.TensorData(again.Tensors[i]), file.TensorData(ti)) {
				t.Fatalf("tensor %q changed in a rewrite", ti.Name)
			}
		}
	})
}
