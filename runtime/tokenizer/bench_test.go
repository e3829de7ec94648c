package tokenizer

import (
	"strings"
	"testing"
)

// prose is English text with some numbers, punctuation, code and non-Latin
// script: about 4 KB, what a chat prompt might hold.
func prose(tb testing.TB) string {
	inputs, _ := vectors(tb)
	const para = `Once upon a time, in a land far away, there lived a little llama named Leo. ` +
		`Every morning he walked 3.5 kilometres to the river, counted 1,024 stones and wrote down ` +
		`what he saw: "The water is cold; the sky is clear!" He liked to write small programs too, ` +
		`like for i := 0; i < n; i++ { sum += x[i] * y[i] }, and he dreamt of serving models to everyone.` + "\n\n"
	return strings.Repeat(para, 8) + strings.Join(inputs, "\n")
}

// BenchmarkEncode reports the speed of Encode on about 4 KB of text.
func BenchmarkEncode(b *testing.B) {
	tk := llama(b)
	text := prose(b)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	var n int
	for b.Loop() {
		n = len(tk.Encode(text, true))
	}
	b.ReportMetric(float64(n), "tokens/op")
}

// BenchmarkEncodeHostile encodes large adversarial inputs at two sizes;
// ns per byte staying flat from 256 KB to 1 MB shows the work is not
// quadratic.
func BenchmarkEncodeHostile(b *testing.B) {
	tk := llama(b)
	kinds := []struct{ name, unit string }{
		{"invalid-utf8", "\xff\xe2\x82"},
		{"one-char", "a"},
		{"spaces", " "},
		{"digits", "3"},
		{"cjk", "我想在工作"},
		{"special-like", "</s<s><"},
	}
	for _, k := range kinds {
		for _, size := range []int{256 << 10, 1 << 20} {
			text := strings.Repeat(k.unit, size/len(k.unit))
			name := k.name + "/" + map[int]string{256 << 10: "256KB", 1 << 20: "1MB"}[size]
			b.Run(name, func(b *testing.B) {
				b.SetBytes(int64(len(text)))
				b.ReportAllocs()
				for b.Loop() {
					tk.EncodeSpecial(text, false)
				}
			})
		}
	}
}

// BenchmarkDecode reports the speed of Decode on the ids of about 4 KB of
// text.
func BenchmarkDecode(b *testing.B) {
	tk := llama(b)
	text := prose(b)
	ids := tk.Encode(text, true)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		tk.Decode(ids)
	}
}

// BenchmarkDecoderNext reports the cost per token of streaming decode.
func BenchmarkDecoderNext(b *testing.B) {
	tk := llama(b)
	ids := tk.Encode(prose(b), true)
	b.ReportAllocs()
	for b.Loop() {
		d := tk.NewDecoder()
		for _, x := range ids {
			d.Next(x)
		}
		d.Flush()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ids)), "ns/token")
}

// BenchmarkLoad reports the time to read tokenizer.model and build the
// tokenizer, which every runtime start pays.
func BenchmarkLoad(b *testing.B) {
	llama(b)
	b.SetBytes(int64(len(llamaModel)))
	b.ReportAllocs()
	for b.Loop() {
		v, err := ParseSentencePiece(llamaModel)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := New(v); err != nil {
			b.Fatal(err)
		}
	}
}
