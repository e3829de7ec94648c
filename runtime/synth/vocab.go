package synth

import (
	_ "embed"
	"sync"

	"github.com/leo-operator/leo/runtime/tokenizer"
)

//go:embed llama2-tokenizer.model
var llama2TokenizerModel []byte

var llama2Vocab = sync.OnceValues(func() (tokenizer.Vocab, error) {
	return tokenizer.ParseSentencePiece(llama2TokenizerModel)
})

// Llama2Vocab returns Meta's Llama 2 vocabulary (32,000 SentencePiece
// tokens), embedded in the binary; see NOTICE.md. Callers must not modify
// the returned slices.
func Llama2Vocab() (tokenizer.Vocab, error) { return llama2Vocab() }

// Llama2TokenizerModel returns the bytes of Meta's tokenizer.model (the
// SentencePiece model file a Hugging Face Llama 2 checkpoint carries).
// Callers must not modify them.
func Llama2TokenizerModel() []byte { return llama2TokenizerModel }
