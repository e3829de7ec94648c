package tokenizer

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzEncode encodes arbitrary strings with the Llama 2 vocabulary, plain
// and with special tokens: no panic, ids in range, no control token from
// plain text, a streaming decode equal to Decode, valid UTF-8 out, and
// Decode(Encode(s)) == s for valid UTF-8 without "▁" (for invalid UTF-8,
// s with each bad byte as U+FFFD). It also checks that merging word by
// word gives what merging the whole text gives.
func FuzzEncode(f *testing.F) {
	tk := llama(f)
	inputs, _ := vectors(f)
	for _, in := range inputs {
		f.Add(in)
	}
	for _, s := range []string{"a\xffb\xe2\x82", "<s>[INST] hi [/INST]</s>", "▁ ▁", "\x00", "<0x0A>", "\xf0\x9f\xa6"} {
		f.Add(s)
	}
	// The same tokenizer merging whole runs of text, not word by word.
	whole := *tk
	whole.splitWords = false
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := tk.Encode(s, false), whole.Encode(s, false); !slices.Equal(got, want) {
			t.Fatalf("Encode(%q) word by word = %v, whole = %v", s, got, want)
		}
		for _, special := range []bool{false, true} {
			var ids []int32
			if special {
				ids = tk.EncodeSpecial(s, true)
			} else {
				ids = tk.Encode(s, true)
			}
			if len(ids) == 0 || ids[0] != tk.BOS() {
				t.Fatalf("Encode(%q) = %v does not start with BOS", s, ids)
			}
			for i, x := range ids {
				if x < 0 || int(x) >= tk.VocabSize() {
					t.Fatalf("Encode(%q): id %d out of range", s, x)
				}
				if !special && i > 0 && (tk.Type(x) == Control || tk.Type(x) == Unknown) {
					t.Fatalf("Encode(%q) produced special token %d from plain text", s, x)
				}
			}
			dec := tk.Decode(ids)
			if !utf8.ValidString(dec) {
				t.Fatalf("Decode(Encode(%q)) = %q is not valid UTF-8", s, dec)
			}
			if streamed := strings.Join(stream(tk, ids), ""); streamed != dec {
				t.Fatalf("streamed %q, Decode gave %q", streamed, dec)
			}
			// Bytes survive; Decode writes each invalid one as U+FFFD, as
			// []rune does. "▁" in the input decodes as a space.
			if want := string([]rune(s)); !special && !strings.Contains(s, "▁") && dec != want {
				t.Fatalf("Decode(Encode(%q)) = %q, want %q", s, dec, want)
			}
		}
	})
}

// FuzzParseSentencePiece reads arbitrary bytes as a tokenizer.model: no
// panic, and a vocabulary it accepts builds a tokenizer that works.
func FuzzParseSentencePiece(f *testing.F) {
	llama(f)
	// The real file, cut to its first 500 pieces (special, byte and the
	// first merges) and its specs, byte for byte: small, so that each run
	// is fast. TestParseLlamaModel reads the whole file.
	f.Add(firstPieces(f, llamaModel, 500))
	f.Add(llamaModel[:2000])
	f.Add(encodeModel(testVocab(false, testPiece{text: "▁a", score: -1}, testPiece{text: "<x>", typ: UserDefined})))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseSentencePiece(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "tokenizer.model: ") {
				t.Fatalf("error %q does not name the file kind", err)
			}
			return
		}
		tk, err := New(v)
		if err != nil {
			// Parsing validated the vocabulary; only its byte coverage is
			// left for New to refuse.
			if !strings.Contains(err.Error(), "no token for byte") {
				t.Fatalf("ParseSentencePiece accepted a vocabulary that New refuses: %v", err)
			}
			return
		}
		ids := tk.EncodeSpecial("Hello, wörld</s> 🦙 \xff <s>", true)
		for _, x := range ids {
			if x < 0 || int(x) >= tk.VocabSize() {
				t.Fatalf("id %d out of range", x)
			}
		}
		if s := tk.Decode(ids); !utf8.ValidString(s) {
			t.Fatalf("Decode gave invalid UTF-8 %q", s)
		}
	})
}

// firstPieces returns model with only its first n pieces: every other
// top-level field is kept as it is.
func firstPieces(tb testing.TB, model []byte, n int) []byte {
	var out []byte
	r := pbReader{data: model}
	pieces := 0
	for !r.done() {
		start := r.off
		field, wire, _, err := r.tag()
		if err == nil {
			err = r.skip(wire)
		}
		if err != nil {
			tb.Fatal(err)
		}
		if field == fieldModelPieces {
			if pieces++; pieces > n {
				continue
			}
		}
		out = append(out, model[start:r.off]...)
	}
	return out
}
