// Package engine serves many generation requests on one model at once
// with continuous (iteration-level) batching: every step of its loop runs
// one forward pass over a batch that holds the next token of every
// decoding sequence and, in the room left, chunks of waiting prompts. A
// request joins the batch between two steps and leaves it the moment it
// ends or its caller goes away, so short requests never wait for long
// ones.
//
// The KV cache is slotted: the model state holds Slots sequences of
// ContextSize positions each, and a running sequence owns one slot. A
// slot keeps the tokens of its last sequence after it ends, so a new
// prompt that starts the same way (a shared system prompt, a chat that
// goes on) skips the positions already computed.
//
// Admission follows Azure ML's requestSettings: at most MaxConcurrent
// sequences run; up to MaxQueued more wait (first come, first served);
// beyond that Submit fails at once with ErrQueueFull, and one that waits
// longer than MaxQueueWait ends with ErrQueueWait.
package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/sample"
	"github.com/leo-operator/leo/runtime/tokenizer"
)

// Config sizes an engine.
type Config struct {
	// MaxConcurrent is how many sequences run in the batch at once; each
	// holds a KV cache slot. Default 16.
	MaxConcurrent int
	// MaxQueued is how many sequences may wait for a slot; more are
	// refused with ErrQueueFull. 0 means 4×MaxConcurrent, -1 none.
	MaxQueued int
	// ContextSize is the positions of one sequence, prompt and generated
	// tokens together. Default (0): the model's context length.
	ContextSize int
	// BatchTokens is the most tokens one forward pass takes: every
	// decoding sequence's next token, and prompt chunks in the rest.
	// Default 256; at least MaxConcurrent.
	BatchTokens int
	// MaxQueueWait, when > 0, is how long a request may wait for a slot
	// (Azure ML's maxQueueWaitMs): one none of whose sequences has a slot
	// by then ends with ErrQueueWait (HTTP 429). 0: as long as its context
	// allows.
	MaxQueueWait time.Duration
	// KVCacheBytes, when > 0, caps the KV cache's memory: MaxConcurrent is
	// lowered to the slots that fit (an error if not even one does).
	KVCacheBytes int64
	// KVCacheTokens, when > 0, caps the KV cache's size in positions, all
	// sequences together (Azure ML-style kvCacheTokens): MaxConcurrent is
	// lowered to the whole contexts that fit (an error if not one does).
	KVCacheTokens int
	// KVType is the KV cache's element type: F32 (the zero value) or F16
	// (llama.cpp's default, which leo-runtime serve uses too: half the
	// memory, and half the bytes attention reads at each step).
	KVType quant.Type
}

// Errors Submit returns for requests it refuses.
var (
	// ErrQueueFull: MaxQueued sequences already wait (HTTP 429).
	ErrQueueFull = errors.New("too many pending requests")
	// ErrClosed: the engine is shutting down and admits nothing new (503).
	ErrClosed = errors.New("the engine is shutting down")
	// ErrQueueWait ends a sequence that waited MaxQueueWait for a slot
	// without getting one (HTTP 429).
	ErrQueueWait = errors.New("no free slot within the queue wait")
)

// InputError is a request the engine cannot run as given (HTTP 400): a
// prompt too long for the context, bad sampling parameters.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// Request is one sequence to generate.
type Request struct {
	Prompt []int32 // the prompt's tokens, BOS included where the model wants one
	Params sample.Params
}

// Engine runs requests on a model. Its methods are safe for concurrent
// use; one goroutine (Run) owns the model state.
type Engine struct {
	model *model.Model
	tok   *tokenizer.Tokenizer
	cfg   Config
	state *model.State
	eos   []int32

	mu      sync.Mutex
	queue   []*sequence // waiting for a slot, oldest first
	running int         // sequences holding a slot (read by Stats)
	closed  bool
	wake    chan struct{} // cap 1: work arrived or a caller went away
	done    chan struct{} // closed when Run returns

	stats counters

	// Owned by the Run goroutine.
	slots  []slot
	active []*sequence
	batch  model.Batch
	owners []*sequence // owners[i] is the sequence of batch token i
	// picks are this step's sequences that get a token, sampled in
	// parallel (each has its own sampler) before they are streamed in order.
	picks picks
	clock uint64 // orders slot use, for least-recently-used reuse
}

