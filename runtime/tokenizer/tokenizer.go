// Package tokenizer is the Llama 2 tokenizer: SentencePiece BPE with byte
// fallback, as llama.cpp implements it (llm_tokenizer_spm in
// llama-vocab.cpp) and as Meta's tokenizer.model and Hugging Face's
// LlamaTokenizer tokenize.
//
// Encoding: spaces become "▁" (U+2581) and a "▁" is put in front of the
// text (add_dummy_prefix); the text is split into UTF-8 characters; the
// adjacent pair whose concatenation is the vocabulary piece of highest
// score is merged, leftmost first on ties, until no pair is a piece; what
// is left that is not a piece is written as one <0xXX> token per byte.
//
// A vocabulary comes from Meta's tokenizer.model (ParseSentencePiece) or
// from a GGUF file's tokenizer.ggml.* keys (fill a Vocab).
package tokenizer

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
)

// Tokenizer encodes text to token ids and decodes ids to text. It is
// immutable after New and safe for concurrent use.
type Tokenizer struct {
	vocab Vocab

	// pieces maps the text of every piece that merging may produce
	// (Normal and UserDefined) to its id. Control, Unknown and Byte
	// pieces are left out so that text such as "</s>" or "<0x0A>" typed
	// by a user never turns into those tokens (SentencePiece does the
	// same); Unused pieces are left out as reserved.
	pieces   map[string]int32
	maxPiece int // length in bytes of the longest key of pieces

	// splitWords is true when no piece has a "▁" after another
	// character, as in Llama 2, where "▁" only starts pieces. Then no
	// merge can cross the place where a "▁" follows another character,
	// and each word is merged on its own with the same result as the
	// whole text, but in small, cache-friendly steps.
	splitWords bool

	byteID [256]int32 // the token each byte falls back to
	text   []string   // what each token decodes to

	user    matcher // UserDefined pieces: matched as a whole in all input
	special matcher // UserDefined, Control and Unknown pieces, for EncodeSpecial
}

// New checks the vocabulary and builds a tokenizer from it. It fails when
// the vocabulary is inconsistent (lengths differ, an id is out of range, a
// type is unknown, a score is NaN) or cannot encode every byte (no
// <0xXX> token for some byte and no unknown token).
func New(v Vocab) (*Tokenizer, error) {
	if err := v.validate(); err != nil {
		return nil, err
	}
	// Copy the slices: the tokenizer must not change when the caller
	// reuses its Vocab.
	v.Tokens = slices.Clone(v.Tokens)
	v.Scores = slices.Clone(v.Scores)
	v.Types = slices.Clone(v.Types)

	t := &Tokenizer{
		vocab:  v,
		pieces: make(map[string]int32, len(v.Tokens)),
		text:   make([]string, len(v.Tokens)),
	}
	for i := range t.byteID {
		t.byteID[i] = -1
	}
	t.user.init()
	t.special.init()
	t.splitWords = true
	for i, piece := range v.Tokens {
		id := int32(i)
		switch typ := v.typeOf(i); typ {
		case Normal, UserDefined:
			if piece != "" {
				// On duplicate texts the last id wins, as in llama.cpp's
				// token_to_id map.
				t.pieces[piece] = id
				t.maxPiece = max(t.maxPiece, len(piece))
				if strings.Contains(strings.TrimLeft(piece, "▁"), "▁") {
					t.splitWords = false
				}
			}
			if typ == Normal {
				t.text[i] = strings.ReplaceAll(piece, "▁", " ")
			} else {
				t.text[i] = piece // user-defined pieces decode verbatim, as in llama.cpp
				t.user.add(piece, id)
				t.special.add(piece, id)
			}
		case Control, Unknown:
			t.special.add(piece, id)
		case Byte:
			b, _ := parseByteToken(piece) // validate checked the form
			if t.byteID[b] < 0 {
				t.byteID[b] = id
			}
			t.text[i] = string([]byte{b})
		}
	}
	// Bytes without a <0xXX> token fall back to a piece that is that very
	// byte, as llama.cpp's byte_to_token does, else to the unknown token.
	for b := range t.byteID {
		if t.byteID[b] >= 0 {
			continue
		}
		if id, ok := t.pieces[string([]byte{byte(b)})]; ok {
			t.byteID[b] = id
		} else if v.UNK >= 0 {
			t.byteID[b] = v.UNK
		} else {
			return nil, fmt.Errorf("tokenizer: the vocabulary has no token for byte 0x%02X (no <0x%02X> piece) and no unknown token; it cannot encode all text", b, b)
		}
	}
	return t, nil
}

