package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leo-operator/leo/runtime/synth"
	"github.com/leo-operator/leo/runtime/tokenizer"
)

// cli runs leo-runtime with args as main does, returning the exit status
// and what it wrote.
func cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// mustCLI runs leo-runtime and fails the test unless it exits 0.
func mustCLI(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	code, stdout, stderr := cli(t, args...)
	if code != 0 {
		t.Fatalf("leo-runtime %s: exit %d\nstderr: %s", strings.Join(args, " "), code, stderr)
	}
	return stdout, stderr
}

var shared struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	// Re-executed by a test as the leo-runtime command itself (to be
	// killed, for example).
	if os.Getenv("LEO_RUNTIME_MAIN") == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	code := m.Run()
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir) // a temporary directory; the OS cleans up what is left
	}
	os.Exit(code)
}

// testModel returns a test-gqa Q8_0 model written by gen-model, once per
// test binary.
func testModel(t *testing.T) string {
	t.Helper()
	shared.once.Do(func() {
		if shared.dir, shared.err = os.MkdirTemp("", "leo-runtime-test-"); shared.err != nil {
			return
		}
		shared.path = filepath.Join(shared.dir, "test-gqa-q8_0.gguf")
		var out, errOut bytes.Buffer
		if code := run(context.Background(), []string{"gen-model", "--shape", "test-gqa", "--type", "q8_0", "--seed", "3", "-o", shared.path}, &out, &errOut); code != 0 {
			shared.err = &exitError{code, errOut.String()}
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.path
}

type exitError struct {
	code   int
	stderr string
}

func (e *exitError) Error() string { return "gen-model failed: " + e.stderr }

func llama2Tokenizer(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	v, err := synth.Llama2Vocab()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.New(v)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// genOutput is generate --json's output.
type genOutput struct {
	Prompt       string   `json:"prompt"`
	PromptTokens []int32  `json:"prompt_tokens"`
	Tokens       []int32  `json:"tokens"`
	Text         string   `json:"text"`
	FinishReason string   `json:"finish_reason"`
	PromptTokS   *float64 `json:"prompt_tok_s"`
	GenTokS      *float64 `json:"gen_tok_s"`
}

func generateJSON(t *testing.T, args ...string) genOutput {
	t.Helper()
	stdout, _ := mustCLI(t, append([]string{"generate", "--json", "--threads", "2"}, args...)...)
	var g genOutput
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&g); err != nil {
		t.Fatalf("generate --json printed %q: %v", stdout, err)
	}
	if dec.More() {
		t.Errorf("generate --json printed more than one JSON object: %q", stdout)
	}
	if g.PromptTokS == nil || g.GenTokS == nil {
		t.Errorf("generate --json: prompt_tok_s or gen_tok_s missing: %q", stdout)
	}
	return g
}

func TestGenModel(t *testing.T) {
	path := testModel(t)
	dir := t.TempDir()
	again := filepath.Join(dir, "again.gguf")
	stdout, stderr := mustCLI(t, "gen-model", "--shape", "test-gqa", "--type", "q8_0", "--seed", "3", "-o", again)
	if stdout != "" {
		t.Errorf("gen-model wrote %q to stdout; progress belongs on stderr", stdout)
	}
	if !strings.Contains(stderr, "100%") || !strings.Contains(stderr, "again.gguf") {
		t.Errorf("gen-model's progress on stderr is %q; want the file name and 100%%", stderr)
	}
	a, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(again)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("gen-model with the same shape, type and seed wrote different files")
	}
	other := filepath.Join(dir, "other.gguf")
	mustCLI(t, "gen-model", "--shape", "test-gqa", "--type", "q8_0", "--seed", "4", "-o", other)
	if c, err := os.ReadFile(other); err != nil || bytes.Equal(a, c) {
		t.Errorf("gen-model with seeds 3 and 4 wrote the same file (err %v)", err)
	}
}

func TestInspect(t *testing.T) {
	stdout, _ := mustCLI(t, "inspect", testModel(t))
	for _, want := range []string{
		"mostly Q8_0", "layers 2", "key/value heads 2", "chat template: false",
		"GGUF v3", "general.architecture", "llama", "llama.embedding_length", "256",
		"tokenizer.ggml.tokens", "token_embd.weight", "output.weight", "blk.1.ffn_down.weight", "Q8_0",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("inspect's output lacks %q:\n%s", want, stdout)
		}
	}
}

func TestInspectJSON(t *testing.T) {
	stdout, _ := mustCLI(t, "inspect", "--json", testModel(t))
	var facts modelFacts
	if err := json.Unmarshal([]byte(stdout), &facts); err != nil {
		t.Fatalf("%v:\n%s", err, stdout)
	}
	if facts.Architecture != "llama" || facts.FileType != "Q8_0" || facts.Layers != 2 || facts.KVHeads >= facts.Heads ||
		facts.VocabSize != 32000 || facts.Parameters <= 0 || facts.TensorTypes["Q8_0"].Tensors == 0 || facts.SizeBytes <= 0 {
		t.Errorf("facts %+v", facts)
	}
}

func TestQuantizeCommand(t *testing.T) {
	dir := t.TempDir()
	f16 := filepath.Join(dir, "f16.gguf")
	mustCLI(t, "gen-model", "--shape", "test-gqa", "--type", "f16", "-o", f16)
	a, b := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "b.gguf")
	stdout, _ := mustCLI(t, "quantize", f16, a, "--type", "q4_0")
	mustCLI(t, "quantize", "--model", f16, "-o", b, "--type", "q4_0", "--threads", "1")
	x, _ := os.ReadFile(a)
	y, _ := os.ReadFile(b)
	if len(x) == 0 || !bytes.Equal(x, y) {
		t.Error("quantizing with all threads and with one gave different files")
	}
	for _, want := range []string{"RMSE", "blk.*.attn_q.weight", "F16    Q4_0", "blk.*.attn_norm.weight"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the report lacks %q:\n%s", want, stdout)
		}
	}
}