// slot is one sequence's room in the KV cache. cached holds the tokens
// whose keys and values are in the slot at positions 0..len-1; they stay
// valid after the sequence ends, for a later prompt with the same prefix.
type slot struct {
	cached   []int32
	lastUsed uint64
	busy     bool
}

// New makes an engine for m. Call Run to start it.
func New(m *model.Model, tok *tokenizer.Tokenizer, cfg Config) (*Engine, error) {
	if tok.VocabSize() != m.Config.VocabSize {
		return nil, fmt.Errorf("the tokenizer has %d tokens but the model's vocabulary has %d", tok.VocabSize(), m.Config.VocabSize)
	}
	c, err := cfg.withDefaults(m.Config)
	if err != nil {
		return nil, err
	}
	st, err := m.NewStateKV(c.MaxConcurrent, c.ContextSize, c.BatchTokens, c.KVType)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		model: m, tok: tok, cfg: c, state: st,
		wake: make(chan struct{}, 1), done: make(chan struct{}),
		slots:  make([]slot, c.MaxConcurrent),
		owners: make([]*sequence, 0, c.BatchTokens),
		batch: model.Batch{
			Tokens: make([]int32, 0, c.BatchTokens), Pos: make([]int, 0, c.BatchTokens),
			Seq: make([]int, 0, c.BatchTokens), Logits: make([]bool, 0, c.BatchTokens),
		},
	}
	if tok.EOS() >= 0 {
		e.eos = []int32{tok.EOS()}
	}
	prefault(st.Cache)
	for i := range e.slots {
		e.slots[i].cached = make([]int32, 0, c.ContextSize)
	}
	return e, nil
}

// prefault touches every page of the KV cache, so that the memory is
// taken now, when the server starts (and fails to start if it is not
// there), rather than page by page by the first requests, which would
// make them slow.
func prefault(c *model.Cache) {
	for l := range c.K {
		touch(c.K[l])
		touch(c.V[l])
	}
	for l := range c.K16 {
		touch(c.K16[l])
		touch(c.V16[l])
	}
}

func touch[T float32 | uint16](s []T) {
	step := 4096 / int(unsafe.Sizeof(s[0]))
	for i := 0; i < len(s); i += step {
		s[i] = 0
	}
}

// KVBytesPerPosition is the KV cache memory one position of one sequence
// takes: keys and values of every layer, in elements of type t.
func KVBytesPerPosition(c model.Config, t quant.Type) int64 {
	return int64(c.Layers) * 2 * int64(c.KVDim()) * int64(t.BlockBytes())
}

