// Package peer runs llama.cpp as the independent implementation that
// leo-runtime's results are checked against: tokenization, next-token
// scores, greedy continuations and CPU speed on the same GGUF file.
//
// llama.cpp comes as the npm package node-llama-cpp (pinned in
// hack/peer/package-lock.json) with its prebuilt CPU build for linux-x64,
// installed by hack/peer/install.sh into bin/peer/. Each function here runs
// `node hack/peer/peer.mjs <command>` once: a fresh process per call loads
// the model (about half a second for a small file), so these are for tests
// and benchmarks, not for serving. Node.js 20 or later and npm must be on
// PATH; the npm registry must be reachable the first time.
package peer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Kinds of Scores.
const (
	// KindLogits: the model's raw output scores.
	KindLogits = "logits"
	// KindLogProbs: log-softmax of the logits over the whole vocabulary,
	// i.e. the logits shifted by their log-sum-exp. node-llama-cpp 3.21.1
	// exposes probabilities, not logits, so this is what the peer gives.
	// Compare these with log_softmax of leo's logits.
	KindLogProbs = "logprobs"
)

// Scores holds the next-token scores at every position of a sequence:
// Rows[i][t] scores token t as the one after tokens[0..i].
type Scores struct {
	Kind  string // KindLogits or KindLogProbs
	Vocab int    // length of every row
	Rows  [][]float32
}

// BenchResult is the peer's speed on one model, median of Reps runs after a
// warm-up.
type BenchResult struct {
	PromptTokS float64   `json:"prompt_tok_s"` // prompt tokens per second, all Prompt tokens in one batch
	GenTokS    float64   `json:"gen_tok_s"`    // generated tokens per second, one at a time, greedy
	PromptRuns []float64 `json:"prompt_runs"`  // each run's prompt tok/s
	GenRuns    []float64 `json:"gen_runs"`     // each run's generation tok/s
	Prompt     int       `json:"prompt"`
	Gen        int       `json:"gen"`
	Reps       int       `json:"reps"`
	Threads    int       `json:"threads"`
	// What llama.cpp ran with: its defaults for the KV cache type ("f16")
	// and flash attention ("auto").
	ContextSize    int    `json:"context_size"`
	BatchSize      int    `json:"batch_size"`
	KVType         string `json:"kv_type"`
	FlashAttention string `json:"flash_attention"`
	Peer           string `json:"peer"` // e.g. "node-llama-cpp 3.21.1"
}

var installed struct {
	sync.Mutex
	root, dir string
}

// Install installs the peer if needed (hack/peer/install.sh, about 15 s and
// 83 MB the first time, a no-op afterwards) and returns its directory. The
// repository is found from the working directory up. Later calls in the
// same process return the first successful answer at once.
func Install(ctx context.Context) (dir string, err error) {
	installed.Lock()
	defer installed.Unlock()
	if installed.dir != "" {
		return installed.dir, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "hack", "peer", "install.sh")
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("hack/peer/install.sh: %w\n%s", err, strings.TrimSpace(stderr.String()))
	}
	dir = strings.TrimSpace(stdout.String())
	if i := strings.LastIndexByte(dir, '\n'); i >= 0 {
		dir = dir[i+1:]
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", fmt.Errorf("hack/peer/install.sh printed %q, which is not a directory", dir)
	}
	installed.root, installed.dir = root, dir
	return dir, nil
}

// repoRoot finds the leo module's root from the working directory up.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			bytes.HasPrefix(b, []byte("module github.com/leo-operator/leo\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("peer: not inside the leo repository (no go.mod of github.com/leo-operator/leo above the working directory); run from the repository")
		}
		dir = parent
	}
}

// run installs the peer if needed and runs peer.mjs with args and stdin,
// returning its stdout. Errors carry node's stderr.
func run(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	dir, err := Install(ctx)
	if err != nil {
		return nil, err
	}
	installed.Lock()
	script := filepath.Join(installed.root, "hack", "peer", "peer.mjs")
	installed.Unlock()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "node", append([]string{script}, args...)...)
	cmd.Env = append(os.Environ(), "LEO_PEER_DIR="+dir)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = "(no output on stderr)"
		}
		return nil, fmt.Errorf("peer %s: %w: %s", args[0], err, msg)
	}
	return stdout.Bytes(), nil
}