func TestGenerate(t *testing.T) {
	path := testModel(t)
	tok := llama2Tokenizer(t)
	const prompt = "Hello, world"

	g := generateJSON(t, "--model", path, "--prompt", prompt, "--max-new-tokens", "6", "--ignore-eos")
	if want := tok.Encode(prompt, true); !slices.Equal(g.PromptTokens, want) || g.PromptTokens[0] != 1 {
		t.Errorf("prompt_tokens %v, want %v (starting with BOS 1)", g.PromptTokens, want)
	}
	if g.Prompt != prompt || len(g.Tokens) != 6 || g.FinishReason != "length" {
		t.Errorf("got prompt %q, %d tokens, finish_reason %q; want %q, 6, length", g.Prompt, len(g.Tokens), g.FinishReason, prompt)
	}
	if want := tok.Decode(g.Tokens); g.Text != want {
		t.Errorf("text %q != the tokens decoded %q", g.Text, want)
	}
	if *g.PromptTokS <= 0 || *g.GenTokS <= 0 {
		t.Errorf("prompt_tok_s %v, gen_tok_s %v; want both > 0", *g.PromptTokS, *g.GenTokS)
	}

	t.Run("stream", func(t *testing.T) {
		stdout, stderr := mustCLI(t, "generate", "--threads", "2", "--model", path, "--prompt", prompt, "--max-new-tokens", "6", "--ignore-eos")
		if stdout != g.Text+"\n" {
			t.Errorf("streamed %q, want the JSON text %q and a newline", stdout, g.Text)
		}
		if !strings.Contains(stderr, "finish: length") {
			t.Errorf("stderr %q lacks the summary", stderr)
		}
	})
	t.Run("one token", func(t *testing.T) {
		// No time after the first token: gen_tok_s must still be JSON.
		one := generateJSON(t, "--model", path, "--prompt", prompt, "--max-new-tokens", "1", "--ignore-eos")
		if len(one.Tokens) != 1 || one.Tokens[0] != g.Tokens[0] || math.IsNaN(*one.GenTokS) {
			t.Errorf("got %v (gen_tok_s %v), want [%d]", one.Tokens, *one.GenTokS, g.Tokens[0])
		}
	})
	t.Run("stop", func(t *testing.T) {
		r := []rune(g.Text)
		if len(r) < 4 {
			t.Skipf("text %q is too short to take a stop string from", g.Text)
		}
		stop := string(r[len(r)/2 : len(r)/2+2])
		s := generateJSON(t, "--model", path, "--prompt", prompt, "--max-new-tokens", "6", "--ignore-eos", "--stop", "zzzzzz", "--stop", stop)
		if want, _, _ := strings.Cut(g.Text, stop); s.Text != want || s.FinishReason != "stop_sequence" {
			t.Errorf("with --stop %q: text %q, finish %q; want %q, stop_sequence", stop, s.Text, s.FinishReason, want)
		}
	})
	t.Run("seed", func(t *testing.T) {
		args := []string{"--model", path, "--prompt", prompt, "--max-new-tokens", "8", "--ignore-eos", "--do-sample", "--temperature", "1.5", "--top-k", "50", "--seed", "9"}
		a, b := generateJSON(t, args...), generateJSON(t, args...)
		if !slices.Equal(a.Tokens, b.Tokens) {
			t.Errorf("--seed 9 twice gave %v and %v", a.Tokens, b.Tokens)
		}
	})
	t.Run("context", func(t *testing.T) {
		code, _, stderr := cli(t, "generate", "--threads", "2", "--model", path, "--prompt", strings.Repeat("word ", 20), "--ctx", "8")
		if code != 1 || !strings.Contains(stderr, "context holds 8") {
			t.Errorf("prompt longer than --ctx 8: exit %d, stderr %q; want 1 and a message about the context", code, stderr)
		}
		c := generateJSON(t, "--model", path, "--prompt", prompt, "--ctx", "8", "--max-new-tokens", "100", "--ignore-eos")
		if len(c.PromptTokens)+len(c.Tokens) != 8 || c.FinishReason != "length" {
			t.Errorf("--ctx 8: %d prompt + %d generated tokens, finish %q; want 8 in all, length", len(c.PromptTokens), len(c.Tokens), c.FinishReason)
		}
	})
}

