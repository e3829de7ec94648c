package batch

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/leo-operator/leo/runtime/chat"
	"github.com/leo-operator/leo/runtime/engine"
	"github.com/leo-operator/leo/runtime/tokenizer"
)

// EngineScorer scores jobs on an engine: every job of every Score call in
// flight is a sequence of the same engine, so that the engine batches the
// rows of all mini-batches continuously. At most the engine's slots plus
// its queue are submitted at once (more would be refused); the others
// wait their turn here, in the order they came.
type EngineScorer struct {
	e    *engine.Engine
	tok  *tokenizer.Tokenizer
	chat chat.Template
	sem  chan struct{} // a token per sequence submitted and not yet done
}

// NewEngineScorer scores on e (started by the caller), formatting
// conversations with tmpl.
func NewEngineScorer(e *engine.Engine, tok *tokenizer.Tokenizer, tmpl chat.Template) *EngineScorer {
	c := e.Config()
	return &EngineScorer{e: e, tok: tok, chat: tmpl, sem: make(chan struct{}, c.MaxConcurrent+c.MaxQueued)}
}

// Score implements Scorer.
func (s *EngineScorer) Score(ctx context.Context, jobs []Job) ([]Result, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	results := make([]Result, len(jobs))
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range jobs {
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		wg.Go(func() {
			defer func() { <-s.sem }()
			res, err := s.one(ctx, jobs[i])
			var ie *engine.InputError
			switch {
			case errors.As(err, &ie):
				res.Err = err // this row only
			case err != nil:
				cancel(err) // the engine failed, or ctx ended: the whole call fails
			}
			results[i] = res
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return results, nil
}

// one generates one job.
func (s *EngineScorer) one(ctx context.Context, j Job) (Result, error) {
	var prompt []int32
	if j.Messages != nil {
		msgs := make([]chat.Message, len(j.Messages))
		for i, m := range j.Messages {
			msgs[i] = chat.Message{Role: m.Role, Content: m.Content}
		}
		ids, err := s.chat.Encode(s.tok, msgs)
		if err != nil {
			return Result{}, &engine.InputError{Err: err}
		}
		prompt = ids
	} else {
		prompt = s.tok.Encode(j.Prompt, true)
	}
	var streams []*engine.Stream
	for {
		var err error
		streams, err = s.e.Submit(ctx, engine.Request{Prompt: prompt, Params: j.Params})
		if err == nil {
			break
		}
		// The semaphore keeps within the engine's room, but a sequence
		// that just ended may hold its slot for a moment more.
		if !errors.Is(err, engine.ErrQueueFull) {
			return Result{}, err
		}
		select {
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
	r, err := streams[0].Wait(ctx)
	if err != nil {
		return Result{}, err
	}
	return Result{Text: r.Text, Finish: r.Finish, PromptTokens: r.PromptTokens, CompletionTokens: len(r.Tokens)}, nil
}