// VocabSize returns the number of tokens in the vocabulary.
func (t *Tokenizer) VocabSize() int { return len(t.vocab.Tokens) }

// BOS returns the beginning-of-sequence token id, -1 if there is none.
func (t *Tokenizer) BOS() int32 { return t.vocab.BOS }

// EOS returns the end-of-sequence token id, -1 if there is none.
func (t *Tokenizer) EOS() int32 { return t.vocab.EOS }

// Piece returns the vocabulary text of a token ("▁Hello", "<0x0A>",
// "</s>"), or "" for an id outside the vocabulary.
func (t *Tokenizer) Piece(id int32) string {
	if id < 0 || int(id) >= len(t.vocab.Tokens) {
		return ""
	}
	return t.vocab.Tokens[id]
}

// Type returns a token's type, or 0 for an id outside the vocabulary.
func (t *Tokenizer) Type(id int32) TokenType {
	if id < 0 || int(id) >= len(t.vocab.Tokens) {
		return 0
	}
	return t.vocab.typeOf(int(id))
}

// Encode tokenizes plain text: text that looks like a control token
// ("<s>", "</s>") is tokenized as ordinary characters, so user input cannot
// inject control tokens. User-defined pieces are matched wherever they
// occur, as in llama.cpp and Hugging Face.
//
// With addSpecial, the vocabulary's framing is added: BOS first when
// AddBOS is set (Llama 2: yes), EOS last when AddEOS is set (Llama 2: no),
// as llama.cpp's add_special does. Any string is accepted; invalid UTF-8
// bytes are encoded as byte tokens.
func (t *Tokenizer) Encode(text string, addSpecial bool) []int32 {
	return t.encode(text, addSpecial, &t.user)
}

// EncodeSpecial is Encode, except that the written form of control,
// unknown and user-defined tokens becomes their id, e.g. "</s>" → EOS.
// It is meant for prompts built from a chat template, never for raw user
// text. Where two such tokens could match at the same place the longest
// wins. Like llama.cpp, text that follows a special token gets the space
// prefix again.
func (t *Tokenizer) EncodeSpecial(text string, addSpecial bool) []int32 {
	return t.encode(text, addSpecial, &t.special)
}

func (t *Tokenizer) encode(text string, addSpecial bool, m *matcher) []int32 {
	// About one token per 3 to 4 bytes of English text.
	out := make([]int32, 0, len(text)/3+2)
	if addSpecial && t.vocab.AddBOS {
		out = append(out, t.vocab.BOS)
	}
	// afterSpecial is true at the start and after a special token: the
	// next run of text gets the space prefix (llama.cpp's is_prev_special).
	afterSpecial := true
	var sc scratch
	start := 0
	for i := 0; i < len(text) && !m.empty(); {
		if n, id := m.longest(text, i); n > 0 {
			if i > start {
				out = t.encodeText(&sc, out, text[start:i], afterSpecial)
			}
			out = append(out, id)
			afterSpecial = true
			i += n
			start = i
			continue
		}
		i++
	}
	if start < len(text) {
		out = t.encodeText(&sc, out, text[start:], afterSpecial)
	}
	if addSpecial && t.vocab.AddEOS {
		out = append(out, t.vocab.EOS)
	}
	return out
}

// encodeText tokenizes a run of text that holds no special token.
func (t *Tokenizer) encodeText(sc *scratch, out []int32, text string, prefix bool) []int32 {
	var b strings.Builder
	b.Grow(len(text) + 2*strings.Count(text, " ") + 3)
	if prefix && t.vocab.AddSpacePrefix {
		b.WriteString("▁")
	}
	for i := 0; i < len(text); {
		j := strings.IndexByte(text[i:], ' ')
		if j < 0 {
			b.WriteString(text[i:])
			break
		}
		b.WriteString(text[i : i+j])
		b.WriteString("▁")
		i += j + 1
	}
	s := b.String()
	if !t.splitWords {
		return t.merge(sc, out, s)
	}
	// Cut before every "▁" that follows another character: "▁▁a▁b"
	// becomes "▁▁a", "▁b".
	start := 0
	for i := 0; i < len(s); {
		j := strings.Index(s[i:], "▁")
		if j < 0 {
			break
		}
		k := i + j
		if k > start && !strings.HasSuffix(s[:k], "▁") {
			out = t.merge(sc, out, s[start:k])
			start = k
		}
		i = k + len("▁")
	}
	return t.merge(sc, out, s[start:])
}

