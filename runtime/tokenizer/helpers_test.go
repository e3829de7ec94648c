package tokenizer

import (
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
)

// The Llama 2 vocabulary, from Meta's tokenizer.model, which runtime/synth embeds.
var (
	llamaOnce  sync.Once
	llamaModel []byte
	llamaTok   *Tokenizer
	llamaErr   error
)

func llama(tb testing.TB) *Tokenizer {
	tb.Helper()
	llamaOnce.Do(func() {
		llamaModel, llamaErr = os.ReadFile("../synth/llama2-tokenizer.model")
		if llamaErr != nil {
			return
		}
		var v Vocab
		if v, llamaErr = ParseSentencePiece(llamaModel); llamaErr != nil {
			return
		}
		llamaTok, llamaErr = New(v)
	})
	if llamaErr != nil {
		tb.Fatalf("loading the Llama 2 tokenizer: %v", llamaErr)
	}
	return llamaTok
}

// vectors reads llama.cpp's tokenizer test vectors: the inputs, and for
// each the expected ids without BOS.
func vectors(tb testing.TB) (inputs []string, want [][]int32) {
	tb.Helper()
	inp, err := os.ReadFile("testdata/ggml-vocab-llama-spm.gguf.inp")
	if err != nil {
		tb.Fatal(err)
	}
	out, err := os.ReadFile("testdata/ggml-vocab-llama-spm.gguf.out")
	if err != nil {
		tb.Fatal(err)
	}
	// Every input is followed by the separator, the last one too.
	inputs = strings.Split(string(inp), "\n__ggml_vocab_test__\n")
	if inputs[len(inputs)-1] != "" {
		tb.Fatalf(".inp does not end with the separator")
	}
	inputs = inputs[:len(inputs)-1]
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != len(inputs) {
		tb.Fatalf("%d inputs but %d output lines", len(inputs), len(lines))
	}
	for i, line := range lines {
		var ids []int32
		for _, f := range strings.Fields(line) {
			var id int32
			if _, err := fmt.Sscan(f, &id); err != nil {
				tb.Fatalf(".out line %d: %v", i+1, err)
			}
			ids = append(ids, id)
		}
		want = append(want, ids)
	}
	return inputs, want
}

// testVocab builds a small vocabulary: <unk>, <s>, </s>, the 256 byte
// tokens when withBytes, then the given pieces in order.
func testVocab(withBytes bool, pieces ...testPiece) Vocab {
	v := Vocab{UNK: 0, BOS: 1, EOS: 2, PAD: -1, AddBOS: true, AddSpacePrefix: true}
	add := func(p string, s float32, t TokenType) {
		v.Tokens = append(v.Tokens, p)
		v.Scores = append(v.Scores, s)
		v.Types = append(v.Types, t)
	}
	add("<unk>", 0, Unknown)
	add("<s>", 0, Control)
	add("</s>", 0, Control)
	if withBytes {
		for b := 0; b < 256; b++ {
			add(fmt.Sprintf("<0x%02X>", b), 0, Byte)
		}
	}
	for _, p := range pieces {
		t := p.typ
		if t == 0 {
			t = Normal
		}
		add(p.text, p.score, t)
	}
	return v
}

type testPiece struct {
	text  string
	score float32
	typ   TokenType // 0 means Normal
}

func mustNew(tb testing.TB, v Vocab) *Tokenizer {
	tb.Helper()
	tk, err := New(v)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return tk
}

// id returns the id of piece text in tk's vocabulary.
func id(tb testing.TB, tk *Tokenizer, text string) int32 {
	tb.Helper()
	for i, p := range tk.vocab.Tokens {
		if p == text {
			return int32(i)
		}
	}
	tb.Fatalf("no piece %q in the vocabulary", text)
	return -1
}

// pbWriter writes protobuf wire format, to build SentencePiece models.
type pbWriter struct{ b []byte }

func (w *pbWriter) varint(x uint64) {
	for x >= 0x80 {
		w.b = append(w.b, byte(x)|0x80)
		x >>= 7
	}
	w.b = append(w.b, byte(x))
}

func (w *pbWriter) tag(field, wire int) { w.varint(uint64(field)<<3 | uint64(wire)) }

func (w *pbWriter) bytes(field int, b []byte) {
	w.tag(field, wireBytes)
	w.varint(uint64(len(b)))
	w.b = append(w.b, b...)
}

func (w *pbWriter) uvarint(field int, x uint64) {
	w.tag(field, wireVarint)
	w.varint(x)
}

func (w *pbWriter) fixed32(field int, x uint32) {
	w.tag(field, wireFixed32)
	w.b = append(w.b, byte(x), byte(x>>8), byte(x>>16), byte(x>>24))
}

// encodeModel serializes v as a SentencePiece BPE model with Llama 2's
// normalizer settings.
func encodeModel(v Vocab) []byte {
	var m pbWriter
	for i, p := range v.Tokens {
		var sp pbWriter
		sp.bytes(fieldPieceText, []byte(p))
		sp.fixed32(fieldPieceScore, math.Float32bits(v.Scores[i]))
		sp.uvarint(fieldPieceType, uint64(v.Types[i]))
		m.bytes(fieldModelPieces, sp.b)
	}
	var ts pbWriter
	ts.uvarint(fieldTrainerModelType, modelBPE)
	ts.uvarint(fieldTrainerUnkID, uint64(int64(v.UNK)))
	ts.uvarint(fieldTrainerBosID, uint64(int64(v.BOS)))
	ts.uvarint(fieldTrainerEosID, uint64(int64(v.EOS)))
	ts.uvarint(fieldTrainerPadID, uint64(int64(v.PAD)))
	m.bytes(fieldModelTrainerSpec, ts.b)
	var ns pbWriter
	ns.bytes(fieldNormName, []byte("identity"))
	ns.uvarint(fieldNormAddDummyPrefix, b2u(v.AddSpacePrefix))
	ns.uvarint(fieldNormRemoveExtraSpaces, 0)
	m.bytes(fieldModelNormalizerSpec, ns.b)
	return m.b
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func nan() float64 { return math.NaN() }