func TestUsageErrors(t *testing.T) {
	model := testModel(t)
	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{nil, "usage: leo-runtime"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"generate", "--prompt", "hi"}, "--model"},
		{[]string{"generate", "--model", model}, "--prompt"},
		{[]string{"generate", "--model", model, "--prompt", "hi", "extra"}, `unexpected argument "extra"`},
		{[]string{"generate", "--model", model, "--prompt", "hi", "--bogus"}, "bogus"},
		{[]string{"generate", "--model", model, "--prompt", "hi", "--do-sample", "--temperature", "0"}, "--temperature must be > 0"},
		{[]string{"generate", "--model", model, "--prompt", "hi", "--do-sample", "--temperature", "-1"}, "temperature"},
		{[]string{"generate", "--model", model, "--prompt", "hi", "--temperature", "warm"}, "temperature"},
		{[]string{"generate", "--model", model, "--prompt", "hi", "--max-new-tokens", "0"}, "--max-new-tokens must be >= 1"},
		{[]string{"generate", "--model", model, "--prompt", "hi", "--seed", "-1"}, "seed"},
		{[]string{"generate", "--model", model, "--prompt", "hi", "--threads", "0"}, "--threads"},
		{[]string{"generate", "--model", model, "--prompt", "hi", "--ctx", "-3"}, "--ctx"},
		{[]string{"generate", "--model", model, "--prompt", "hi", "--ctx", "100000"}, "--ctx"},
		{[]string{"gen-model", "--shape", "test-gqa", "--type", "q5_1", "-o", "x.gguf"}, "--type"},
		{[]string{"gen-model", "--shape", "nope", "-o", "x.gguf"}, "unknown shape"},
		{[]string{"gen-model", "--shape", "test-gqa"}, "-o"},
		{[]string{"quantize", "--model", model, "--type", "bogus", "-o", "x.gguf"}, "--type"},
		{[]string{"convert", "-o", "x.gguf"}, "--llama2c"},
		{[]string{"inspect"}, "one GGUF file"},
		{[]string{"bench", "--model", model, "--gen", "0"}, "--gen"},
		{[]string{"bench", "--model", model, "--prompt", "500", "--gen", "100"}, "context length"},
	} {
		code, stdout, stderr := cli(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("leo-runtime %s: exit %d, stderr %q; want exit 2 and %q", strings.Join(tc.args, " "), code, stderr, tc.want)
		}
		if stdout != "" {
			t.Errorf("leo-runtime %s: wrote %q to stdout", strings.Join(tc.args, " "), stdout)
		}
	}
	for _, args := range [][]string{{"help"}, {"--help"}, {"generate", "-h"}} {
		if code, _, stderr := cli(t, args...); code != 0 || stderr == "" {
			t.Errorf("leo-runtime %s: exit %d, stderr %q; want 0 and help", strings.Join(args, " "), code, stderr)
		}
	}
}

