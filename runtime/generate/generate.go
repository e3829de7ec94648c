// Package generate runs one sequence through a model: it processes the
// prompt in batches, then picks tokens one at a time with a sampler until
// EOS, max_new_tokens or a stop string, streaming the text as it goes.
// (Serving many sequences at once is the engine's job.)
package generate

import (
	"context"
	"fmt"
	"time"

	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/sample"
	"github.com/leo-operator/leo/runtime/tokenizer"
)

// Generator owns a model state for one sequence at a time.
type Generator struct {
	model *model.Model
	state *model.State
	tok   *tokenizer.Tokenizer
	batch int
	ctx   int

	// Reused between calls so that the decode loop does not allocate.
	seq      []int32
	batchBuf model.Batch
}

// New makes a generator with a context of ctxLen positions, feeding the
// prompt batch tokens at a time.
func New(m *model.Model, tok *tokenizer.Tokenizer, ctxLen, batch int) (*Generator, error) {
	if tok.VocabSize() != m.Config.VocabSize {
		return nil, fmt.Errorf("the tokenizer has %d tokens but the model's vocabulary has %d", tok.VocabSize(), m.Config.VocabSize)
	}
	st, err := m.NewState(1, ctxLen, batch)
	if err != nil {
		return nil, err
	}
	g := &Generator{model: m, state: st, tok: tok, batch: batch, ctx: ctxLen, seq: make([]int32, 0, ctxLen)}
	g.batchBuf = model.Batch{Tokens: make([]int32, 0, batch), Pos: make([]int, 0, batch), Seq: make([]int, batch)}
	return g, nil
}

// Close frees the generator's state (on a GPU, its KV cache's device
// memory); the generator is unusable afterwards.
func (g *Generator) Close() error { return g.state.Close() }

// Result is a finished generation.
type Result struct {
	Prompt []int32             // the prompt's tokens
	Tokens []int32             // the generated tokens (a stop string's tokens included)
	Text   string              // the generated text, ending before a stop string
	Finish sample.FinishReason // why it ended
	// PromptTime is the time to process the prompt (and pick the first
	// token); GenTime the time for the tokens after the first.
	PromptTime, GenTime time.Duration
}

// Run generates a continuation of prompt. emit, when set, receives the
// text as it is generated (never half a UTF-8 character, never a piece of
// a stop string); an error from it stops generation and is returned.
func (g *Generator) Run(ctx context.Context, prompt []int32, p sample.Params, emit func(string) error) (Result, error) {
	res := Result{Prompt: prompt}
	if len(prompt) == 0 {
		return res, fmt.Errorf("the prompt has no tokens")
	}
	if len(prompt) >= g.ctx {
		return res, fmt.Errorf("the prompt has %d tokens; the context holds %d, so nothing would be left to generate", len(prompt), g.ctx)
	}
	eos := []int32{}
	if g.tok.EOS() >= 0 {
		eos = append(eos, g.tok.EOS())
	}
	smp, err := sample.New(p, g.model.Config.VocabSize, eos)
	if err != nil {
		return res, err
	}
	start := time.Now()
	g.seq = append(g.seq[:0], prompt...)
	logits, err := g.prefill(ctx, prompt)
	if err != nil {
		return res, err
	}
	dec := g.tok.NewDecoder()
	stop := sample.NewStopMatcher(p.Stop)
	var text []byte
	out := func(s string) error {
		if s == "" {
			return nil
		}
		text = append(text, s...)
		if emit != nil {
			return emit(s)
		}
		return nil
	}
	genStart := time.Now()
	for generated := 1; ; generated++ {
		tok := smp.Next(logits, g.seq, generated-1)
		g.seq = append(g.seq, tok)
		res.Tokens = append(res.Tokens, tok)
		if generated == 1 {
			res.PromptTime, genStart = time.Since(start), time.Now()
		}
		res.Finish = smp.Finish(tok, generated)
		if res.Finish != sample.FinishEOS {
			emitted, stopped := stop.Push(dec.Next(tok))
			if err := out(emitted); err != nil {
				return res, err
			}
			if stopped {
				res.Finish = sample.FinishStop
			}
		}
		if res.Finish == sample.FinishNone && len(g.seq) >= g.ctx {
			res.Finish = sample.FinishLength // the context is full
		}
		if res.Finish != sample.FinishNone {
			break
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if logits, err = g.Step(tok, len(g.seq)-1); err != nil {
			return res, err
		}
	}
	if res.Finish != sample.FinishStop {
		// Bytes held for an unfinished UTF-8 character, then text held as a
		// possible start of a stop string.
		emitted, stopped := stop.Push(dec.Flush())
		if err := out(emitted); err != nil {
			return res, err
		}
		if stopped {
			res.Finish = sample.FinishStop
		} else if err := out(stop.Flush()); err != nil {
			return res, err
		}
	}
	res.GenTime = time.Since(genStart)
	res.Text = string(text)
	return res, nil
}

// prefill runs the prompt through the model in batches and returns the
// logits after its last token.
func (g *Generator) prefill(ctx context.Context, prompt []int32) ([]float32, error) {
	var logits []float32
	for start := 0; start < len(prompt); start += g.batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		end := min(start+g.batch, len(prompt))
		b := &g.batchBuf
		b.Tokens, b.Pos, b.Seq = b.Tokens[:0], b.Pos[:0], b.Seq[:end-start]
		for i := start; i < end; i++ {
			b.Tokens = append(b.Tokens, prompt[i])
			b.Pos = append(b.Pos, i)
		}
		var err error
		if logits, err = g.state.Forward(b); err != nil {
			return nil, err
		}
	}
	return logits, nil
}

// Step runs one token at position pos and returns the logits that follow
// it. It is the decode loop's model call and does not allocate.
func (g *Generator) Step(tok int32, pos int) ([]float32, error) {
	b := &g.batchBuf
	b.Tokens, b.Pos, b.Seq = append(b.Tokens[:0], tok), append(b.Pos[:0], pos), b.Seq[:1]
	return g.state.Forward(b)
}

// Prefill runs tokens at positions 0.. as a prompt (in batches) and
// returns the logits after the last one; for benchmarks.
func (g *Generator) Prefill(ctx context.Context, tokens []int32) ([]float32, error) {
	return g.prefill(ctx, tokens)
}
