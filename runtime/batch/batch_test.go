package batch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leo-operator/leo/internal/testmodel"
	"github.com/leo-operator/leo/runtime/batch"
	"github.com/leo-operator/leo/runtime/generate"
	"github.com/leo-operator/leo/runtime/sample"
)

// The inputs of the format tests: CSV with quoting edge cases, JSONL with
// per-row parameters and a malformed row, an OpenAI batch file, empty and
// header-only files, a nested folder and a hidden file.
var inputs = map[string]string{
	"a.csv": "\ufeffid,input_string\n" +
		"1,\"Once upon a time, there was\"\n" +
		"2,\"She said \"\"hello\"\" and\"\n" +
		"3,\"Two\nlines\"\n" +
		"4,too,many,fields\n" +
		"5,plain\n",
	"b.jsonl": `{"input_string": "The cat sat on"}` + "\n" +
		"\n" +
		`{"input_string": "Tom had a ball", "parameters": {"max_new_tokens": 2}}` + "\n" +
		`not json` + "\n" +
		`{"input_string": "The \"dog\", ran\nfast", "parameters": {"return_full_text": true}}` + "\n",
	"c.jsonl": `{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}}` + "\n" +
		`{"custom_id": "r2", "method": "POST", "url": "/v1/completions", "body": {"prompt": "Once upon"}}` + "\n" +
		`{"custom_id": "r1", "method": "POST", "url": "/v1/completions", "body": {"prompt": "dup"}}` + "\n",
	"empty.csv":       "",
	"header-only.csv": "input_string\n",
	"sub/d.csv":       "text\nA B C\n",
	".hidden.csv":     "input_string\nnever read\n",
}

func TestFormats(t *testing.T) {
	sc, l := scorer(t, 8)
	in, out := t.TempDir(), filepath.Join(t.TempDir(), "out")
	writeFiles(t, in, inputs)
	cfg := config(t, in, out)
	if want := []string{"a.csv", "b.jsonl", "c.jsonl", "empty.csv", "header-only.csv", "sub/d.csv"}; !slices.Equal(cfg.Files, want) {
		t.Fatalf("files %q, want %q", cfg.Files, want)
	}
	c := run(t, cfg, sc)
	t.Logf("counts %+v", c)
	if c.FilesTotal != 6 || c.FilesSucceeded != 6 || c.FilesFailed != 0 || c.MiniBatchesDone != 6 || c.MiniBatchesTotal != 6 {
		t.Errorf("file counts %+v", c)
	}
	// a.csv 5 rows (1 malformed), b.jsonl 4 (1), c.jsonl 3 (1 duplicate), d.csv 1.
	if c.RowsTotal != 13 || c.RowsSucceeded != 10 || c.RowsFailed != 3 {
		t.Errorf("row counts %+v", c)
	}

	// Greedy generation alone gives the same text as in the batch.
	g, err := generate.New(l.Model, l.Tokenizer, 256, 64)
	if err != nil {
		t.Fatal(err)
	}
	alone := func(prompt string, n int) string {
		p := sample.DefaultParams()
		p.MaxNewTokens = n
		r, err := g.Run(context.Background(), l.Tokenizer.Encode(prompt, true), p, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r.Text
	}
	want := [][]string{
		{"0", alone("Once upon a time, there was", 6), "a.csv"},
		{"1", alone(`She said "hello" and`, 6), "a.csv"},
		{"2", alone("Two\nlines", 6), "a.csv"},
		{"4", alone("plain", 6), "a.csv"},
		{"0", alone("The cat sat on", 6), "b.jsonl"},
		{"1", alone("Tom had a ball", 2), "b.jsonl"},
		{"3", "The \"dog\", ran\nfast" + alone("The \"dog\", ran\nfast", 6), "b.jsonl"}, // quoted: a quote, a comma, a newline
		{"0", alone("A B C", 6), "sub/d.csv"},
	}
	if got := predictions(t, out); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("predictions:\n%q\nwant\n%q", got, want)
	}

	if raw := readFile(t, filepath.Join(out, "predictions.csv")); !bytes.Contains(raw, []byte("3,\"The \"\"dog\"\", ran\nfast")) {
		t.Errorf("the prediction with a quote, a comma and a newline is not quoted as RFC 4180 says:\n%s", raw)
	}

	// OpenAI batch output: a line per row, failed ones included.
	type outLine struct {
		ID       string `json:"id"`
		CustomID string `json:"custom_id"`
		Response *struct {
			StatusCode int             `json:"status_code"`
			Body       json.RawMessage `json:"body"`
		} `json:"response"`
		Error *struct{ Code, Message string } `json:"error"`
	}
	var lines []outLine
	for _, line := range bytes.Split(bytes.TrimSpace(readFile(t, filepath.Join(out, "predictions.jsonl"))), []byte("\n")) {
		var l outLine
		if err := json.Unmarshal(line, &l); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		lines = append(lines, l)
	}
	if len(lines) != 3 || lines[0].CustomID != "r1" || lines[1].CustomID != "r2" || lines[2].Error == nil || lines[0].Response == nil {
		t.Fatalf("OpenAI output: %+v", lines)
	}
	var chatBody struct {
		Object  string
		Choices []struct{ Message struct{ Content string } }
		Usage   struct{ CompletionTokens int } `json:"usage"`
	}
	if err := json.Unmarshal(lines[0].Response.Body, &chatBody); err != nil || chatBody.Object != "chat.completion" || len(chatBody.Choices) != 1 {
		t.Errorf("chat body %s: %v", lines[0].Response.Body, err)
	}
	if !strings.HasPrefix(lines[0].ID, "batch_req_") || lines[0].ID == lines[1].ID {
		t.Errorf("ids %q %q", lines[0].ID, lines[1].ID)
	}

	s := readSummary(t, out)
	if s.Status != "succeeded" || s.Rows.Failed != 3 || len(s.FailedRows) != 3 || s.Files.Total != 6 || s.MiniBatches.Succeeded != 6 {
		t.Errorf("summary %+v", s)
	}
	if s.FailedRows[0].File != "a.csv" || s.FailedRows[0].Row != 3 || s.FailedRows[1].File != "b.jsonl" || s.FailedRows[1].Row != 2 {
		t.Errorf("failed rows %+v", s.FailedRows)
	}

	// Running again changes nothing: every mini-batch is in the journal.
	before := readFile(t, filepath.Join(out, "predictions.csv"))
	c2 := run(t, cfg, sc)
	if c2 != c || !bytes.Equal(before, readFile(t, filepath.Join(out, "predictions.csv"))) {
		t.Errorf("a second run changed the outcome: %+v", c2)
	}
}

