package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leo-operator/leo/internal/testmodel"
	"github.com/leo-operator/leo/runtime/engine"
	"github.com/leo-operator/leo/runtime/generate"
	"github.com/leo-operator/leo/runtime/loader"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/sample"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testmodel.Cleanup()
	os.Exit(code)
}

var prompts = []string{
	"Once upon a time, there was a little robot",
	"The meaning of life is",
	"Lily and Ben went to the park. They saw a big dog",
	"def fibonacci(n):",
	"Tom had a red ball. He",
	"In the morning the sun",
	"A B C D E F",
	"Once upon a time, there was a little girl",
}

func greedy(maxNew int) sample.Params {
	p := sample.DefaultParams()
	p.MaxNewTokens = maxNew
	return p
}

// start runs an engine on the model until the test ends.
func start(t *testing.T, l *loader.Loaded, cfg engine.Config) *engine.Engine {
	t.Helper()
	e, err := engine.New(l.Model, l.Tokenizer, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go e.Run(ctx)
	t.Cleanup(func() {
		cancel()
		<-e.Done()
	})
	return e
}

func submit(t *testing.T, e *engine.Engine, ctx context.Context, reqs ...engine.Request) []*engine.Stream {
	t.Helper()
	ss, err := e.Submit(ctx, reqs...)
	if err != nil {
		t.Fatal(err)
	}
	return ss
}

func wait(t *testing.T, s *engine.Stream) engine.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := s.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// alone generates each prompt greedily on its own, with the single-
// sequence generator: what the engine must reproduce however it batches.
func alone(t *testing.T, l *loader.Loaded, maxNew int) []generate.Result {
	t.Helper()
	g, err := generate.New(l.Model, l.Tokenizer, testmodel.Tiny.ContextLength, 64)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]generate.Result, len(prompts))
	for i, p := range prompts {
		if out[i], err = g.Run(context.Background(), l.Tokenizer.Encode(p, true), greedy(maxNew), nil); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// Sequences batched together, joining at different times and with
// prompts split over several steps, each get exactly the tokens they get
// alone: batching never mixes sequences' caches or logits.
func TestBatchedEqualsAlone(t *testing.T) {
	l := testmodel.Load(t, testmodel.Tiny, quant.Q8_0)
	const maxNew = 40
	want := alone(t, l, maxNew)
	// 4 slots for 8 prompts: half wait and join as others leave; a batch
	// of 12 tokens splits prompts over steps and mixes them with decodes.
	e := start(t, l, engine.Config{MaxConcurrent: 4, BatchTokens: 12})
	var wg sync.WaitGroup
	got := make([]engine.Result, len(prompts))
	for i, p := range prompts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ss, err := e.Submit(context.Background(), engine.Request{Prompt: l.Tokenizer.Encode(p, true), Params: greedy(maxNew)})
			if err != nil {
				t.Error(err)
				return
			}
			got[i], err = ss[0].Wait(context.Background())
			if err != nil {
				t.Error(err)
			}
		}()
		time.Sleep(time.Duration(i) * time.Millisecond) // stagger the arrivals
	}
	wg.Wait()
	for i := range prompts {
		if got[i].Text != want[i].Text || fmt.Sprint(got[i].Tokens) != fmt.Sprint(want[i].Tokens) {
			t.Errorf("prompt %q:\nbatched %q %v\nalone   %q %v", prompts[i], got[i].Text, got[i].Tokens, want[i].Text, want[i].Tokens)
		}
		if got[i].Finish != want[i].Finish {
			t.Errorf("prompt %q: finish %q, alone %q", prompts[i], got[i].Finish, want[i].Finish)
		}
	}
	st := e.Stats()
	if st.Steps == 0 || st.BatchTokens <= st.Steps {
		t.Errorf("stats %+v: expected steps that batched several tokens", st)
	}
}

