package batch_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/leo-operator/leo/internal/testmodel"
	"github.com/leo-operator/leo/runtime/engine"
	"github.com/leo-operator/leo/runtime/loader"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/sample"
)

// runAll generates every prompt on an engine of maxConcurrent slots, all
// submitted at once, and returns the generated tokens.
func runAll(t *testing.T, l *loader.Loaded, maxConcurrent int, kv quant.Type, prompts []string, params func(i int) sample.Params) [][]int32 {
	t.Helper()
	e, err := engine.New(l.Model, l.Tokenizer, engine.Config{MaxConcurrent: maxConcurrent, MaxQueued: len(prompts), KVType: kv})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); <-e.Done() }()
	go e.Run(ctx)
	out := make([][]int32, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		ss, err := e.Submit(ctx, engine.Request{Prompt: l.Tokenizer.Encode(p, true), Params: params(i)})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			r, err := ss[0].Wait(ctx)
			if err != nil {
				t.Error(err)
			}
			out[i] = r.Tokens
		})
	}
	wg.Wait()
	return out
}

// A row's generated tokens do not depend on which rows share the engine's
// batch: what makes a resumed run's output byte-identical to an
// uninterrupted one's. Greedy and seeded sampling, F32 and F16 KV caches.
func TestEngineOutputIndependentOfBatching(t *testing.T) {
	l := testmodel.Load(t, testmodel.Tiny, quant.Q8_0)
	prompts := make([]string, 48)
	for i := range prompts {
		prompts[i] = fmt.Sprintf("Row %d: once upon a time there were %d cats and", i, i*7%13)
	}
	greedy := func(int) sample.Params { p := sample.DefaultParams(); p.MaxNewTokens = 24; return p }
	seeded := func(i int) sample.Params {
		p := greedy(i)
		p.DoSample, p.Temperature, p.TopP = true, 0.9, 0.95
		seed := uint64(1000 + i)
		p.Seed = &seed
		return p
	}
	for _, kv := range []quant.Type{quant.F32, quant.F16} {
		for name, params := range map[string]func(int) sample.Params{"greedy": greedy, "seeded": seeded} {
			one := runAll(t, l, 1, kv, prompts, params)
			many := runAll(t, l, 16, kv, prompts, params)
			diff := 0
			for i := range prompts {
				if fmt.Sprint(one[i]) != fmt.Sprint(many[i]) {
					diff++
					t.Errorf("%s kv %s row %d: alone %v, batched %v", name, kv, i, one[i], many[i])
				}
			}
			t.Logf("%s, KV %s: %d of %d rows differ between 1 and 16 concurrent sequences", name, kv, diff, len(prompts))
		}
	}
}