// A run stopped part-way (SIGTERM: its context cancelled), then with its
// journal's last record torn as by a crash mid-append, resumes and ends
// with the bytes of an uninterrupted run, with sampling seeded by --seed.
func TestResume(t *testing.T) {
	sc, _ := scorer(t, 8)
	in := t.TempDir()
	files := map[string]string{}
	for f := range 12 {
		var b strings.Builder
		b.WriteString("input_string\n")
		for r := range 5 {
			fmt.Fprintf(&b, "file %d row %d: once upon a time\n", f, r)
		}
		files[fmt.Sprintf("f%02d.csv", f)] = b.String()
	}
	writeFiles(t, in, files)
	seeded := func(out string) batch.Config {
		cfg := config(t, in, out)
		seed := uint64(7)
		cfg.Params.DoSample, cfg.Params.Temperature, cfg.Params.Seed = true, 0.8, &seed
		cfg.MaxConcurrency = 3
		return cfg
	}
	ref := filepath.Join(t.TempDir(), "ref")
	run(t, seeded(ref), sc)
	want := readFile(t, filepath.Join(ref, "predictions.csv"))

	out := filepath.Join(t.TempDir(), "out")
	cfg := seeded(out)
	// Stop after 4 mini-batches.
	ctx, cancel := context.WithCancel(context.Background())
	var done atomic.Int32
	stopping := stopAfter{sc, 4, &done, cancel}
	_, err := batch.Run(ctx, cfg, stopping)
	var f *batch.Failure
	if !errors.As(err, &f) || f.Reason != batch.ReasonInterrupted || f.Permanent {
		t.Fatalf("stopped run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "predictions.csv")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a stopped run wrote its predictions: %v", err)
	}
	// Tear the last record.
	journal := filepath.Join(out, ".leo-batch", "shards", "0", "journal")
	data := readFile(t, journal)
	records, good := batch.ParseJournal(data)
	if len(records) < 2 || good != int64(len(data)) {
		t.Fatalf("journal of %d bytes: %d records in %d bytes", len(data), len(records), good)
	}
	if err := os.WriteFile(journal, data[:len(data)-5], 0o644); err != nil {
		t.Fatal(err)
	}
	c := run(t, cfg, sc)
	if c.MiniBatchesDone != 12 || c.RowsSucceeded != 60 {
		t.Errorf("resumed counts %+v", c)
	}
	if got := readFile(t, filepath.Join(out, "predictions.csv")); !bytes.Equal(got, want) {
		t.Errorf("resumed output differs from the uninterrupted run's:\n%s\nwant\n%s", got, want)
	}
	t.Logf("stopped after %d mini-batches, tore the journal's last record, resumed: %d bytes identical", done.Load(), len(want))
}