// scratch holds the buffers of merge, reused from word to word.
type scratch struct {
	syms []symbol
	q    bigramQueue
}

// maxChunk bounds the length of text merged in one piece, so that symbol
// indexes fit int32. Only a run of text without a word break longer than a
// gigabyte is cut, at a character boundary, and no token spans the cut
// there. (A variable, so that a test can make it small.)
var maxChunk = 1 << 30

// symbol is a run of text s[start:start+n] in the linked list of symbols
// that merge works on; n == 0 marks a symbol merged into its left
// neighbour.
type symbol struct {
	start, n   int32
	prev, next int32 // neighbours in the list, -1 at the ends
	id         int32 // the piece this symbol is, once a merge made it; -1 before
}

// merge tokenizes escaped text s (spaces already "▁") by SentencePiece
// BPE and appends the ids to out. The work is O(n log n) in the length of
// s: each merge removes a symbol and queues at most two new pairs, and
// pairs that went stale are skipped when they come out of the queue.
func (t *Tokenizer) merge(sc *scratch, out []int32, s string) []int32 {
	for len(s) > maxChunk {
		// Cut before the character that s[maxChunk] belongs to. Every
		// byte that is not a continuation byte starts a symbol; if none
		// is within UTFMax bytes, s[maxChunk] is an invalid byte and a
		// symbol of its own.
		cut := maxChunk
		for p := maxChunk; p > maxChunk-utf8.UTFMax && p > 0; p-- {
			if utf8.RuneStart(s[p]) {
				cut = p
				break
			}
		}
		out = t.merge(sc, out, s[:cut])
		s = s[cut:]
	}
	if s == "" {
		return out
	}
	// One symbol per UTF-8 character. An invalid byte is a symbol of its
	// own; it can never be part of a piece, so it ends as a byte token.
	n := utf8.RuneCountInString(s) // counts each invalid byte as one, too
	if cap(sc.syms) < n {
		sc.syms = make([]symbol, 0, n)
	}
	syms := sc.syms[:0]
	for i := 0; i < len(s); {
		size := 1
		if s[i] >= utf8.RuneSelf {
			_, size = utf8.DecodeRuneInString(s[i:])
		}
		k := int32(len(syms))
		syms = append(syms, symbol{start: int32(i), n: int32(size), prev: k - 1, next: k + 1, id: -1})
		i += size
	}
	syms[len(syms)-1].next = -1

	if cap(sc.q) < n {
		sc.q = make(bigramQueue, 0, n)
	}
	q := sc.q[:0]
	for i := 1; i < len(syms); i++ {
		t.queuePair(&q, syms, s, int32(i-1), int32(i))
	}
	for len(q) > 0 {
		p := q.pop()
		left := p.left()
		l := &syms[left]
		// Skip a pair whose symbols changed since it was queued: the
		// left one was merged into its own left neighbour (n == 0),
		// absorbed its right neighbour, or the right one grew. In each
		// case the sizes no longer add up.
		if l.n == 0 || l.next < 0 {
			continue
		}
		r := &syms[l.next]
		if l.n+r.n != p.size {
			continue
		}
		l.n += r.n
		l.id = p.id
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = left
		}
		t.queuePair(&q, syms, s, l.prev, left)
		t.queuePair(&q, syms, s, left, l.next)
	}
	sc.q = q // keep the grown buffer for the next word

	for i := int32(0); i >= 0; i = syms[i].next {
		sym := syms[i]
		if sym.id >= 0 {
			out = append(out, sym.id)
			continue
		}
		text := s[sym.start : sym.start+sym.n]
		if id, ok := t.pieces[text]; ok {
			out = append(out, id)
			continue
		}
		for j := 0; j < len(text); j++ {
			out = append(out, t.byteID[text[j]])
		}
	}
	return out
}

