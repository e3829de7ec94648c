package engine

import (
	"context"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leo-operator/leo/runtime/sample"
	"github.com/leo-operator/leo/runtime/tokenizer"
)

// sequence is one request in the engine: waiting, then running in a slot.
// Its fields are the Run goroutine's, except stream.
type sequence struct {
	ctx       context.Context
	stopWatch func() bool // stops the context.AfterFunc that wakes the loop
	prompt    []int32
	tokens    []int32 // prompt, then generated tokens
	params    sample.Params
	sampler   *sample.Sampler // made when the sequence gets a slot
	dec       *tokenizer.Decoder
	stop      *sample.StopMatcher
	stream    *Stream

	slot   int
	pos    int // positions of this sequence already in the slot's cache
	reused int // of which this many came from an earlier sequence
	finish sample.FinishReason

	submitted, admitted, firstToken time.Time

	// unit is what the sequences of one Submit share (guarded by the
	// engine's mu).
	unit *submission
}

// submission is one Submit's sequences as a whole: the queue wait
// applies to it until one of them gets a slot, and it is refused once.
type submission struct {
	started bool // a sequence of it has a slot
	expired bool // it waited too long, and was counted as refused
}

// end finishes s's stream; err nil means it finished with reason.
func (s *sequence) end(reason sample.FinishReason, err error) {
	if s.stopWatch != nil {
		s.stopWatch()
	}
	now := time.Now()
	r := Result{
		Finish:             reason,
		PromptTokens:       len(s.prompt),
		ReusedPromptTokens: s.reused,
	}
	switch {
	case s.sampler != nil:
		r.Seed = s.sampler.Seed()
	case s.params.Seed != nil:
		r.Seed = *s.params.Seed
	}
	if len(s.tokens) > len(s.prompt) {
		r.Tokens = s.tokens[len(s.prompt):]
	}
	if !s.admitted.IsZero() {
		r.Queued = s.admitted.Sub(s.submitted)
	} else {
		r.Queued = now.Sub(s.submitted)
	}
	if !s.firstToken.IsZero() {
		r.TimeToFirstToken = s.firstToken.Sub(s.submitted)
		r.GenTime = now.Sub(s.firstToken)
	}
	s.stream.finish(r, err)
}

// Result is a finished (or ended) sequence.
type Result struct {
	Text   string              // the generated text, ending before a stop string
	Tokens []int32             // the generated tokens (a stop string's included)
	Finish sample.FinishReason // why it ended; "" when it ended with an error
	// PromptTokens is the prompt's length; ReusedPromptTokens how many of
	// its positions came from the cache of an earlier sequence.
	PromptTokens, ReusedPromptTokens int
	Seed                             uint64 // the sampler's seed, to reproduce the output
	// Queued is the wait for a slot; TimeToFirstToken runs from Submit
	// to the first generated token; GenTime from there to the end.
	Queued, TimeToFirstToken, GenTime time.Duration
}

// Stream delivers one sequence's text as it is generated. The engine
// never waits for its reader: text piles up until read. One goroutine
// reads a Stream, with Recv or with Wait.
type Stream struct {
	mu     sync.Mutex
	unread []string
	text   strings.Builder
	done   bool
	res    Result
	err    error
	notify chan struct{} // cap 1: something new
}

func newStream() *Stream { return &Stream{notify: make(chan struct{}, 1)} }

func (s *Stream) push(piece string) {
	if piece == "" {
		return
	}
	s.mu.Lock()
	s.unread = append(s.unread, piece)
	s.text.WriteString(piece)
	s.mu.Unlock()
	s.poke()
}

func (s *Stream) finish(r Result, err error) {
	s.mu.Lock()
	r.Text = s.text.String()
	s.res, s.err, s.done = r, err, true
	s.mu.Unlock()
	s.poke()
}

func (s *Stream) poke() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Recv returns the text generated since the last call, waiting for some.
// After the last piece it returns io.EOF, or the error that ended the
// sequence (the Submit context's error when the caller went away or
// timed out). It returns ctx's error if ctx is done first.
func (s *Stream) Recv(ctx context.Context) (string, error) {
	for {
		s.mu.Lock()
		if len(s.unread) > 0 {
			text := strings.Join(s.unread, "")
			clear(s.unread)
			s.unread = s.unread[:0]
			s.mu.Unlock()
			return text, nil
		}
		done, err := s.done, s.err
		s.mu.Unlock()
		if done {
			if err == nil {
				err = io.EOF
			}
			return "", err
		}
		select {
		case <-s.notify:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// Wait waits for the end of the sequence and returns its result, with the
// error that ended it early, if any (then the result holds what was
// generated until then).
func (s *Stream) Wait(ctx context.Context) (Result, error) {
	for {
		s.mu.Lock()
		done, res, err := s.done, s.res, s.err
		s.mu.Unlock()
		if done {
			return res, err
		}
		select {
		case <-s.notify:
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
}

// Result returns the result of a finished stream (after Recv returned an
// error or Wait returned).
func (s *Stream) Result() (Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.res, s.err
}

// counters are the engine's running totals, read by Stats from any
// goroutine.
type counters struct {
	generatedTokens, promptTokens, reusedTokens atomic.Int64
	steps, batchTokens, rejected, kvUsed        atomic.Int64
}