// stopAfter cancels the run once n Score calls have returned.
type stopAfter struct {
	batch.Scorer
	n      int32
	done   *atomic.Int32
	cancel context.CancelFunc
}

func (s stopAfter) Score(ctx context.Context, jobs []batch.Job) ([]batch.Result, error) {
	r, err := s.Scorer.Score(ctx, jobs)
	if s.done.Add(1) >= s.n {
		s.cancel()
	}
	return r, err
}

// A mini-batch that times out is tried again: here its first try hangs
// until the timeout, the second succeeds.
func TestRetryAfterTimeout(t *testing.T) {
	sc, _ := scorer(t, 4)
	in, out := t.TempDir(), filepath.Join(t.TempDir(), "out")
	writeFiles(t, in, map[string]string{"a.csv": "input_string\nhello\n", "b.csv": "input_string\nworld\n"})
	cfg := config(t, in, out)
	cfg.Timeout, cfg.MaxRetries = 500*time.Millisecond, 2
	var calls atomic.Int32
	hang := hangFirst{sc, &calls}
	start := time.Now()
	c := run(t, cfg, hang)
	if c.FilesSucceeded != 2 || c.RowsSucceeded != 2 || calls.Load() != 3 {
		t.Errorf("counts %+v after %d calls", c, calls.Load())
	}
	t.Logf("first try timed out after %s, retried: %+v in %s", cfg.Timeout, c, time.Since(start))
}

type hangFirst struct {
	batch.Scorer
	calls *atomic.Int32
}

