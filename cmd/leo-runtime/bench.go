package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/leo-operator/leo/internal/stats"
	"github.com/leo-operator/leo/runtime/cpu"
	"github.com/leo-operator/leo/runtime/generate"
	"github.com/leo-operator/leo/runtime/sample"
)

// benchResult is what `leo-runtime bench` prints; the JSON keys are the
// ones `make bench` and the llama.cpp peer share.
type benchResult struct {
	Model        string  `json:"model"`
	Threads      int     `json:"threads"`
	PromptTokens int     `json:"prompt_tokens"`
	GenTokens    int     `json:"gen_tokens"`
	PromptTokS   float64 `json:"prompt_tok_s"`
	GenTokS      float64 `json:"gen_tok_s"`
	// FileBytes is the model file's size: about what one generated token
	// reads, since every weight is read once per token.
	FileBytes int64 `json:"file_bytes"`
	// BandwidthGBs is the measured memory read bandwidth with Threads
	// threads; GenBoundTokS = bandwidth / file bytes is the fastest
	// generation memory allows.
	BandwidthGBs float64 `json:"bandwidth_gb_s"`
	GenBoundTokS float64 `json:"gen_bound_tok_s"`
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	modelPath := fs.String("model", "", "GGUF model file")
	threads := fs.Int("threads", runtime.NumCPU(), "CPU threads")
	promptN := fs.Int("prompt", 128, "prompt tokens, processed as one batch")
	genN := fs.Int("gen", 64, "tokens generated one at a time after the prompt")
	reps := fs.Int("reps", 3, "repetitions; the median is reported")
	asJSON := fs.Bool("json", false, "print JSON")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the measured runs to this file (go tool pprof)")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := required(map[string]string{"model": *modelPath}); err != nil {
		return err
	}
	if *promptN < 1 || *genN < 1 || *reps < 1 {
		return usagef("--prompt, --gen and --reps must be at least 1")
	}
	l, err := load(*modelPath, *threads, stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	c := l.Model.Config
	if *promptN+*genN > c.ContextLength {
		return usagef("--prompt + --gen = %d exceeds the model's context length %d", *promptN+*genN, c.ContextLength)
	}
	g, err := generate.New(l.Model, l.Tokenizer, *promptN+*genN, *promptN)
	if err != nil {
		return err
	}
	defer func() { _ = g.Close() }() // freeing device memory fails only with a broken device
	// Random tokens, as llama-bench uses: speed does not depend on them.
	rng := rand.New(rand.NewPCG(1, 2))
	prompt := make([]int32, *promptN)
	for i := range prompt {
		prompt[i] = int32(3 + rng.IntN(c.VocabSize-3))
	}
	once := func() (promptSec, genSec float64, err error) {
		start := time.Now()
		logits, err := g.Prefill(ctx, prompt)
		if err != nil {
			return 0, 0, err
		}
		promptSec = time.Since(start).Seconds()
		start = time.Now()
		for i := 0; i < *genN; i++ {
			tok := sample.Argmax(logits)
			if logits, err = g.Step(tok, *promptN+i); err != nil {
				return 0, 0, err
			}
		}
		return promptSec, time.Since(start).Seconds(), nil
	}
	_, _ = fmt.Fprintf(stderr, "warming up %s with %d threads\n", *modelPath, *threads)
	if _, _, err := once(); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }() // after StopCPUProfile; a profile lost to a failed close does not fail the bench
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var pRates, gRates []float64
	for r := 0; r < *reps; r++ {
		ps, gs, err := once()
		if err != nil {
			return err
		}
		pRates = append(pRates, float64(*promptN)/ps)
		gRates = append(gRates, float64(*genN)/gs)
		_, _ = fmt.Fprintf(stderr, "run %d: prompt %.1f tok/s, generation %.1f tok/s\n", r+1, pRates[r], gRates[r])
	}
	res := benchResult{
		Model: *modelPath, Threads: *threads, PromptTokens: *promptN, GenTokens: *genN,
		PromptTokS: stats.Median(pRates), GenTokS: stats.Median(gRates),
		FileBytes: fileSize(*modelPath), BandwidthGBs: cpu.MemoryBandwidth(l.Pool) / 1e9,
	}
	if res.FileBytes > 0 {
		res.GenBoundTokS = res.BandwidthGBs * 1e9 / float64(res.FileBytes)
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	_, err = fmt.Fprintf(stdout, "model %s, %d threads\n"+
		"prompt processing (%d tokens): %8.1f tok/s\n"+
		"generation (%d tokens):        %8.1f tok/s = %.0f%% of the memory bound %.1f tok/s (%.1f GB/s, %.0f MB per token)\n",
		*modelPath, *threads,
		*promptN, res.PromptTokS,
		*genN, res.GenTokS, 100*res.GenTokS/res.GenBoundTokS, res.GenBoundTokS, res.BandwidthGBs, float64(res.FileBytes)/1e6)
	return err
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}
