package tokenizer

import (
	"fmt"
	"math"
)

// TokenType is the kind of a vocabulary entry, numbered as SentencePiece's
// ModelProto.SentencePiece.Type and as GGUF's tokenizer.ggml.token_type.
type TokenType int32

// The token types. Only Normal and UserDefined pieces are produced from
// plain text; Control and Unknown pieces are produced only from their
// written form by EncodeSpecial; Byte pieces stand for one byte each.
const (
	Normal      TokenType = 1 // an ordinary piece; "▁" in it stands for a space
	Unknown     TokenType = 2 // the unknown piece (<unk>)
	Control     TokenType = 3 // control symbols such as <s> and </s>; decode to nothing
	UserDefined TokenType = 4 // always matched as a whole in the input, decoded verbatim
	Unused      TokenType = 5 // reserved; never produced by Encode, decodes to nothing
	Byte        TokenType = 6 // byte fallback piece <0xXX>
)

// String names the type as SentencePiece does.
func (t TokenType) String() string {
	switch t {
	case Normal:
		return "NORMAL"
	case Unknown:
		return "UNKNOWN"
	case Control:
		return "CONTROL"
	case UserDefined:
		return "USER_DEFINED"
	case Unused:
		return "UNUSED"
	case Byte:
		return "BYTE"
	}
	return fmt.Sprintf("TokenType(%d)", int32(t))
}

// MaxVocabSize bounds the number of tokens a vocabulary may have, so that
// ids fit int32 with room to spare and a hostile file cannot make New build
// tables of unbounded size. Real vocabularies have 32,000 to 256,000 tokens.
const MaxVocabSize = 1 << 24

// Vocab is a SentencePiece vocabulary as GGUF stores it (the
// tokenizer.ggml.* keys) and as ParseSentencePiece reads it from a
// tokenizer.model file. Token ids are indexes into Tokens.
//
// An adapter filling it from GGUF maps: tokens → Tokens, scores → Scores,
// token_type → Types, bos_token_id → BOS, eos_token_id → EOS,
// unknown_token_id → UNK, padding_token_id → PAD, add_bos_token → AddBOS,
// add_eos_token → AddEOS, add_space_prefix → AddSpacePrefix. Where a key
// is absent, llama.cpp's defaults for a "llama" (SPM) vocabulary are
// AddBOS true, AddEOS false, AddSpacePrefix true, and absent ids are -1.
type Vocab struct {
	// Tokens holds each token's piece text, with "▁" (U+2581) for a space.
	Tokens []string
	// Scores ranks merges: the adjacent pair whose concatenation has the
	// highest score is merged first. nil means all zero.
	Scores []float32
	// Types holds each token's TokenType. nil means all Normal.
	Types []TokenType
	// BOS, EOS, UNK and PAD are special token ids, -1 where the vocabulary
	// has none.
	BOS, EOS, UNK, PAD int32
	// AddBOS and AddEOS say whether Encode and EncodeSpecial frame the
	// text with BOS and EOS when asked to add special tokens.
	AddBOS, AddEOS bool
	// AddSpacePrefix adds a space in front of the text (SentencePiece's
	// add_dummy_prefix), so that the first word is tokenized like any
	// other word; Decode removes it again.
	AddSpacePrefix bool
}

// validate checks the vocabulary's internal consistency; New calls it.
func (v *Vocab) validate() error {
	n := len(v.Tokens)
	if n == 0 {
		return fmt.Errorf("tokenizer: vocabulary has no tokens; the tokenizer file or the GGUF key tokenizer.ggml.tokens is empty")
	}
	if n > MaxVocabSize {
		return fmt.Errorf("tokenizer: vocabulary has %d tokens, more than the %d this tokenizer accepts", n, MaxVocabSize)
	}
	if v.Scores != nil && len(v.Scores) != n {
		return fmt.Errorf("tokenizer: %d scores for %d tokens; tokenizer.ggml.scores must have one entry per token", len(v.Scores), n)
	}
	if v.Types != nil && len(v.Types) != n {
		return fmt.Errorf("tokenizer: %d token types for %d tokens; tokenizer.ggml.token_type must have one entry per token", len(v.Types), n)
	}
	for i, s := range v.Scores {
		if math.IsNaN(float64(s)) {
			return fmt.Errorf("tokenizer: score of token %d (%q) is NaN; the vocabulary is corrupt", i, v.Tokens[i])
		}
	}
	for i, t := range v.Types {
		if t < Normal || t > Byte {
			return fmt.Errorf("tokenizer: token %d (%q) has type %d; want 1 (normal) to 6 (byte)", i, v.Tokens[i], int32(t))
		}
		if t == Byte {
			if _, ok := parseByteToken(v.Tokens[i]); !ok {
				return fmt.Errorf("tokenizer: token %d has type BYTE but its text %q is not of the form <0xXX>", i, v.Tokens[i])
			}
		}
	}
	for _, s := range []struct {
		name string
		id   int32
	}{{"BOS", v.BOS}, {"EOS", v.EOS}, {"UNK", v.UNK}, {"PAD", v.PAD}} {
		if s.id < -1 || int(s.id) >= n {
			return fmt.Errorf("tokenizer: %s token id %d is outside the vocabulary of %d tokens (use -1 for none)", s.name, s.id, n)
		}
	}
	if v.AddBOS && v.BOS < 0 {
		return fmt.Errorf("tokenizer: AddBOS (add_bos_token) is set but the vocabulary has no BOS token id")
	}
	if v.AddEOS && v.EOS < 0 {
		return fmt.Errorf("tokenizer: AddEOS (add_eos_token) is set but the vocabulary has no EOS token id")
	}
	return nil
}

// typeOf returns token id's type, Normal where the vocabulary has no types.
func (v *Vocab) typeOf(id int) TokenType {
	if v.Types == nil {
		return Normal
	}
	return v.Types[id]
}

// scoreOf returns token id's score, 0 where the vocabulary has no scores.
func (v *Vocab) scoreOf(id int) float32 {
	if v.Scores == nil {
		return 0
	}
	return v.Scores[id]
}

// parseByteToken reads the byte that a byte-fallback piece "<0xXX>" stands
// for. Hex digits may be upper or lower case.
func parseByteToken(s string) (byte, bool) {
	if len(s) != 6 || s[:3] != "<0x" || s[5] != '>' {
		return 0, false
	}
	hi, ok1 := hexDigit(s[3])
	lo, ok2 := hexDigit(s[4])
	if !ok1 || !ok2 {
		return 0, false
	}
	return hi<<4 | lo, true
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
