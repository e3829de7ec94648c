package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/leo-operator/leo/runtime/generate"
	"github.com/leo-operator/leo/runtime/loader"
	"github.com/leo-operator/leo/runtime/sample"
)

// backendEnv names the environment variable choosing where models run:
// auto (the default: the GPU when libleo_cuda.so and a GPU are there),
// cpu or cuda.
const backendEnv = "LEO_BACKEND"

// load opens a model for a command and says once, on stderr, where it
// runs; a bad thread count is a usage error.
func load(path string, threads int, stderr io.Writer) (*loader.Loaded, error) {
	if threads < 1 {
		return nil, usagef("--threads must be at least 1 (got %d)", threads)
	}
	l, err := loader.OpenWith(path, loader.Options{Threads: threads, Backend: os.Getenv(backendEnv)})
	if err != nil {
		return nil, err
	}
	if l.CPUReason != "" {
		_, _ = fmt.Fprintf(stderr, "leo-runtime: running on the CPU (%s)\n", l.CPUReason)
	} else {
		_, _ = fmt.Fprintf(stderr, "leo-runtime: running on %s\n", l.Backend)
	}
	return l, nil
}

// optionalUint is a flag that is unset until given (for --seed).
type optionalUint struct{ v *uint64 }

func (o *optionalUint) String() string {
	if o.v == nil {
		return ""
	}
	return strconv.FormatUint(*o.v, 10)
}

func (o *optionalUint) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return fmt.Errorf("not an unsigned integer")
	}
	o.v = &v
	return nil
}

// stringList is a repeatable string flag (for --stop).
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// asFlags renames the generation parameters in sample's messages (named as
// in the HTTP API) to this command's flags.
var asFlags = strings.NewReplacer(
	"max_new_tokens", "--max-new-tokens", "min_new_tokens", "--min-new-tokens",
	"repetition_penalty", "--repetition-penalty", "top_k", "--top-k", "top_p", "--top-p",
	"do_sample", "--do-sample", "ignore_eos", "--ignore-eos", "temperature", "--temperature",
	"stop", "--stop",
)

// samplingFlags registers the generation parameters, named as in Hugging
// Face's generate() (and leo's HTTP API), on fs.
func samplingFlags(fs *flag.FlagSet) func() sample.Params {
	p := sample.DefaultParams()
	p.MaxNewTokens = 128
	fs.IntVar(&p.MaxNewTokens, "max-new-tokens", p.MaxNewTokens, "generate at most this many tokens")
	fs.IntVar(&p.MinNewTokens, "min-new-tokens", 0, "do not end (EOS) before this many tokens")
	fs.BoolVar(&p.IgnoreEOS, "ignore-eos", false, "keep generating after the end-of-sequence token")
	fs.BoolVar(&p.DoSample, "do-sample", false, "sample from the distribution (default: greedy)")
	fs.Float64Var(&p.Temperature, "temperature", 1, "sampling temperature (with --do-sample)")
	fs.IntVar(&p.TopK, "top-k", 0, "keep only the k most likely tokens; 0 is off (with --do-sample)")
	fs.Float64Var(&p.TopP, "top-p", 1, "nucleus sampling: keep the most likely tokens up to this probability (with --do-sample)")
	fs.Float64Var(&p.RepetitionPenalty, "repetition-penalty", 1, "penalize tokens already in the text; 1 is off")
	seed := &optionalUint{}
	fs.Var(seed, "seed", "random seed for --do-sample (default: random)")
	stops := &stringList{}
	fs.Var(stops, "stop", "stop when the text contains this string (repeatable)")
	return func() sample.Params {
		p.Seed = seed.v
		p.Stop = *stops
		return p
	}
}

func runGenerate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	modelPath := fs.String("model", "", "GGUF model file")
	prompt := fs.String("prompt", "", "the prompt text")
	threads := fs.Int("threads", runtime.NumCPU(), "CPU threads")
	ctxLen := fs.Int("ctx", 0, "context size in tokens (default: the model's, at most 4096)")
	asJSON := fs.Bool("json", false, "print one JSON object with the prompt's and generated token ids and the text, instead of streaming")
	params := samplingFlags(fs)
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := required(map[string]string{"model": *modelPath, "prompt": *prompt}); err != nil {
		return err
	}
	p := params()
	if err := p.Validate(); err != nil {
		return usageError{asFlags.Replace(strings.ReplaceAll(err.Error(), "\n", "; "))}
	}
	l, err := load(*modelPath, *threads, stderr)
	if err != nil {
		return err
	}
	defer l.Close()

	n := *ctxLen
	switch {
	case n == 0:
		n = min(l.Model.Config.ContextLength, 4096)
	case n < 0 || n > l.Model.Config.ContextLength:
		return usagef("--ctx %d must be in [1, %d], the model's context length (0 picks min(it, 4096))", n, l.Model.Config.ContextLength)
	}
	tokens := l.Tokenizer.Encode(*prompt, true)
	if len(tokens)+1 > n {
		return fmt.Errorf("the prompt is %d tokens; the context holds %d", len(tokens), n)
	}
	g, err := generate.New(l.Model, l.Tokenizer, n, 128)
	if err != nil {
		return err
	}
	defer func() { _ = g.Close() }() // freeing device memory fails only with a broken device
	var emit func(string) error
	if !*asJSON {
		emit = func(s string) error { _, err := io.WriteString(stdout, s); return err }
	}
	res, err := g.Run(ctx, tokens, p, emit)
	if err != nil {
		return err
	}
	promptRate := rate(len(tokens), res.PromptTime)
	genRate := rate(len(res.Tokens)-1, res.GenTime) // the first token counts as prompt time
	if *asJSON {
		return json.NewEncoder(stdout).Encode(struct {
			Prompt       string              `json:"prompt"`
			PromptTokens []int32             `json:"prompt_tokens"`
			Tokens       []int32             `json:"tokens"`
			Text         string              `json:"text"`
			FinishReason sample.FinishReason `json:"finish_reason"`
			PromptTokS   float64             `json:"prompt_tok_s"`
			GenTokS      float64             `json:"gen_tok_s"`
		}{*prompt, tokens, res.Tokens, res.Text, res.Finish, promptRate, genRate})
	}
	if _, err := fmt.Fprintln(stdout); err != nil { // ends the streamed text, whose write errors count too
		return err
	}
	_, _ = fmt.Fprintf(stderr, "prompt: %d tokens, %.1f tok/s; generated: %d tokens, %.1f tok/s; finish: %s\n",
		len(tokens), promptRate, len(res.Tokens), genRate, res.Finish)
	return nil
}

// rate is n tokens per second over d, and 0 when there is nothing to
// measure (one generated token leaves no generation time): never NaN or
// ±Inf, which encoding/json refuses to write.
func rate(n int, d time.Duration) float64 {
	if n <= 0 || d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
