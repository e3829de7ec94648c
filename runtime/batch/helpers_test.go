package batch_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/leo-operator/leo/internal/testmodel"
	"github.com/leo-operator/leo/runtime/batch"
	"github.com/leo-operator/leo/runtime/batchio"
	"github.com/leo-operator/leo/runtime/chat"
	"github.com/leo-operator/leo/runtime/engine"
	"github.com/leo-operator/leo/runtime/loader"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/sample"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testmodel.Cleanup()
	os.Exit(code)
}

// scorer is an EngineScorer over the tiny test model, its engine running
// until the test ends.
func scorer(t *testing.T, slots int) (*batch.EngineScorer, *loader.Loaded) {
	t.Helper()
	return scorerOn(t, testmodel.Tiny, slots)
}

// scorerOn is scorer on a model of shape c.
func scorerOn(t *testing.T, c model.Config, slots int) (*batch.EngineScorer, *loader.Loaded) {
	t.Helper()
	l := testmodel.Load(t, c, quant.Q8_0)
	e, err := engine.New(l.Model, l.Tokenizer, engine.Config{MaxConcurrent: slots, KVType: quant.F16})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go e.Run(ctx)
	t.Cleanup(func() { cancel(); <-e.Done() })
	return batch.NewEngineScorer(e, l.Tokenizer, chat.Llama2()), l
}

// writeFiles writes name → content under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// config is a run over the input folder in into out, with short greedy
// generations.
func config(t *testing.T, in, out string) batch.Config {
	t.Helper()
	files, err := batch.ListFiles(in)
	if err != nil {
		t.Fatal(err)
	}
	p := sample.DefaultParams()
	p.MaxNewTokens = 6
	return batch.Config{
		Root: in, Files: files, Format: batchio.FormatAuto, Column: "input_string",
		Output: out, OutputAction: batch.AppendRow, OutputFileName: "predictions.csv",
		MiniBatchSize: 1, MaxConcurrency: 2, MaxRetries: 1, Timeout: time.Minute, ErrorThreshold: -1,
		InstanceCount: 1, Params: p, ModelName: "tiny",
	}
}

func run(t *testing.T, cfg batch.Config, sc batch.Scorer) batch.Counts {
	t.Helper()
	c, err := batch.Run(context.Background(), cfg, sc)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return c
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// predictions parses predictions.csv (RFC 4180, no header).
func predictions(t *testing.T, out string) [][]string {
	t.Helper()
	r := csv.NewReader(bytes.NewReader(readFile(t, filepath.Join(out, "predictions.csv"))))
	r.FieldsPerRecord = 3
	recs, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

type summary struct {
	Status, Reason, Message string
	Files                   struct{ Total, Succeeded, Failed int }
	MiniBatches             struct{ Total, Succeeded, Failed int } `json:"mini_batches"`
	Rows                    struct{ Total, Succeeded, Failed int64 }
	Outputs                 []string
	FailedFiles             []struct{ File, MiniBatch, Error string } `json:"failed_files"`
	FailedRows              []struct {
		File  string
		Row   int
		Error string
	} `json:"failed_rows"`
}

func readSummary(t *testing.T, out string) summary {
	t.Helper()
	var s summary
	if err := json.Unmarshal(readFile(t, filepath.Join(out, "summary.json")), &s); err != nil {
		t.Fatal(err)
	}
	return s
}
