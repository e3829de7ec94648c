package tokenizer

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func llamaTokenizerJSON(t *testing.T) []byte {
	t.Helper()
	llama(t)
	v, err := ParseSentencePiece(llamaModel)
	if err != nil {
		t.Fatal(err)
	}
	b, err := HFTokenizerJSON(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHFTokenizerJSON: the tokenizer.json of the Llama 2 tokenizer encodes
// llama.cpp's 46 vectors as the tokenizer.model does.
func TestHFTokenizerJSON(t *testing.T) {
	data := llamaTokenizerJSON(t)
	v, err := ParseHFTokenizerJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := ParseSentencePiece(llamaModel)
	if !slices.Equal(v.Tokens, sp.Tokens) || v.BOS != 1 || v.EOS != 2 || v.UNK != 0 || !v.AddBOS || !v.AddSpacePrefix {
		t.Fatalf("vocabulary differs: %d tokens, BOS %d EOS %d UNK %d AddBOS %v", len(v.Tokens), v.BOS, v.EOS, v.UNK, v.AddBOS)
	}
	for i := range v.Types {
		if v.Types[i] != sp.Types[i] {
			t.Fatalf("token %d %q: type %v, tokenizer.model says %v", i, v.Tokens[i], v.Types[i], sp.Types[i])
		}
	}
	tk := mustNew(t, v)
	inputs, want := vectors(t)
	for i, in := range inputs {
		if got := tk.Encode(in, false); !slices.Equal(got, want[i]) {
			t.Errorf("vector %d: Encode(%q) = %v, want %v", i, in, got, want[i])
		}
	}
	// The same with merges as pairs (the newer format).
	var doc map[string]any
	_ = json.Unmarshal(data, &doc)
	model := doc["model"].(map[string]any)
	var pairs [][2]string
	for _, m := range model["merges"].([]any) {
		a, b, _ := strings.Cut(m.(string), " ")
		pairs = append(pairs, [2]string{a, b})
	}
	model["merges"] = pairs
	data2, _ := json.Marshal(doc)
	v2, err := ParseHFTokenizerJSON(data2)
	if err != nil || !slices.Equal(v2.Scores, v.Scores) {
		t.Errorf("merges as pairs: %v", err)
	}
}

func TestHFTokenizerJSONRefusals(t *testing.T) {
	for _, c := range []struct{ json, want string }{
		{`{"model":{"type":"Unigram"}}`, "only BPE"},
		{`{"model":{"type":"BPE","byte_fallback":false,"vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"ByteLevel"}}`, "byte-level"},
		{`{"model":{"type":"BPE","byte_fallback":true,"vocab":{"a":0},"merges":[]},"normalizer":null}`, "▁"},
		{`{"normalizer":{"type":"Replace","content":"▁"},"model":{"type":"BPE","byte_fallback":true,"vocab":{"a":0,"b":1},"merges":["a b"]}}`, "not in the vocabulary"},
		{`not json`, "tokenizer.json"},
	} {
		if _, err := ParseHFTokenizerJSON([]byte(c.json)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.json, err, c.want)
		}
	}
}

// FuzzParseHFTokenizerJSON: a checkpoint's tokenizer.json is untrusted.
func FuzzParseHFTokenizerJSON(f *testing.F) {
	f.Add([]byte(`{"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"}]},"added_tokens":[{"id":1,"content":"<s>","special":true}],"model":{"type":"BPE","byte_fallback":true,"unk_token":"a","vocab":{"a":0,"b":2,"ab":3},"merges":["a b"]}}`))
	f.Add([]byte(`{"normalizer":"▁","model":{"type":"BPE","byte_fallback":true,"vocab":{"a":-1},"merges":[["a","a"]]},"added_tokens":[{"id":99999999,"content":"x"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseHFTokenizerJSON(data)
		if err != nil {
			return
		}
		if _, err := New(v); err != nil {
			t.Fatalf("a vocabulary that parsed does not make a tokenizer: %v", err)
		}
	})
}
