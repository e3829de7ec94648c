package tokenizer

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/leo-operator/leo/runtime/gguf"
)

// ggufVocab writes v into a GGUF file as llama.cpp's converter does and
// reads it back through VocabFromGGUF.
func ggufVocab(t *testing.T, v Vocab, extra func(w *gguf.Writer)) (Vocab, error) {
	t.Helper()
	w := gguf.NewWriter()
	WriteGGUF(w, v)
	if extra != nil {
		extra(w)
	}
	path := filepath.Join(t.TempDir(), "vocab.gguf")
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	return VocabFromGGUF(f)
}

// TestLlamaVectorsFromGGUF runs llama.cpp's 46 vectors with the vocabulary
// read from GGUF metadata (tokenizer.ggml.*) rather than tokenizer.model.
func TestLlamaVectorsFromGGUF(t *testing.T) {
	v, err := ggufVocab(t, llama(t).vocab, nil)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	inputs, want := vectors(t)
	for i, in := range inputs {
		got := tk.Encode(in, false)
		if !slices.Equal(got, want[i]) {
			t.Errorf("vector %d: Encode(%q) = %v, want %v", i, in, got, want[i])
		}
		if back := tk.Decode(tk.Encode(in, true)); back != in {
			t.Errorf("vector %d: Decode(Encode(%q)) = %q", i, in, back)
		}
	}
	if tk.BOS() != 1 || tk.EOS() != 2 || tk.VocabSize() != 32000 {
		t.Errorf("BOS %d, EOS %d, %d tokens; want 1, 2, 32000", tk.BOS(), tk.EOS(), tk.VocabSize())
	}
}

func TestVocabFromGGUFErrors(t *testing.T) {
	small := testVocab(true, testPiece{text: "▁a"})
	for _, tc := range []struct {
		name  string
		extra func(w *gguf.Writer)
		want  string
	}{
		{"not SentencePiece", func(w *gguf.Writer) { w.SetString("tokenizer.ggml.model", "gpt2") }, `"gpt2"`},
		{"BOS out of range", func(w *gguf.Writer) { w.SetUint32("tokenizer.ggml.bos_token_id", 1000) }, "bos_token_id = 1000"},
		{"scores of the wrong type", func(w *gguf.Writer) { w.SetStrings("tokenizer.ggml.scores", []string{"x"}) }, "tokenizer.ggml.scores"},
		{"add_bos of the wrong type", func(w *gguf.Writer) { w.SetUint32("tokenizer.ggml.add_bos_token", 1) }, "add_bos_token"},
	} {
		_, err := ggufVocab(t, small, tc.extra)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	// A file without a tokenizer says so.
	var buf bytes.Buffer
	w := gguf.NewWriter()
	w.SetString("general.architecture", "llama")
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := FromGGUF(f); err == nil || !strings.Contains(err.Error(), "no tokenizer") {
		t.Errorf("a file without tokenizer keys: got %v", err)
	}
}