func (cfg Config) withDefaults(mc model.Config) (Config, error) {
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = 16
	}
	if cfg.ContextSize == 0 {
		cfg.ContextSize = mc.ContextLength
	}
	if cfg.BatchTokens == 0 {
		cfg.BatchTokens = 256
	}
	switch {
	case cfg.MaxConcurrent < 1:
		return cfg, fmt.Errorf("max concurrent requests must be >= 1 (got %d)", cfg.MaxConcurrent)
	case cfg.MaxQueued < -1:
		return cfg, fmt.Errorf("max queued requests must be >= -1 (got %d); -1 means none", cfg.MaxQueued)
	case cfg.ContextSize < 2 || cfg.ContextSize > mc.ContextLength:
		return cfg, fmt.Errorf("context size must be in [2, %d], the model's context length (got %d)", mc.ContextLength, cfg.ContextSize)
	case cfg.KVCacheBytes < 0:
		return cfg, fmt.Errorf("KV cache budget must be >= 0 bytes (got %d)", cfg.KVCacheBytes)
	case cfg.KVCacheTokens < 0:
		return cfg, fmt.Errorf("KV cache tokens must be >= 0 (got %d)", cfg.KVCacheTokens)
	case cfg.MaxQueueWait < 0:
		return cfg, fmt.Errorf("max queue wait must be >= 0 (got %v)", cfg.MaxQueueWait)
	}
	if cfg.KVCacheTokens > 0 {
		fit := cfg.KVCacheTokens / cfg.ContextSize
		if fit < 1 {
			return cfg, fmt.Errorf("a KV cache of %d tokens holds no sequence of %d positions; raise it to at least the context size, or lower the context size",
				cfg.KVCacheTokens, cfg.ContextSize)
		}
		cfg.MaxConcurrent = min(cfg.MaxConcurrent, fit)
	}
	if cfg.KVCacheBytes > 0 {
		perSlot := KVBytesPerPosition(mc, cfg.KVType) * int64(cfg.ContextSize)
		fit := cfg.KVCacheBytes / perSlot
		if fit < 1 {
			return cfg, fmt.Errorf("a KV cache budget of %d MiB holds no sequence: one of %d positions takes %d MiB; raise the budget or lower the context size",
				cfg.KVCacheBytes>>20, cfg.ContextSize, (perSlot+1<<20-1)>>20)
		}
		cfg.MaxConcurrent = int(min(int64(cfg.MaxConcurrent), fit))
	}
	switch cfg.MaxQueued {
	case 0:
		cfg.MaxQueued = 4 * cfg.MaxConcurrent
	case -1:
		cfg.MaxQueued = 0
	}
	if cfg.BatchTokens < cfg.MaxConcurrent {
		return cfg, fmt.Errorf("batch tokens (%d) must be at least max concurrent requests (%d), so every running sequence can decode each step", cfg.BatchTokens, cfg.MaxConcurrent)
	}
	return cfg, nil
}

// Config returns the engine's settings, defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// Submit queues the requests as one unit (all or none) and returns a
// Stream per request, in order. The sequences run until they finish, ctx
// is done (cancelled: the caller went away; deadline: it timed out) or
// the engine stops; their slots are freed at once in every case.
//
// Submit fails with an *InputError for a request the engine cannot run,
// ErrQueueFull when there is no room to wait, ErrClosed after Close.
func (e *Engine) Submit(ctx context.Context, reqs ...Request) ([]*Stream, error) {
	if len(reqs) == 0 {
		return nil, &InputError{errors.New("no sequences to generate")}
	}
	if len(reqs) > e.cfg.MaxConcurrent+e.cfg.MaxQueued {
		return nil, &InputError{fmt.Errorf("a request asks for %d sequences; this server runs at most %d at once and queues %d", len(reqs), e.cfg.MaxConcurrent, e.cfg.MaxQueued)}
	}
	seqs := make([]*sequence, len(reqs))
	now := time.Now()
	unit := &submission{}
	for i, r := range reqs {
		if err := e.check(r); err != nil {
			return nil, &InputError{err}
		}
		seqs[i] = &sequence{
			ctx: ctx, prompt: r.Prompt, params: r.Params, submitted: now, unit: unit,
			tokens: append(make([]int32, 0, len(r.Prompt)+min(r.Params.MaxNewTokens, e.cfg.ContextSize)), r.Prompt...),
			stream: newStream(), dec: e.tok.NewDecoder(), stop: sample.NewStopMatcher(r.Params.Stop),
		}
	}
	// Wake the loop when a caller goes away, so that its slot is freed
	// before the next step rather than when the loop next looks. Set
	// before the sequences are queued: the loop may end them at once.
	stop := context.AfterFunc(ctx, e.signal)
	streams := make([]*Stream, len(seqs))
	for i, s := range seqs {
		streams[i] = s.stream
		s.stopWatch = stop
	}
	e.mu.Lock()
	switch {
	case e.closed:
		e.mu.Unlock()
		stop()
		return nil, ErrClosed
	case e.waitingRoom() < len(seqs):
		e.mu.Unlock()
		stop()
		e.stats.rejected.Add(1)
		return nil, ErrQueueFull
	}
	e.queue = append(e.queue, seqs...)
	e.mu.Unlock()
	e.signal()
	return streams, nil
}