func TestBadFiles(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.gguf")
	notGGUF := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notGGUF, []byte("these are not the weights you are looking for\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"generate", "--model", missing, "--prompt", "hi"}, "no such file"},
		{[]string{"generate", "--model", notGGUF, "--prompt", "hi"}, "notes.txt"},
		{[]string{"bench", "--model", missing}, "no such file"},
		{[]string{"inspect", missing}, "no such file"},
		{[]string{"inspect", notGGUF}, "notes.txt"},
		{[]string{"quantize", "--model", missing, "--type", "q8_0", "-o", filepath.Join(dir, "q.gguf")}, "no such file"},
		{[]string{"convert", "--llama2c", missing, "-o", filepath.Join(dir, "c.gguf")}, "missing.gguf"},
		{[]string{"convert", "--llama2c", notGGUF, "-o", filepath.Join(dir, "c.gguf")}, "notes.txt"},
	} {
		code, _, stderr := cli(t, tc.args...)
		if code != 1 || !strings.Contains(stderr, tc.want) || !strings.HasPrefix(stderr, "leo-runtime "+tc.args[0]+": ") {
			t.Errorf("leo-runtime %s: exit %d, stderr %q; want exit 1 and a message with %q", strings.Join(tc.args, " "), code, stderr, tc.want)
		}
	}
	for _, name := range []string{"q.gguf", "c.gguf"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("a failed command left %s behind", name)
		}
	}
}

func TestBench(t *testing.T) {
	stdout, stderr := mustCLI(t, "bench", "--model", testModel(t), "--threads", "2", "--json", "--prompt", "8", "--gen", "4", "--reps", "1")
	var res map[string]any
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("bench --json printed %q: %v", stdout, err)
	}
	for _, key := range []string{"prompt_tok_s", "gen_tok_s", "file_bytes", "bandwidth_gb_s", "gen_bound_tok_s"} {
		if v, ok := res[key].(float64); !ok || !(v > 0) {
			t.Errorf("bench --json: %s = %v, want a number > 0", key, res[key])
		}
	}
	if res["prompt_tokens"] != 8.0 || res["gen_tokens"] != 4.0 || res["threads"] != 2.0 {
		t.Errorf("bench --json: %v; want prompt_tokens 8, gen_tokens 4, threads 2", res)
	}
	if !strings.Contains(stderr, "run 1:") {
		t.Errorf("bench's stderr %q lacks the run's progress", stderr)
	}
}

// TestConvertQuantize converts the real (tiny) llama2.c checkpoint, then
// quantizes it, and generates with both files.
func TestConvertQuantize(t *testing.T) {
	dir := t.TempDir()
	f32 := filepath.Join(dir, "stories260K.gguf")
	q8 := filepath.Join(dir, "stories260K-q8_0.gguf")
	mustCLI(t, "convert", "--llama2c", "../../runtime/llama2c/testdata/stories260K.bin", "-o", f32)
	mustCLI(t, "quantize", "--model", f32, "--type", "q8_0", "-o", q8)
	for _, path := range []string{f32, q8} {
		g := generateJSON(t, "--model", path, "--prompt", "Once upon a time", "--max-new-tokens", "12", "--ignore-eos")
		if len(g.Tokens) != 12 || g.FinishReason != "length" || g.PromptTokens[0] != 1 {
			t.Errorf("%s: %d tokens, finish %q, prompt %v; want 12, length, starting with BOS 1", filepath.Base(path), len(g.Tokens), g.FinishReason, g.PromptTokens)
		}
		for _, id := range g.Tokens {
			if id < 0 || id >= 512 {
				t.Errorf("%s: token %d is outside the 512-token vocabulary", filepath.Base(path), id)
			}
		}
	}
	stdout, _ := mustCLI(t, "inspect", q8)
	if !strings.Contains(stdout, "Q8_0") || !strings.Contains(stdout, "general.file_type") {
		t.Errorf("inspect of the quantized file:\n%s", stdout)
	}
}

func TestRate(t *testing.T) {
	for _, tc := range []struct {
		n    int
		d    time.Duration
		want float64
	}{{4, time.Second, 4}, {0, 0, 0}, {0, time.Second, 0}, {3, 0, 0}, {-1, time.Second, 0}} {
		if got := rate(tc.n, tc.d); got != tc.want {
			t.Errorf("rate(%d, %v) = %v, want %v", tc.n, tc.d, got, tc.want)
		}
	}
}
