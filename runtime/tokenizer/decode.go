package tokenizer

import "unicode/utf8"

// Decode turns token ids into text: "▁" becomes a space, a byte token its
// byte, control, unknown and unused tokens nothing, and the space that the
// space prefix put in front of the text is removed from the first token
// that produces text. So Decode(Encode(x, b)) == x for valid UTF-8 x
// without "▁" (U+2581, which Encode cannot tell from an escaped space) and
// without user-defined pieces (text after one gets a space prefix, as in
// llama.cpp); Llama 2 has none.
//
// The result is always valid UTF-8: byte tokens that do not form a
// character become U+FFFD, one per byte, as Go's range over a string
// reads them. An id outside the vocabulary decodes to U+FFFD. Decode gives
// exactly the concatenation of a Decoder's output for the same ids.
func (t *Tokenizer) Decode(ids []int32) string {
	d := t.NewDecoder()
	buf := make([]byte, 0, 4*len(ids))
	for _, id := range ids {
		buf = d.append(buf, id)
	}
	buf = d.appendFlush(buf)
	return string(buf)
}

// Decoder decodes a stream of token ids, such as a model's output, one at
// a time. Its output holds only whole UTF-8 characters: the byte tokens of
// a character split across tokens are held until the character is
// complete, and a byte sequence is replaced by U+FFFD only once it is
// known to be invalid. A Decoder is not safe for concurrent use.
type Decoder struct {
	t       *Tokenizer
	pending []byte // the start of an incomplete character, at most 3 bytes
	strip   bool   // the next text is the first: remove its leading space
}

// NewDecoder returns a Decoder at the start of a text, which removes the
// space prefix from the first token that produces text, as Decode does.
func (t *Tokenizer) NewDecoder() *Decoder {
	return &Decoder{t: t, pending: make([]byte, 0, utf8.UTFMax), strip: t.vocab.AddSpacePrefix}
}

// Next decodes one more token and returns the text that became complete
// with it, possibly "".
func (d *Decoder) Next(id int32) string {
	return string(d.append(nil, id))
}

// Flush returns the bytes still held as U+FFFD each (the stream ended
// inside a character) and leaves the Decoder empty; decoding may go on
// after it.
func (d *Decoder) Flush() string {
	return string(d.appendFlush(nil))
}

func (d *Decoder) append(dst []byte, id int32) []byte {
	var piece string
	if id < 0 || int(id) >= len(d.t.text) {
		piece = "\uFFFD"
	} else {
		piece = d.t.text[id]
	}
	if piece == "" {
		// Control tokens produce nothing and do not count as the first
		// text, so "<s>▁Hello" decodes to "Hello".
		return dst
	}
	if d.strip {
		d.strip = false
		if piece[0] == ' ' {
			piece = piece[1:]
		}
	}
	if len(d.pending) == 0 && utf8.ValidString(piece) {
		return append(dst, piece...) // the common case: whole characters
	}
	// Emit every character that is complete or known to be invalid; keep
	// a tail that may still become a character.
	// b is d.pending's buffer; its undecided tail moves to the front below.
	d.pending = append(d.pending, piece...)
	b := d.pending
	i := 0
	for i < len(b) {
		if b[i] < utf8.RuneSelf {
			dst = append(dst, b[i])
			i++
			continue
		}
		if !utf8.FullRune(b[i:]) {
			break // a valid prefix of a character: wait for more bytes
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			dst = utf8.AppendRune(dst, utf8.RuneError)
		} else {
			dst = append(dst, b[i:i+size]...)
		}
		i += size
	}
	d.pending = append(d.pending[:0], b[i:]...)
	return dst
}

func (d *Decoder) appendFlush(dst []byte) []byte {
	for range d.pending {
		dst = utf8.AppendRune(dst, utf8.RuneError)
	}
	d.pending = d.pending[:0]
	return dst
}
