// Package testmodel gives tests a small Llama model with random weights
// and the real Llama 2 vocabulary, written as a GGUF file once per test
// binary and loaded as leo-runtime loads any model.
package testmodel

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/leo-operator/leo/runtime/loader"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/synth"
)

// Tiny is a Llama with grouped-query attention and the real Llama 2
// vocabulary, small enough that a decode step takes well under a
// millisecond, with a context of 256 positions.
var Tiny = model.Config{
	Dim: 64, HiddenDim: 128, Layers: 2, Heads: 4, KVHeads: 2, VocabSize: 32000,
	ContextLength: 256, RopeBase: 10000, RopeDim: 16, NormEps: 1e-5,
}

// Long is Tiny with a context of 8192 positions: generating thousands of
// tokens takes seconds, so that a test can keep a request running (a
// disconnect, a timeout during generation, a stream). Its file is as small
// as Tiny's: the context length is only metadata.
var Long = func() model.Config {
	c := Tiny
	c.ContextLength = 8192
	return c
}()

var cache struct {
	mu    sync.Mutex
	dir   string
	files map[string]string
}

// Path writes the model of shape c and weight type t (seed 7) into a
// directory shared by the test binary, once, and returns its path.
func Path(tb testing.TB, c model.Config, t quant.Type) string {
	tb.Helper()
	cache.mu.Lock()
	defer cache.mu.Unlock()
	key := t.String() + "-" + configKey(c)
	if p, ok := cache.files[key]; ok {
		return p
	}
	if cache.dir == "" {
		dir, err := os.MkdirTemp("", "leo-testmodel-")
		if err != nil {
			tb.Fatal(err)
		}
		cache.dir, cache.files = dir, map[string]string{}
	}
	vocab, err := synth.Llama2Vocab()
	if err != nil {
		tb.Fatal(err)
	}
	p := filepath.Join(cache.dir, key+".gguf")
	if err := synth.Write(p, synth.Options{Name: "tiny", Config: c, Type: t, Seed: 7, Vocab: vocab}); err != nil {
		tb.Fatal(err)
	}
	cache.files[key] = p
	return p
}

// Load writes (once) and loads the model of shape c and type t on up to
// two threads; it is closed when the test ends.
func Load(tb testing.TB, c model.Config, t quant.Type) *loader.Loaded {
	tb.Helper()
	l, err := loader.Open(Path(tb, c, t), min(2, runtime.NumCPU()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(l.Close)
	return l
}

// Cleanup removes the files written by Path; call it from TestMain after
// the tests ran.
func Cleanup() {
	cache.mu.Lock()
	defer cache.mu.Unlock()
	if cache.dir != "" {
		_ = os.RemoveAll(cache.dir) // a temporary directory; the OS cleans up what is left
		cache.dir, cache.files = "", nil
	}
}

func configKey(c model.Config) string {
	return fmt.Sprintf("d%d-h%d-l%d-q%d-kv%d-v%d-ctx%d", c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KVHeads, c.VocabSize, c.ContextLength)
}