// waitingRoom is how many more sequences Submit may queue. Free slots
// count as room: a sequence there waits for a moment at most.
func (e *Engine) waitingRoom() int {
	return e.cfg.MaxConcurrent - e.running + e.cfg.MaxQueued - len(e.queue)
}

func (e *Engine) check(r Request) error {
	if len(r.Prompt) == 0 {
		return errors.New("the prompt has no tokens")
	}
	if len(r.Prompt) >= e.cfg.ContextSize {
		return fmt.Errorf("the prompt has %d tokens; this server's context holds %d, which leaves no room to generate", len(r.Prompt), e.cfg.ContextSize)
	}
	for i, t := range r.Prompt {
		if t < 0 || int(t) >= e.model.Config.VocabSize {
			return fmt.Errorf("prompt token %d at index %d is not in the vocabulary of %d tokens", t, i, e.model.Config.VocabSize)
		}
	}
	return r.Params.Validate()
}

func (e *Engine) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Close stops admitting requests. Running and queued ones go on to the
// end; Run returns when they are done or its context is.
func (e *Engine) Close() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.signal()
}

// Done is closed when Run has returned.
func (e *Engine) Done() <-chan struct{} { return e.done }

// Run is the engine's loop; it returns when ctx is done (ending every
// request with ctx's error) or after Close once no request is left.
func (e *Engine) Run(ctx context.Context) {
	defer close(e.done)
	// The state's cache may be a GPU's memory: free it before Done.
	defer func() { _ = e.state.Close() }() // freeing device memory fails only with a broken device
	for {
		e.admit()
		e.expireWaits()
		e.dropGone()
		if len(e.active) == 0 {
			e.mu.Lock()
			idle, closed := len(e.queue) == 0, e.closed
			e.mu.Unlock()
			if idle && closed {
				return
			}
			if idle {
				select {
				case <-e.wake:
				case <-ctx.Done():
				}
			}
		}
		if ctx.Err() != nil {
			e.abort(ctx.Err())
			return
		}
		if len(e.active) > 0 {
			e.step()
		}
	}
}

// abort ends every running and queued sequence with err.
func (e *Engine) abort(err error) {
	e.mu.Lock()
	e.closed = true
	queued := e.queue
	e.queue = nil
	e.mu.Unlock()
	for _, s := range queued {
		s.end(sample.FinishNone, err)
	}
	e.sweep(func(*sequence) (bool, error) { return true, err })
}

// admit moves queued sequences into free slots, oldest first, skipping
// those whose caller already went away.
func (e *Engine) admit() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for len(e.queue) > 0 && len(e.active) < len(e.slots) {
		s := e.queue[0]
		e.queue[0] = nil
		e.queue = e.queue[1:]
		if err := s.ctx.Err(); err != nil {
			s.end(sample.FinishNone, err)
			continue
		}
		// The sampler's buffers (a vocabulary's worth when sampling) are
		// made only now, not for every sequence waiting in the queue.
		smp, err := sample.New(s.params, e.model.Config.VocabSize, e.eos)
		if err != nil { // Submit validated the parameters
			s.end(sample.FinishNone, err)
			continue
		}
		s.sampler = smp
		s.slot = e.pickSlot(s.prompt)
		sl := &e.slots[s.slot]
		sl.busy = true
		// Reuse the cached prefix, but always run the prompt's last token:
		// its logits give the first generated token.
		s.pos = min(commonPrefix(sl.cached, s.prompt), len(s.prompt)-1)
		sl.cached = sl.cached[:s.pos]
		s.reused = s.pos
		s.admitted = time.Now()
		s.unit.started = true
		e.active = append(e.active, s)
		e.stats.reusedTokens.Add(int64(s.pos))
	}
	e.running = len(e.active)
}

