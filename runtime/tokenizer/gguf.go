package tokenizer

import (
	"fmt"

	"github.com/leo-operator/leo/runtime/gguf"
)

// The GGUF keys of a tokenizer, as llama.cpp writes them.
const (
	keyModel     = "tokenizer.ggml.model"
	keyTokens    = "tokenizer.ggml.tokens"
	keyScores    = "tokenizer.ggml.scores"
	keyTypes     = "tokenizer.ggml.token_type"
	keyBOS       = "tokenizer.ggml.bos_token_id"
	keyEOS       = "tokenizer.ggml.eos_token_id"
	keyUNK       = "tokenizer.ggml.unknown_token_id"
	keyPAD       = "tokenizer.ggml.padding_token_id"
	keyAddBOS    = "tokenizer.ggml.add_bos_token"
	keyAddEOS    = "tokenizer.ggml.add_eos_token"
	keyAddPrefix = "tokenizer.ggml.add_space_prefix"
)

// VocabFromGGUF reads a SentencePiece ("llama") vocabulary from a GGUF
// file's tokenizer.ggml.* metadata, with llama.cpp's defaults for absent
// keys.
func VocabFromGGUF(f *gguf.File) (Vocab, error) {
	kind, err := f.String(keyModel)
	if err != nil {
		return Vocab{}, fmt.Errorf("no tokenizer: %w", err)
	}
	if kind != "llama" {
		return Vocab{}, fmt.Errorf("%s is %q; leo reads SentencePiece vocabularies (\"llama\")", keyModel, kind)
	}
	v := Vocab{BOS: 1, EOS: 2, UNK: 0, PAD: -1, AddBOS: true, AddSpacePrefix: true}
	if v.Tokens, err = f.Strings(keyTokens); err != nil {
		return Vocab{}, err
	}
	if _, ok := f.Lookup(keyScores); ok {
		if v.Scores, err = f.Float32s(keyScores); err != nil {
			return Vocab{}, err
		}
	}
	if _, ok := f.Lookup(keyTypes); ok {
		types, err := f.Int32s(keyTypes)
		if err != nil {
			return Vocab{}, err
		}
		v.Types = make([]TokenType, len(types))
		for i, t := range types {
			v.Types[i] = TokenType(t)
		}
	}
	for key, dst := range map[string]*int32{keyBOS: &v.BOS, keyEOS: &v.EOS, keyUNK: &v.UNK, keyPAD: &v.PAD} {
		if _, ok := f.Lookup(key); !ok {
			continue
		}
		id, err := f.Uint(key)
		if err != nil {
			return Vocab{}, err
		}
		if id >= uint64(len(v.Tokens)) {
			return Vocab{}, fmt.Errorf("%s = %d is not one of the %d tokens", key, id, len(v.Tokens))
		}
		*dst = int32(id)
	}
	for key, dst := range map[string]*bool{keyAddBOS: &v.AddBOS, keyAddEOS: &v.AddEOS, keyAddPrefix: &v.AddSpacePrefix} {
		if _, ok := f.Lookup(key); !ok {
			continue
		}
		if *dst, err = f.Bool(key); err != nil {
			return Vocab{}, err
		}
	}
	return v, nil
}

// FromGGUF builds the tokenizer a GGUF model file carries.
func FromGGUF(f *gguf.File) (*Tokenizer, error) {
	v, err := VocabFromGGUF(f)
	if err != nil {
		return nil, err
	}
	return New(v)
}

// WriteGGUF records v under the tokenizer.ggml.* keys, as llama.cpp's
// converter writes a SentencePiece vocabulary.
func WriteGGUF(w *gguf.Writer, v Vocab) {
	w.SetString(keyModel, "llama")
	w.SetStrings(keyTokens, v.Tokens)
	scores := v.Scores
	if scores == nil {
		scores = make([]float32, len(v.Tokens))
	}
	w.SetFloat32s(keyScores, scores)
	types := make([]int32, len(v.Tokens))
	for i := range types {
		types[i] = int32(Normal)
		if v.Types != nil {
			types[i] = int32(v.Types[i])
		}
	}
	w.SetInt32s(keyTypes, types)
	// In a fixed order: the same vocabulary must give the same bytes.
	for _, s := range []struct {
		key string
		id  int32
	}{{keyBOS, v.BOS}, {keyEOS, v.EOS}, {keyUNK, v.UNK}, {keyPAD, v.PAD}} {
		if s.id >= 0 {
			w.SetUint32(s.key, uint32(s.id))
		}
	}
	w.SetBool(keyAddBOS, v.AddBOS)
	w.SetBool(keyAddEOS, v.AddEOS)
	w.SetBool(keyAddPrefix, v.AddSpacePrefix)
}
