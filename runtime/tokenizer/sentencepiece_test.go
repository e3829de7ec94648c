package tokenizer

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
)

func TestParseLlamaModel(t *testing.T) {
	llama(t) // reads the file
	if sum := md5.Sum(llamaModel); hex.EncodeToString(sum[:]) != "eeec4125e9c7560836b4873b6f8e3025" {
		t.Fatalf("llama2-tokenizer.model has md5 %x, not Meta's", sum)
	}
	v, err := ParseSentencePiece(llamaModel)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Tokens) != 32000 || v.UNK != 0 || v.BOS != 1 || v.EOS != 2 || v.PAD != -1 ||
		!v.AddBOS || v.AddEOS || !v.AddSpacePrefix {
		t.Fatalf("parsed %d tokens, unk %d bos %d eos %d pad %d, add bos/eos/prefix %v %v %v",
			len(v.Tokens), v.UNK, v.BOS, v.EOS, v.PAD, v.AddBOS, v.AddEOS, v.AddSpacePrefix)
	}
	count := map[TokenType]int{}
	for _, typ := range v.Types {
		count[typ]++
	}
	if count[Unknown] != 1 || count[Control] != 2 || count[Byte] != 256 || count[Normal] != 32000-259 {
		t.Fatalf("type counts %v, want 1 unknown, 2 control, 256 byte, the rest normal", count)
	}
	for _, c := range []struct {
		id   int
		text string
		typ  TokenType
	}{{0, "<unk>", Unknown}, {1, "<s>", Control}, {2, "</s>", Control}, {13, "<0x0A>", Byte}, {29871, "▁", Normal}, {15043, "▁Hello", Normal}} {
		if v.Tokens[c.id] != c.text || v.Types[c.id] != c.typ {
			t.Errorf("token %d = %q %v, want %q %v", c.id, v.Tokens[c.id], v.Types[c.id], c.text, c.typ)
		}
	}
	// Merges need scores that rank: "▁t" (id 260) is among the first merges.
	if !(v.Scores[260] > v.Scores[15043]) || v.Scores[15043] >= 0 {
		t.Errorf("scores of ▁t and ▁Hello = %v, %v; want ▁t higher, both negative", v.Scores[260], v.Scores[15043])
	}
	// The fuzz seed made of the file's first 500 pieces reads as such.
	if sub, err := ParseSentencePiece(firstPieces(t, llamaModel, 500)); err != nil || !slices.Equal(sub.Tokens, v.Tokens[:500]) {
		t.Errorf("the first 500 pieces of the file: err %v, %d tokens", err, len(sub.Tokens))
	}
	// Writing the vocabulary back and reading it again gives the same.
	again, err := ParseSentencePiece(encodeModel(v))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again.Tokens, v.Tokens) || !slices.Equal(again.Scores, v.Scores) || !slices.Equal(again.Types, v.Types) {
		t.Fatal("the vocabulary changed through encodeModel and ParseSentencePiece")
	}
}