// expireWaits ends, with ErrQueueWait, the queued requests that have
// waited MaxQueueWait (admit has just given every free slot away, oldest
// first, so these found none). A request of several sequences waits as a
// whole: once one of them has a slot, the others wait for theirs (they
// may be waiting for their own siblings' slots), and one refused is
// counted once. The loop looks once a step: a wait may run over by a
// step's time.
func (e *Engine) expireWaits() {
	if e.cfg.MaxQueueWait <= 0 {
		return
	}
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	kept := e.queue[:0]
	for _, s := range e.queue {
		if !s.unit.started && now.Sub(s.submitted) >= e.cfg.MaxQueueWait {
			s.end(sample.FinishNone, ErrQueueWait)
			if !s.unit.expired {
				s.unit.expired = true
				e.stats.rejected.Add(1)
			}
			continue
		}
		kept = append(kept, s)
	}
	clear(e.queue[len(kept):])
	e.queue = kept
}

// pickSlot returns the free slot whose cached tokens share the longest
// prefix with prompt, or else the least recently used free slot.
func (e *Engine) pickSlot(prompt []int32) int {
	best, bestLen := -1, -1
	for i := range e.slots {
		sl := &e.slots[i]
		if sl.busy {
			continue
		}
		n := commonPrefix(sl.cached, prompt)
		if n > bestLen || (n == bestLen && sl.lastUsed < e.slots[best].lastUsed) {
			best, bestLen = i, n
		}
	}
	return best
}

func commonPrefix(a, b []int32) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// dropGone ends the running sequences whose caller went away (or timed
// out), freeing their slots before the next step.
func (e *Engine) dropGone() {
	e.sweep(func(s *sequence) (bool, error) { err := s.ctx.Err(); return err != nil, err })
}

// sweep releases the running sequences for which ended says so, with the
// error it gives (nil: finished), and keeps the others in order.
func (e *Engine) sweep(ended func(*sequence) (bool, error)) {
	kept := e.active[:0]
	for _, s := range e.active {
		if done, err := ended(s); done {
			e.release(s, err)
			continue
		}
		kept = append(kept, s)
	}
	clear(e.active[len(kept):])
	e.active = kept
	e.noteLoad()
}

// noteLoad publishes the running count and KV cache use for Stats.
func (e *Engine) noteLoad() {
	var used int64
	for _, s := range e.active {
		used += int64(s.pos)
	}
	e.stats.kvUsed.Store(used)
	e.mu.Lock()
	e.running = len(e.active)
	e.mu.Unlock()
}

// release frees s's slot and ends its stream with err (nil: finished).
func (e *Engine) release(s *sequence, err error) {
	sl := &e.slots[s.slot]
	sl.busy = false
	e.clock++
	sl.lastUsed = e.clock
	s.end(s.finish, err)
}

// step runs one forward pass: the next token of every decoding sequence,
// then prompt chunks, oldest request first, while there is room.
func (e *Engine) step() {
	b := &e.batch
	b.Tokens, b.Pos, b.Seq, b.Logits = b.Tokens[:0], b.Pos[:0], b.Seq[:0], b.Logits[:0]
	e.owners = e.owners[:0]
	add := func(s *sequence, tok int32, logits bool) {
		b.Tokens = append(b.Tokens, tok)
		b.Pos = append(b.Pos, s.pos)
		b.Seq = append(b.Seq, s.slot)
		b.Logits = append(b.Logits, logits)
		e.owners = append(e.owners, s)
		e.slots[s.slot].cached = append(e.slots[s.slot].cached, tok)
		s.pos++
	}
	for _, s := range e.active {
		if s.pos >= len(s.prompt) { // decoding: feed the last token
			add(s, s.tokens[s.pos], true)
		}
	}
	for _, s := range e.active {
		for s.pos < len(s.prompt) && len(b.Tokens) < e.cfg.BatchTokens {
			add(s, s.prompt[s.pos], s.pos == len(s.prompt)-1)
		}
	}
	e.stats.batchTokens.Add(int64(len(b.Tokens)))
	e.stats.steps.Add(1)

	logits, err := e.state.Forward(b)
	if err != nil {
		// A bug, not bad input (the engine checks every request): end the
		// sequences of this batch, and forget their slots' contents.
		e.failBatch(fmt.Errorf("forward pass: %w", err))
		return
	}
	vocab := e.model.Config.VocabSize
	e.picks.seqs, e.picks.toks, e.picks.logits, e.picks.vocab = e.picks.seqs[:0], e.picks.toks[:0], logits, vocab
	for i, s := range e.owners {
		if b.Logits[i] {
			e.picks.seqs = append(e.picks.seqs, s)
			e.picks.toks = append(e.picks.toks, 0)
		}
	}
	// Sampling is per token and would otherwise run on one thread while the
	// others wait: a step of many sequences spends a good part of its time
	// there (greedy scans the whole vocabulary per token).
	if len(e.picks.seqs) > 1 {
		e.model.Parallel(len(e.picks.seqs), &e.picks)
	} else {
		e.picks.Range(0, len(e.picks.seqs))
	}
	for i, s := range e.picks.seqs {
		e.accept(s, e.picks.toks[i])
	}
	e.sweep(func(s *sequence) (bool, error) { return s.finish != sample.FinishNone, nil })
}