func checkModel(model string) (string, error) {
	abs, err := filepath.Abs(model)
	if err != nil {
		return "", err
	}
	if st, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("peer: model: %w", err)
	} else if !st.Mode().IsRegular() {
		return "", fmt.Errorf("peer: model %s is not a regular file", abs)
	}
	return abs, nil
}

func joinTokens(tokens []int32) (string, error) {
	if len(tokens) == 0 {
		return "", errors.New("peer: no tokens given")
	}
	var b strings.Builder
	for i, t := range tokens {
		if t < 0 {
			return "", fmt.Errorf("peer: token %d at index %d is negative", t, i)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(t)))
	}
	return b.String(), nil
}

func threadsArg(threads int) ([]string, error) {
	if threads < 0 {
		return nil, fmt.Errorf("peer: threads must be 0 (llama.cpp's default) or more, got %d", threads)
	}
	if threads == 0 {
		return nil, nil
	}
	return []string{"--threads", strconv.Itoa(threads)}, nil
}

// Tokenize returns llama.cpp's tokens for text, with the model's BOS token
// first when bos is set. Special-token text such as "<s>" is tokenized as
// plain text.
func Tokenize(ctx context.Context, model, text string, bos bool) ([]int32, error) {
	model, err := checkModel(model)
	if err != nil {
		return nil, err
	}
	if !utf8.ValidString(text) {
		return nil, errors.New("peer: text is not valid UTF-8")
	}
	args := []string{"tokenize", "--model", model, "--text", "-"}
	if bos {
		args = append(args, "--bos")
	}
	out, err := run(ctx, text, args...)
	if err != nil {
		return nil, err
	}
	var res struct {
		Tokens []int32 `json:"tokens"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("peer tokenize: bad output %.200q: %w", out, err)
	}
	if res.Tokens == nil {
		return nil, fmt.Errorf("peer tokenize: no \"tokens\" in %.200q", out)
	}
	return res.Tokens, nil
}

// Logits returns the model's next-token scores after each prefix of tokens,
// evaluated by llama.cpp (the weights as the file stores them, an F32 KV
// cache, no flash attention; up to 64 positions per batch). threads 0 leaves
// the count to llama.cpp. The peer gives log-probabilities (Kind
// KindLogProbs), checked there to cover the whole vocabulary and to sum to 1.
// It costs about 2 s of CPU to start plus some 30 ms per position.
func Logits(ctx context.Context, model string, tokens []int32, threads int) (Scores, error) {
	model, err := checkModel(model)
	if err != nil {
		return Scores{}, err
	}
	list, err := joinTokens(tokens)
	if err != nil {
		return Scores{}, err
	}
	targs, err := threadsArg(threads)
	if err != nil {
		return Scores{}, err
	}
	tmp, err := os.MkdirTemp("", "leo-peer-logits-")
	if err != nil {
		return Scores{}, err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	file := filepath.Join(tmp, "scores.f32")
	meta, err := run(ctx, list, append([]string{"logits", "--model", model, "--tokens", "-", "--out", file}, targs...)...)
	if err != nil {
		return Scores{}, err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return Scores{}, fmt.Errorf("peer logits: %w", err)
	}
	return decodeScores(meta, data, len(tokens))
}

// maxVocab bounds the vocabulary size that decodeScores accepts (the
// largest real vocabularies have about 260,000 tokens).
const maxVocab = 1 << 22

// decodeScores checks peer.mjs's logits metadata against the data file and
// decodes the rows. positions is how many rows were asked for.
func decodeScores(meta, data []byte, positions int) (Scores, error) {
	var m struct {
		Kind      string `json:"kind"`
		DType     string `json:"dtype"`
		Positions int    `json:"positions"`
		Vocab     int    `json:"vocab"`
	}
	if err := json.Unmarshal(meta, &m); err != nil {
		return Scores{}, fmt.Errorf("peer logits: bad metadata %.200q: %w", meta, err)
	}
	if m.Kind != KindLogits && m.Kind != KindLogProbs {
		return Scores{}, fmt.Errorf("peer logits: metadata kind %q, want %q or %q", m.Kind, KindLogits, KindLogProbs)
	}
	if m.DType != "float32le" {
		return Scores{}, fmt.Errorf("peer logits: metadata dtype %q, want \"float32le\"", m.DType)
	}
	if m.Positions != positions {
		return Scores{}, fmt.Errorf("peer logits: metadata positions %d, want %d (one per token)", m.Positions, positions)
	}
	if m.Vocab <= 0 || m.Vocab > maxVocab {
		return Scores{}, fmt.Errorf("peer logits: metadata vocab %d is not in 1..%d", m.Vocab, maxVocab)
	}
	// Division, not multiplication, so that no product can overflow.
	if len(data)%4 != 0 || len(data)/4/m.Vocab != positions || len(data)/4%m.Vocab != 0 {
		return Scores{}, fmt.Errorf("peer logits: data file has %d bytes, want %d positions × %d vocab × 4", len(data), positions, m.Vocab)
	}
	all := make([]float32, len(data)/4)
	for i := range all {
		all[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		if math.IsNaN(float64(all[i])) {
			return Scores{}, fmt.Errorf("peer logits: NaN at position %d, token %d", i/m.Vocab, i%m.Vocab)
		}
	}
	rows := make([][]float32, positions)
	for i := range rows {
		rows[i] = all[i*m.Vocab : (i+1)*m.Vocab : (i+1)*m.Vocab]
	}
	return Scores{Kind: m.Kind, Vocab: m.Vocab, Rows: rows}, nil
}

// Greedy returns the n tokens llama.cpp generates after tokens, each the
// argmax of the logits (temperature 0, no repetition penalty, no other
// sampling step). End-of-generation tokens do not stop it, so it always
// gives n tokens. Same numerics as Logits; threads 0 leaves the count to
// llama.cpp.
func Greedy(ctx context.Context, model string, tokens []int32, n, threads int) ([]int32, error) {
	model, err := checkModel(model)
	if err != nil {
		return nil, err
	}
	list, err := joinTokens(tokens)
	if err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, fmt.Errorf("peer: greedy needs n ≥ 1, got %d", n)
	}
	targs, err := threadsArg(threads)
	if err != nil {
		return nil, err
	}
	out, err := run(ctx, list, append([]string{"greedy", "--model", model, "--tokens", "-", "--n", strconv.Itoa(n)}, targs...)...)
	if err != nil {
		return nil, err
	}
	var res struct {
		Tokens []int32 `json:"tokens"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("peer greedy: bad output %.200q: %w", out, err)
	}
	if len(res.Tokens) != n {
		return nil, fmt.Errorf("peer greedy: %d tokens, want %d", len(res.Tokens), n)
	}
	return res.Tokens, nil
}