func (h hangFirst) Score(ctx context.Context, jobs []batch.Job) ([]batch.Result, error) {
	if h.calls.Add(1) == 1 {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return h.Scorer.Score(ctx, jobs)
}

// Mini-batches that time out on every try, on the real engine (250 tokens
// cannot be generated in 1 ms), fail their files; past the error
// threshold the worker stops with ErrorThresholdExceeded, and the summary
// says failed.
func TestErrorThreshold(t *testing.T) {
	// On Long, whose 8192 positions take seconds to fill: on Tiny a row
	// could reach its 256 positions, and succeed, before a 1 ms timer
	// that fired late on a loaded machine.
	sc, _ := scorerOn(t, testmodel.Long, 4)
	in, out := t.TempDir(), filepath.Join(t.TempDir(), "out")
	files := map[string]string{}
	for i := range 6 {
		files[fmt.Sprintf("f%d.csv", i)] = "input_string\nonce upon a time\n"
	}
	writeFiles(t, in, files)
	cfg := config(t, in, out)
	cfg.Params.MaxNewTokens, cfg.Params.IgnoreEOS = 100000, true
	cfg.Timeout, cfg.MaxRetries, cfg.ErrorThreshold, cfg.MaxConcurrency = time.Millisecond, 1, 2, 1
	c, err := batch.Run(context.Background(), cfg, sc)
	var f *batch.Failure
	if !errors.As(err, &f) || f.Reason != batch.ReasonErrorThreshold || !f.Permanent {
		t.Fatalf("err %v, want the error threshold", err)
	}
	if c.FilesFailed != 3 || c.MiniBatchesDone != 3 || c.Reason != batch.ReasonErrorThreshold {
		t.Errorf("counts %+v: want 3 failed files (threshold 2), then a stop", c)
	}
	s := readSummary(t, out)
	if s.Status != "failed" || s.Reason != batch.ReasonErrorThreshold || len(s.FailedFiles) != 3 || !strings.Contains(s.FailedFiles[0].Error, "timed out after 1ms") {
		t.Errorf("summary %+v", s)
	}
	t.Logf("stopped: %+v; first failure: %s", c, s.FailedFiles[0].Error)

	// Without a threshold the run goes on to its end: every file failed.
	out2 := filepath.Join(t.TempDir(), "out")
	cfg.Output, cfg.ErrorThreshold = out2, -1
	c = run(t, cfg, sc)
	if c.FilesFailed != 6 || c.RowsFailed != 6 || c.MiniBatchesFailed != 6 {
		t.Errorf("counts %+v", c)
	}
}

// A file that cannot be read fails, and the others go on.
func TestUnreadableFile(t *testing.T) {
	sc, _ := scorer(t, 4)
	in, out := t.TempDir(), filepath.Join(t.TempDir(), "out")
	writeFiles(t, in, map[string]string{"a.csv": "input_string\nhello\n", "b.csv": "input_string\nx\n"})
	cfg := config(t, in, out)
	if err := os.Remove(filepath.Join(in, "b.csv")); err != nil { // listed, then gone
		t.Fatal(err)
	}
	c := run(t, cfg, sc)
	if c.FilesFailed != 1 || c.FilesSucceeded != 1 || c.RowsSucceeded != 1 {
		t.Errorf("counts %+v", c)
	}
}

// Three workers share the files; the merged output holds every row once,
// shard by shard, and appears only when the last shard is complete.
func TestShards(t *testing.T) {
	sc, _ := scorer(t, 8)
	in := t.TempDir()
	files := map[string]string{}
	for i := range 7 {
		files[fmt.Sprintf("f%d.csv", i)] = fmt.Sprintf("input_string\nfile %d a\nfile %d b\n", i, i)
	}
	writeFiles(t, in, files)
	single := filepath.Join(t.TempDir(), "single")
	run(t, config(t, in, single), sc)
	out := filepath.Join(t.TempDir(), "out")
	for i := range 3 {
		if _, err := os.Stat(filepath.Join(out, "predictions.csv")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("merged before shard %d ran: %v", i, err)
		}
		cfg := config(t, in, out)
		cfg.InstanceCount, cfg.InstanceIndex, cfg.MiniBatchSize = 3, 2-i, 2 // the last shard first
		c := run(t, cfg, sc)
		if want := []int{3, 2, 2}[2-i]; c.FilesTotal != want {
			t.Errorf("shard %d: %d files, want %d", 2-i, c.FilesTotal, want)
		}
	}
	got, want := predictions(t, out), predictions(t, single)
	// Shard order: files 0, 3, 6 (shard 0), 1, 4 (shard 1), 2, 5 (shard 2).
	var order []string
	for _, r := range got {
		if len(order) == 0 || order[len(order)-1] != r[2] {
			order = append(order, r[2])
		}
	}
	if fmt.Sprint(order) != "[f0.csv f3.csv f6.csv f1.csv f4.csv f2.csv f5.csv]" {
		t.Errorf("merged order %v", order)
	}
	slices.SortFunc(got, func(a, b []string) int { return strings.Compare(a[2]+a[0], b[2]+b[0]) })
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("3 shards:\n%q\n1 worker:\n%q", got, want)
	}
	s := readSummary(t, out)
	if s.Files.Total != 7 || s.Rows.Succeeded != 14 || s.MiniBatches.Total != 4 {
		t.Errorf("summary %+v", s)
	}
	// Merging again writes the same bytes.
	before := readFile(t, filepath.Join(out, "predictions.csv"))
	if ok, err := batch.Merge(out, 3, batch.AppendRow, "predictions.csv"); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if !bytes.Equal(before, readFile(t, filepath.Join(out, "predictions.csv"))) {
		t.Error("a second merge changed the output")
	}
}

// A worker refuses an output folder that holds another run's journal.
func TestOutputConflict(t *testing.T) {
	sc, _ := scorer(t, 2)
	in, out := t.TempDir(), filepath.Join(t.TempDir(), "out")
	writeFiles(t, in, map[string]string{"a.csv": "input_string\nhello\n"})
	cfg := config(t, in, out)
	run(t, cfg, sc)
	cfg.Params.MaxNewTokens = 9
	_, err := batch.Run(context.Background(), cfg, sc)
	var f *batch.Failure
	if !errors.As(err, &f) || f.Reason != batch.ReasonOutputConflict || !f.Permanent {
		t.Errorf("err %v, want an output conflict", err)
	}
}