func (e *Engine) failBatch(err error) {
	failed := map[*sequence]bool{}
	for _, s := range e.owners {
		failed[s] = true
	}
	e.sweep(func(s *sequence) (bool, error) {
		if failed[s] {
			e.slots[s.slot].cached = e.slots[s.slot].cached[:0]
		}
		return failed[s], err
	})
}

// picks samples the next token of sequences, row i of logits being
// sequence i's scores.
type picks struct {
	seqs   []*sequence
	toks   []int32
	logits []float32
	vocab  int
}

func (p *picks) Range(start, end int) {
	for i := start; i < end; i++ {
		s := p.seqs[i]
		p.toks[i] = s.sampler.Next(p.logits[i*p.vocab:(i+1)*p.vocab], s.tokens, len(s.tokens)-len(s.prompt))
	}
}

// accept appends s's sampled token and streams its text.
func (e *Engine) accept(s *sequence, tok int32) {
	generated := len(s.tokens) - len(s.prompt)
	s.tokens = append(s.tokens, tok)
	generated++
	e.stats.generatedTokens.Add(1)
	if generated == 1 {
		s.firstToken = time.Now()
		e.stats.promptTokens.Add(int64(len(s.prompt) - s.reused))
	}
	s.finish = s.sampler.Finish(tok, generated)
	if s.finish != sample.FinishEOS {
		emitted, stopped := s.stop.Push(s.dec.Next(tok))
		s.stream.push(emitted)
		if stopped {
			s.finish = sample.FinishStop
		}
	}
	if s.finish == sample.FinishNone && len(s.tokens) >= e.cfg.ContextSize {
		s.finish = sample.FinishLength // the context is full
	}
	if s.finish != sample.FinishNone && s.finish != sample.FinishStop {
		// Bytes held for an unfinished UTF-8 character, then text held
		// as a possible start of a stop string.
		emitted, stopped := s.stop.Push(s.dec.Flush())
		s.stream.push(emitted)
		if stopped {
			s.finish = sample.FinishStop
		} else {
			s.stream.push(s.stop.Flush())
		}
	}
}

// Stats is a snapshot of the engine's load, for metrics.
type Stats struct {
	Queued, Running, Slots int
	// KVUsed is the cache positions held by running sequences; KVTotal
	// all positions (Slots × ContextSize).
	KVUsed, KVTotal int64
	// Counters since start.
	GeneratedTokens, PromptTokens, ReusedPromptTokens int64
	Steps, BatchTokens, Rejected                      int64
}

// Stats returns the current load. KVUsed is approximate while a step runs.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	st := Stats{Queued: len(e.queue), Running: e.running, Slots: e.cfg.MaxConcurrent}
	e.mu.Unlock()
	st.KVUsed = e.stats.kvUsed.Load()
	st.KVTotal = int64(e.cfg.MaxConcurrent) * int64(e.cfg.ContextSize)
	st.GeneratedTokens = e.stats.generatedTokens.Load()
	st.PromptTokens = e.stats.promptTokens.Load()
	st.ReusedPromptTokens = e.stats.reusedTokens.Load()
	st.Steps = e.stats.steps.Load()
	st.BatchTokens = e.stats.batchTokens.Load()
	st.Rejected = e.stats.rejected.Load()
	return st
}
