package tokenizer

import (
	"slices"
	"strings"
	"testing"
)

// stream decodes ids with a Decoder and returns what each Next returned,
// then Flush.
func stream(tk *Tokenizer, ids []int32) []string {
	d := tk.NewDecoder()
	var out []string
	for _, x := range ids {
		out = append(out, d.Next(x))
	}
	return append(out, d.Flush())
}

func TestDecoderMultiByte(t *testing.T) {
	tk := llama(t)
	b := func(x byte) int32 { return 3 + int32(x) } // Llama 2's <0xXX> ids

	for _, c := range []struct {
		name string
		ids  []int32
		want []string // per Next, then Flush
	}{
		{"4-byte char held until complete", []int32{b(0xF0), b(0x9F), b(0xA6), b(0x99)}, []string{"", "", "", "🦙", ""}},
		{"2-byte char after text", []int32{15043, b(0xC3), b(0xA9)}, []string{"Hello", "", "é", ""}},
		{"text after a split char", []int32{b(0xE2), b(0x82), b(0xAC), 3186}, []string{"", "", "€", " world", ""}},
		{"invalid once known", []int32{b(0xF0), b(0x41)}, []string{"", "\uFFFDA", ""}},
		{"invalid lead byte at once", []int32{b(0xFF), b(0x80)}, []string{"\uFFFD", "\uFFFD", ""}},
		{"normal piece ends a bad prefix", []int32{b(0xE2), b(0x82), 15043}, []string{"", "", "\uFFFD\uFFFD Hello", ""}},
		{"stream ends inside a char", []int32{15043, b(0xE2), b(0x96)}, []string{"Hello", "", "", "\uFFFD\uFFFD"}},
		{"surrogate is invalid", []int32{b(0xED), b(0xA0), b(0x80)}, []string{"", "\uFFFD\uFFFD", "\uFFFD", ""}},
		{"control tokens are silent and keep the strip", []int32{1, 15043, 2}, []string{"", "Hello", "", ""}},
		{"leading space stripped once", []int32{29871, 29871, 15043}, []string{"", " ", " Hello", ""}},
		{"id outside the vocabulary", []int32{15043, 32000, -1}, []string{"Hello", "\uFFFD", "\uFFFD", ""}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := stream(tk, c.ids)
			if !slices.Equal(got, c.want) {
				t.Fatalf("stream = %q, want %q", got, c.want)
			}
			if all := tk.Decode(c.ids); all != strings.Join(got, "") {
				t.Fatalf("Decode = %q, but the stream gave %q", all, strings.Join(got, ""))
			}
		})
	}
}

// TestDecoderMatchesDecode checks, on every vector and on text with split
// characters, that the streamed pieces add up to Decode's result.
func TestDecoderMatchesDecode(t *testing.T) {
	tk := llama(t)
	inputs, want := vectors(t)
	for i, in := range inputs {
		ids := append([]int32{1}, want[i]...)
		if got := strings.Join(stream(tk, ids), ""); got != in {
			t.Errorf("vector %d: streamed %q, want %q", i, got, in)
		}
	}
}

// TestDecoderReuse checks that a Decoder goes on after Flush.
func TestDecoderReuse(t *testing.T) {
	tk := llama(t)
	d := tk.NewDecoder()
	if s := d.Next(3 + 0xE2); s != "" {
		t.Fatalf("Next = %q", s)
	}
	if s := d.Flush(); s != "\uFFFD" {
		t.Fatalf("Flush = %q", s)
	}
	if s := d.Next(3186); s != " world" {
		t.Fatalf("Next after Flush = %q, want %q (the first text was already seen)", s, " world")
	}
}