// Bench measures llama.cpp on model with exactly threads threads: prompt
// processing (prompt tokens in one batch) and generation (gen tokens, one at
// a time, greedy), medians of 3 runs after a warm-up. It takes a few
// seconds for a small model; use it from benchmarks.
func Bench(ctx context.Context, model string, threads, prompt, gen int) (BenchResult, error) {
	model, err := checkModel(model)
	if err != nil {
		return BenchResult{}, err
	}
	if threads < 1 || prompt < 1 || gen < 1 {
		return BenchResult{}, fmt.Errorf("peer: bench needs threads, prompt and gen ≥ 1, got %d, %d, %d", threads, prompt, gen)
	}
	out, err := run(ctx, "", "bench", "--model", model, "--threads", strconv.Itoa(threads),
		"--prompt", strconv.Itoa(prompt), "--gen", strconv.Itoa(gen))
	if err != nil {
		return BenchResult{}, err
	}
	var res BenchResult
	if err := json.Unmarshal(out, &res); err != nil {
		return BenchResult{}, fmt.Errorf("peer bench: bad output %.200q: %w", out, err)
	}
	if !(res.PromptTokS > 0) || !(res.GenTokS > 0) || res.Threads != threads {
		return BenchResult{}, fmt.Errorf("peer bench: implausible result %.300q", out)
	}
	return res, nil
}