func TestParseSentencePieceErrors(t *testing.T) {
	good := testVocab(true, testPiece{text: "▁a"})
	model := encodeModel(good)
	if _, err := ParseSentencePiece(model); err != nil {
		t.Fatalf("the well-formed test model: %v", err)
	}
	with := func(f func(w *pbWriter)) []byte {
		w := pbWriter{b: slices.Clone(model)}
		f(&w)
		return w.b
	}
	trainer := func(f func(w *pbWriter)) []byte {
		return with(func(w *pbWriter) {
			var ts pbWriter
			ts.uvarint(fieldTrainerModelType, modelBPE)
			f(&ts)
			w.bytes(fieldModelTrainerSpec, ts.b) // a later message field merges over the earlier
		})
	}
	normalizer := func(f func(w *pbWriter)) []byte {
		return with(func(w *pbWriter) {
			var ns pbWriter
			ns.uvarint(fieldNormRemoveExtraSpaces, 0)
			f(&ns)
			w.bytes(fieldModelNormalizerSpec, ns.b)
		})
	}
	piece := func(f func(w *pbWriter)) []byte {
		return with(func(w *pbWriter) {
			var sp pbWriter
			f(&sp)
			w.bytes(fieldModelPieces, sp.b)
		})
	}
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "no pieces"},
		{"truncated", model[:len(model)/2], "truncated file"},
		{"truncated varint", []byte{0x0a, 0x80}, "varint runs past the end"},
		{"overlong varint", bytes.Repeat([]byte{0xff}, 11), "varint"},
		{"field zero", []byte{0x00}, "field number 0 is invalid"},
		{"group wire type", []byte{0x9b, 0x06}, "unsupported wire type 3"},
		{"pieces not bytes", []byte{0x08, 0x01}, "field 1 (pieces) has wire type 0"},
		{"gguf", []byte("GGUF\x03\x00\x00\x00"), "GGUF file"},
		{"unigram", trainer(func(w *pbWriter) { w.uvarint(fieldTrainerModelType, modelUnigram) }), "model_type is UNIGRAM"},
		{"no trainer spec", encodeModelWithout(good, fieldModelTrainerSpec), "model_type is UNIGRAM"},
		{"bos out of range", trainer(func(w *pbWriter) { w.uvarint(fieldTrainerBosID, 9999) }), "bos_id 9999 is outside"},
		{"unk too negative", trainer(func(w *pbWriter) { w.uvarint(fieldTrainerUnkID, uint64(1<<64-2)) }), "unk_id -2"},
		{"id beyond int32", trainer(func(w *pbWriter) { w.uvarint(fieldTrainerEosID, 1<<40) }), "does not fit int32"},
		{"nfkc", normalizer(func(w *pbWriter) { w.bytes(fieldNormPrecompiledCharmap, []byte{1, 2, 3}) }), "precompiled_charsmap"},
		{"remove extra whitespaces", normalizer(func(w *pbWriter) { w.uvarint(fieldNormRemoveExtraSpaces, 1) }), "remove_extra_whitespaces"},
		{"no whitespace escape", normalizer(func(w *pbWriter) { w.uvarint(fieldNormEscapeSpaces, 0) }), "escape_whitespaces"},
		{"piece type", piece(func(w *pbWriter) { w.bytes(fieldPieceText, []byte("x")); w.uvarint(fieldPieceType, 9) }), "type 9 is not"},
		{"score wire type", piece(func(w *pbWriter) { w.uvarint(fieldPieceScore, 1) }), "field 2 (score) has wire type 0"},
		{"bad byte piece", piece(func(w *pbWriter) { w.bytes(fieldPieceText, []byte("<0x1>")); w.uvarint(fieldPieceType, uint64(Byte)) }), "not of the form <0xXX>"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseSentencePiece(c.data)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one saying %q", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "tokenizer.model: ") {
				t.Fatalf("error %q does not name the file kind", err)
			}
		})
	}
}

// TestParseSentencePieceOptions checks defaults, unknown fields and
// add_dummy_prefix.
func TestParseSentencePieceOptions(t *testing.T) {
	v := testVocab(true, testPiece{text: "a"})
	v.AddSpacePrefix = false
	v.BOS, v.PAD = -1, 3
	w := pbWriter{b: encodeModel(v)}
	// Fields the reader does not know are skipped, of every wire type.
	w.uvarint(99, 7)
	w.tag(98, wireFixed64)
	w.b = append(w.b, 1, 2, 3, 4, 5, 6, 7, 8)
	w.fixed32(97, 1)
	w.bytes(96, []byte("ignored"))
	got, err := ParseSentencePiece(w.b)
	if err != nil {
		t.Fatal(err)
	}
	if got.AddSpacePrefix || got.BOS != -1 || got.AddBOS || got.PAD != 3 || len(got.Tokens) != len(v.Tokens) {
		t.Fatalf("got prefix %v bos %d addBOS %v pad %d, %d tokens", got.AddSpacePrefix, got.BOS, got.AddBOS, got.PAD, len(got.Tokens))
	}
	tk := mustNew(t, got)
	if ids := tk.Encode("a", true); !slices.Equal(ids, []int32{259}) {
		t.Fatalf("Encode without space prefix and BOS = %v, want [259]", ids)
	}
}

// encodeModelWithout serializes v and drops every top-level field number
// skip.
func encodeModelWithout(v Vocab, skip int) []byte {
	r := pbReader{data: encodeModel(v)}
	var w pbWriter
	for !r.done() {
		start := r.off
		field, wire, _, _ := r.tag()
		_ = r.skip(wire)
		if int(field) != skip {
			w.b = append(w.b, r.data[start:r.off]...)
		}
	}
	return w.b
}