// A prompt that extends an earlier one reuses the cached positions and
// still produces what it produces alone.
func TestPrefixReuse(t *testing.T) {
	l := testmodel.Load(t, testmodel.Tiny, quant.Q8_0)
	e := start(t, l, engine.Config{MaxConcurrent: 2})
	first := l.Tokenizer.Encode(prompts[0], true)
	r1 := wait(t, submit(t, e, context.Background(), engine.Request{Prompt: first, Params: greedy(8)})[0])
	if r1.ReusedPromptTokens != 0 {
		t.Fatalf("first request reused %d tokens from an empty cache", r1.ReusedPromptTokens)
	}
	// A chat that goes on: the earlier prompt, its answer, more text.
	longer := append(append(append([]int32{}, first...), r1.Tokens...), l.Tokenizer.Encode(" and then", false)...)
	r2 := wait(t, submit(t, e, context.Background(), engine.Request{Prompt: longer, Params: greedy(8)})[0])
	// The last generated token was never fed, so its position is not cached.
	if want := len(first) + len(r1.Tokens) - 1; r2.ReusedPromptTokens != want {
		t.Errorf("reused %d prompt tokens, want %d", r2.ReusedPromptTokens, want)
	}
	g, err := generate.New(l.Model, l.Tokenizer, testmodel.Tiny.ContextLength, 64)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := g.Run(context.Background(), longer, greedy(8), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Text != fresh.Text {
		t.Errorf("with a reused prefix: %q; computed afresh: %q", r2.Text, fresh.Text)
	}
	// The same prompt again: everything but its last token is reused.
	r3 := wait(t, submit(t, e, context.Background(), engine.Request{Prompt: longer, Params: greedy(8)})[0])
	if r3.ReusedPromptTokens != len(longer)-1 || r3.Text != fresh.Text {
		t.Errorf("same prompt again: reused %d of %d, text %q (want %q)", r3.ReusedPromptTokens, len(longer), r3.Text, fresh.Text)
	}
}

// Seeded sampling is reproducible however the sequences are batched.
func TestSeededSamplingInBatch(t *testing.T) {
	l := testmodel.Load(t, testmodel.Tiny, quant.Q8_0)
	e := start(t, l, engine.Config{MaxConcurrent: 4})
	p := sample.DefaultParams()
	p.DoSample, p.Temperature, p.TopP, p.MaxNewTokens = true, 0.9, 0.95, 30
	req := func(seed uint64) engine.Request {
		q := p
		q.Seed = &seed
		return engine.Request{Prompt: l.Tokenizer.Encode(prompts[1], true), Params: q}
	}
	one := wait(t, submit(t, e, context.Background(), req(42))[0])
	ss := submit(t, e, context.Background(), req(42), req(43), req(42))
	a, b, c := wait(t, ss[0]), wait(t, ss[1]), wait(t, ss[2])
	if a.Text != one.Text || c.Text != one.Text {
		t.Errorf("seed 42 gave %q alone but %q and %q in a batch", one.Text, a.Text, c.Text)
	}
	if a.Seed != 42 || b.Seed != 43 {
		t.Errorf("seeds reported %d, %d", a.Seed, b.Seed)
	}
	if b.Text == a.Text {
		t.Errorf("seeds 42 and 43 gave the same %d tokens: %q", len(a.Tokens), a.Text)
	}
}

func TestStreamDeltasMakeTheText(t *testing.T) {
	l := testmodel.Load(t, testmodel.Tiny, quant.Q8_0)
	e := start(t, l, engine.Config{MaxConcurrent: 2})
	s := submit(t, e, context.Background(), engine.Request{Prompt: l.Tokenizer.Encode(prompts[2], true), Params: greedy(50)})[0]
	var sb strings.Builder
	pieces := 0
	for {
		piece, err := s.Recv(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sb.WriteString(piece)
		pieces++
	}
	r, err := s.Result()
	if err != nil {
		t.Fatal(err)
	}
	if sb.String() != r.Text || pieces == 0 {
		t.Errorf("%d pieces make %q; result text %q", pieces, sb.String(), r.Text)
	}
	if len(r.Tokens) != 50 || r.Finish != sample.FinishLength {
		t.Errorf("%d tokens, finish %q; want 50, length", len(r.Tokens), r.Finish)
	}
	if r.TimeToFirstToken <= 0 || r.PromptTokens != len(l.Tokenizer.Encode(prompts[2], true)) {
		t.Errorf("result %+v", r)
	}
}

// waitFor polls cond until it holds or a minute passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// long is a request that runs until its context ends.
func long(l *loader.Loaded) engine.Request {
	p := greedy(1 << 20)
	p.IgnoreEOS = true
	return engine.Request{Prompt: l.Tokenizer.Encode(prompts[0], true), Params: p}
}

func TestQueueFullAndCancel(t *testing.T) {
	l := testmodel.Load(t, testmodel.Tiny, quant.Q8_0)
	e := start(t, l, engine.Config{MaxConcurrent: 1, MaxQueued: 1})
	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	s1 := submit(t, e, ctx1, long(l))[0]
	s2 := submit(t, e, ctx2, long(l))[0]
	waitFor(t, "one running, one queued", func() bool { st := e.Stats(); return st.Running == 1 && st.Queued == 1 })

	if _, err := e.Submit(context.Background(), long(l)); !errors.Is(err, engine.ErrQueueFull) {
		t.Fatalf("third request: %v, want ErrQueueFull", err)
	}
	if st := e.Stats(); st.Rejected != 1 || st.Queued != 1 {
		t.Errorf("after a refusal: %+v", st)
	}

	// The caller of the running one goes away: its slot goes to the
	// queued one at once.
	cancel1()
	if _, err := s1.Wait(context.Background()); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled sequence ended with %v", err)
	}
	waitFor(t, "the queued request to run", func() bool { st := e.Stats(); return st.Running == 1 && st.Queued == 0 })
	if _, err := s2.Recv(context.Background()); err != nil {
		t.Errorf("admitted request: %v", err)
	}
	cancel2()
	waitFor(t, "an idle engine", func() bool { st := e.Stats(); return st.Running == 0 && st.KVUsed == 0 })
}

func TestDeadline(t *testing.T) {
	// Long's 8192 positions take seconds to fill; Tiny's 256 took under
	// the 20 ms deadline now and then, and the sequence ended by length.
	l := testmodel.Load(t, testmodel.Long, quant.Q8_0)
	e := start(t, l, engine.Config{MaxConcurrent: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	r, err := submit(t, e, ctx, long(l))[0].Wait(context.Background())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	if r.Finish != sample.FinishNone {
		t.Errorf("a timed-out sequence has finish reason %q", r.Finish)
	}
}

func TestRefusals(t *testing.T) {
	l := testmodel.Load(t, testmodel.Tiny, quant.Q8_0)
	e := start(t, l, engine.Config{MaxConcurrent: 2, MaxQueued: 2, ContextSize: 32})
	tooLong := l.Tokenizer.Encode(strings.Repeat("hello world ", 20), true)
	bad := greedy(10)
	bad.Temperature = -1
	for name, reqs := range map[string][]engine.Request{
		"prompt over the context": {{Prompt: tooLong, Params: greedy(1)}},
		"empty prompt":            {{Prompt: nil, Params: greedy(1)}},
		"token outside the vocab": {{Prompt: []int32{1, 40000}, Params: greedy(1)}},
		"bad parameters":          {{Prompt: []int32{1}, Params: bad}},
		"more than fits":          make([]engine.Request, 5),
		"nothing":                 nil,
	} {
		_, err := e.Submit(context.Background(), reqs...)
		var ie *engine.InputError
		if !errors.As(err, &ie) {
			t.Errorf("%s: got %v, want an InputError", name, err)
		}
	}
	// The context fills before max_new_tokens: the sequence ends "length".
	r := wait(t, submit(t, e, context.Background(), long(l))[0])
	if r.Finish != sample.FinishLength || r.PromptTokens+len(r.Tokens) != 32 {
		t.Errorf("finish %q with %d+%d tokens; want length at 32", r.Finish, r.PromptTokens, len(r.Tokens))
	}
}

func TestKVBudget(t *testing.T) {
	l := testmodel.Load(t, testmodel.Tiny, quant.Q8_0)
	perSlot := engine.KVBytesPerPosition(testmodel.Tiny, quant.F32) * 100
	e, err := engine.New(l.Model, l.Tokenizer, engine.Config{MaxConcurrent: 8, ContextSize: 100, KVCacheBytes: 3*perSlot + 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Config().MaxConcurrent; got != 3 {
		t.Errorf("a budget of 3 slots gave %d", got)
	}
	if _, err := engine.New(l.Model, l.Tokenizer, engine.Config{ContextSize: 100, KVCacheBytes: perSlot - 1}); err == nil || !strings.Contains(err.Error(), "holds no sequence") {
		t.Errorf("a budget below one slot: %v", err)
	}
}

// kvCacheTokens sizes the cache in whole contexts.
func TestKVCacheTokens(t *testing.T) {
	l := testmodel.Load(t, testmodel.Tiny, quant.Q8_0)
	e, err := engine.New(l.Model, l.Tokenizer, engine.Config{MaxConcurrent: 8, ContextSize: 100, KVCacheTokens: 250})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Config().MaxConcurrent; got != 2 {
		t.Errorf("250 tokens of contexts of 100 gave %d slots, want 2", got)
	}
	if _, err := engine.New(l.Model, l.Tokenizer, engine.Config{ContextSize: 100, KVCacheTokens: 99}); err == nil || !strings.Contains(err.Error(), "holds no sequence") {
		t.Errorf("fewer tokens than one context: %v", err)
	}
}

// A request that waits MaxQueueWait for a slot ends with ErrQueueWait;
// the running one goes on, and the next waits anew.
func TestQueueWait(t *testing.T) {
	// Long's 8192 positions keep the slot busy for seconds (Tiny's 256
	// fill in less than the wait).
	l := testmodel.Load(t, testmodel.Long, quant.Q8_0)
	const wait = 50 * time.Millisecond
	e := start(t, l, engine.Config{MaxConcurrent: 1, MaxQueued: 2, MaxQueueWait: wait})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	running := submit(t, e, ctx, long(l))[0]
	if _, err := running.Recv(context.Background()); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_, err := submit(t, e, ctx, long(l))[0].Wait(context.Background())
	waited := time.Since(began)
	if !errors.Is(err, engine.ErrQueueWait) {
		t.Fatalf("the queued request ended with %v, want ErrQueueWait", err)
	}
	if waited < wait {
		t.Errorf("it ended after %v, before the %v wait", waited, wait)
	}
	if st := e.Stats(); st.Running != 1 || st.Queued != 0 || st.Rejected != 1 {
		t.Errorf("after the expiry: %+v", st)
	}
	if _, err := running.Recv(context.Background()); err != nil {
		t.Errorf("the running request: %v", err)
	}
	t.Logf("a queued request ended %v after it was submitted (wait %v)", waited.Round(time.Millisecond), wait)

	// A request of two sequences that finds no slot is refused once.
	for _, s := range submit(t, e, ctx, long(l), long(l)) {
		if _, err := s.Wait(context.Background()); !errors.Is(err, engine.ErrQueueWait) {
			t.Errorf("a sequence of the queued pair ended with %v, want ErrQueueWait", err)
		}
	}
	if st := e.Stats(); st.Rejected != 2 {
		t.Errorf("Rejected %d after a pair was refused, want 2", st.Rejected)
	}

	// On a free slot, a pair's first sequence runs and its second waits
	// for that slot past the queue wait: the request is running, not
	// refused.
	cancel()
	waitFor(t, "an idle engine", func() bool { st := e.Stats(); return st.Running == 0 && st.Queued == 0 })
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	pair := submit(t, e, ctx2, long(l), long(l))
	short, stop := context.WithTimeout(context.Background(), 4*wait)
	defer stop()
	if _, err := pair[1].Wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("the second sequence of a running pair ended with %v after %v; want it still waiting", err, 4*wait)
	}
}

func TestCloseDrains(t *testing.T) {
	l := testmodel.Load(t, testmodel.Tiny, quant.Q8_0)
	e, err := engine.New(l.Model, l.Tokenizer, engine.Config{MaxConcurrent: 1})
	if err != nil {
		t.Fatal(err)
	}
	ss := submit(t, e, context.Background(), engine.Request{Prompt: []int32{1}, Params: greedy(20)}, engine.Request{Prompt: []int32{1, 2}, Params: greedy(20)})
	e.Close()
	if _, err := e.Submit(context.Background(), engine.Request{Prompt: []int32{1}, Params: greedy(1)}); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
	go e.Run(context.Background())
	for i, s := range ss {
		if r := wait(t, s); len(r.Tokens) == 0 {
			t.Errorf("sequence %d admitted before Close got no tokens", i)
		}
	}
	select {
	case <-e.Done():
	case <-time.After(time.Minute):
		t.Fatal("Run did not return after Close with nothing left")
	}
}