// queuePair queues the pair of adjacent symbols left and right if their
// concatenation is a piece.
func (t *Tokenizer) queuePair(q *bigramQueue, syms []symbol, s string, left, right int32) {
	if left < 0 || right < 0 {
		return
	}
	size := syms[left].n + syms[right].n
	if int(size) > t.maxPiece {
		return
	}
	start := syms[left].start
	id, ok := t.pieces[s[start:start+size]]
	if !ok {
		return
	}
	q.push(bigram{key: bigramKey(t.vocab.scoreOf(int(id)), left), size: size, id: id})
}

// bigram is a candidate merge of symbol left (in key) with the symbol
// after it into piece id.
type bigram struct {
	key  uint64 // orders the queue; see bigramKey
	size int32  // length of the merged text, to detect stale pairs
	id   int32
}

// bigramKey packs a pair's score and left index so that a smaller key
// comes first: higher score first, and among equal scores the leftmost,
// as llama.cpp's llm_bigram_spm orders pairs. One integer comparison is
// cheaper than comparing floats, then indexes.
func bigramKey(score float32, left int32) uint64 {
	// Map the float's bits to an unsigned integer that sorts the same
	// way, then invert it so that high scores get small keys.
	b := math.Float32bits(score)
	if b&(1<<31) != 0 {
		b = ^b
	} else {
		b |= 1 << 31
	}
	return uint64(^b)<<32 | uint64(uint32(left))
}

func (b bigram) left() int32 { return int32(uint32(b.key)) }

// bigramQueue is a binary min-heap of bigrams by key. (container/heap
// would box every element in an interface.)
type bigramQueue []bigram

func (q *bigramQueue) push(b bigram) {
	*q = append(*q, b)
	h := *q
	i := len(h) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if h[parent].key <= b.key {
			break
		}
		h[i] = h[parent]
		i = parent
	}
	h[i] = b
}

func (q *bigramQueue) pop() bigram {
	h := *q
	top := h[0]
	last := h[len(h)-1]
	h = h[:len(h)-1]
	*q = h
	if len(h) == 0 {
		return top
	}
	// Sift the last element down from the root.
	i := 0
	for {
		c := 2*i + 1
		if c >= len(h) {
			break
		}
		if r := c + 1; r < len(h) && h[r].key < h[c].key {
			c = r
		}
		if last.key <= h[c].key {
			break
		}
		h[i] = h[c]
		i = c
	}
	h[i] = last
	return top
}

// matcher finds the longest of a set of strings (special pieces) that
// starts at a given position, with a byte trie: the work per position is
// bounded by the length of the longest string, whatever their number, so
// scanning hostile input stays linear in its length.
type matcher struct {
	edges map[uint64]int32 // node<<8 | byte → child node
	ids   []int32          // token id ending at each node, -1 if none
	first [256]bool        // bytes that start some string
}

func (m *matcher) init() {
	m.edges = map[uint64]int32{}
	m.ids = []int32{-1} // the root
}

// empty reports whether the matcher holds no string.
func (m *matcher) empty() bool { return len(m.ids) == 1 }

// add inserts s for id; the first id added for a text keeps it.
func (m *matcher) add(s string, id int32) {
	if s == "" {
		return
	}
	m.first[s[0]] = true
	node := int32(0)
	for i := 0; i < len(s); i++ {
		key := uint64(node)<<8 | uint64(s[i])
		child, ok := m.edges[key]
		if !ok {
			child = int32(len(m.ids))
			m.ids = append(m.ids, -1)
			m.edges[key] = child
		}
		node = child
	}
	if m.ids[node] < 0 {
		m.ids[node] = id
	}
}

// longest returns the length and id of the longest string that starts at
// s[i], or 0 if none does.
func (m *matcher) longest(s string, i int) (n int, id int32) {
	if !m.first[s[i]] {
		return 0, -1
	}
	node := int32(0)
	for j := i; j < len(s); j++ {
		child, ok := m.edges[uint64(node)<<8|uint64(s[j])]
		if !ok {
			break
		}
		node = child
		if m.ids[node] >= 0 {
			n, id = j+1-i, m.ids[node]
		}
	}
	return n, id
}
