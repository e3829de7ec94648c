package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/leo-operator/leo/runtime/batch"
	"github.com/leo-operator/leo/runtime/batchio"
	"github.com/leo-operator/leo/runtime/engine"
	"github.com/leo-operator/leo/runtime/fetch"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/sample"
)

// batchConfig is everything `leo-runtime batch` is told, by flags or by
// their LEO_* environment variables (a BatchDeployment's pod sets
// LEO_INSTANCE_INDEX). The flags are docs/batch.md's, named after the
// BatchDeployment's fields.
type batchConfig struct {
	model, input, inputType, format, column, output string
	outputAction, outputFileName, loggingLevel      string
	chatTemplate, modelName, resultFile             string
	miniBatchSize, maxConcurrency, maxRetries       int
	errorThreshold, instanceCount, instanceIndex    int
	threads, ctxSize, batchConcurrency              int
	timeout                                         time.Duration
	returnFullText, mergeOnly, allowHTTP            bool
}

func batchFlags(fs *flag.FlagSet) *batchConfig {
	c := &batchConfig{}
	fs.StringVar(&c.model, "model", "", "GGUF model file (required)")
	fs.StringVar(&c.input, "input", "", "the input: a file or folder, https://host/path/file or s3://bucket/prefix (required)")
	fs.StringVar(&c.inputType, "input-type", "uri_folder", "uri_file (one file) or uri_folder (every file of the folder, recursively, hidden ones skipped)")
	fs.StringVar(&c.format, "format", "auto", "auto, csv, jsonl or openai; auto decides per file")
	fs.StringVar(&c.column, "column", "input_string", "the prompt's CSV column or JSONL key")
	fs.StringVar(&c.output, "output", "", "output folder, created (required)")
	fs.StringVar(&c.outputAction, "output-action", batch.AppendRow, "append_row (a predictions file) or summary_only")
	fs.StringVar(&c.outputFileName, "output-file-name", "predictions.csv", "the predictions file's name; OpenAI batch inputs' results go to its name with .jsonl")
	fs.IntVar(&c.miniBatchSize, "mini-batch-size", 10, "input files per mini-batch")
	fs.IntVar(&c.maxConcurrency, "max-concurrency-per-instance", 1, "mini-batches this worker works on at once")
	fs.IntVar(&c.maxRetries, "max-retries", 3, "tries of a failed or timed-out mini-batch after the first")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "one try of a mini-batch's time limit")
	fs.IntVar(&c.errorThreshold, "error-threshold", -1, "failed files of this worker before it stops (exit status 3); -1 never")
	fs.StringVar(&c.loggingLevel, "logging-level", "info", "info, warning or debug (progress lines are always written)")
	fs.IntVar(&c.instanceCount, "instance-count", 1, "how many workers share the files")
	fs.IntVar(&c.instanceIndex, "instance-index", 0, "this worker's shard: files k with k mod instance-count = instance-index")
	fs.BoolVar(&c.returnFullText, "return-full-text", false, "put the prompt before each prediction (not for chat rows)")
	fs.IntVar(&c.threads, "threads", runtime.GOMAXPROCS(0), "CPU threads (default: GOMAXPROCS, which follows the container's CPU limit)")
	fs.IntVar(&c.ctxSize, "ctx-size", 0, "positions per sequence, prompt and generated tokens together (default: the model's context length, at most 4096)")
	fs.IntVar(&c.batchConcurrency, "batch-concurrency", 16, "sequences generated at once (continuous batching), over all mini-batches in flight")
	fs.StringVar(&c.chatTemplate, "chat-template", "", "chat format of chat rows: llama2, mistral, chatml, llama3 or zephyr (default: the model's)")
	fs.StringVar(&c.modelName, "model-name", "", "the \"model\" of OpenAI batch outputs (default: the file's general.name)")
	fs.StringVar(&c.resultFile, "result-file", defaultResultFile(), "write the final counts as JSON here, for the operator (default /dev/termination-log when it exists; empty: nowhere)")
	fs.BoolVar(&c.allowHTTP, "allow-http", false, "allow a plain-http input or S3 endpoint (AWS_ENDPOINT_URL)")
	fs.BoolVar(&c.mergeOnly, "merge-only", false, "only merge the shards' outputs, when every shard is complete (no --model needed)")
	return c
}

func runBatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("batch", flag.ContinueOnError)
	fs.Usage = func() {
		_, _ = fmt.Fprint(fs.Output(), `usage: leo-runtime batch --model FILE --input PATH_OR_URI --output DIR [flags]

Scores every row of the input files exactly once, as a BatchDeployment's
worker (docs/batch.md): predictions in OUTPUT/predictions.csv (or OpenAI batch
output), OUTPUT/summary.json, progress JSON lines on stderr. A worker killed
and started again resumes from its journal in OUTPUT/.leo-batch.
Exit status: 0 done, 1 a failure worth retrying, 2 usage, 3 permanent.

`)
		fs.PrintDefaults()
	}
	c := batchFlags(fs)
	params := samplingFlags(fs)
	if err := flagsFromEnv(fs); err != nil {
		return err
	}
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	p := params()
	if err := p.Validate(); err != nil {
		return usageError{asFlags.Replace(strings.ReplaceAll(err.Error(), "\n", "; "))}
	}
	level := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warning": slog.LevelWarn}[c.loggingLevel]
	errw := &lockedWriter{w: stderr} // log lines and progress lines come from several goroutines
	log := slog.New(slog.NewTextHandler(errw, &slog.HandlerOptions{Level: level}))

	if c.mergeOnly {
		merged, err := batch.Merge(c.output, c.instanceCount, c.outputAction, c.outputFileName)
		switch {
		case err != nil:
			return err
		case !merged:
			return fmt.Errorf("not every one of the %d shards in %s is complete yet", c.instanceCount, c.output)
		}
		_, err = fmt.Fprintf(stdout, "merged %d shards into %s\n", c.instanceCount, c.output)
		return err
	}

	counts, err := c.run(ctx, p, log, errw)
	if rerr := c.writeResult(counts, err); rerr != nil {
		log.Error("writing the result", "file", c.resultFile, "err", rerr)
	}
	if err != nil {
		return err
	}
	counts.Event = "result"
	b, _ := json.Marshal(counts) // plain data
	_, err = fmt.Fprintln(stdout, string(b))
	return err
}

// check refuses flag values out of range (usage errors, exit status 2).
func (c *batchConfig) check() error {
	if c.mergeOnly {
		if err := required(map[string]string{"output": c.output}); err != nil {
			return err
		}
	} else if err := required(map[string]string{"model": c.model, "input": c.input, "output": c.output}); err != nil {
		return err
	}
	switch {
	case c.inputType != "uri_file" && c.inputType != "uri_folder":
		return usagef("--input-type %q is not uri_file or uri_folder", c.inputType)
	case !slices.Contains([]string{"auto", "csv", "jsonl", "openai"}, c.format):
		return usagef("--format %q is not auto, csv, jsonl or openai", c.format)
	case c.outputAction != batch.AppendRow && c.outputAction != batch.SummaryOnly:
		return usagef("--output-action %q is not append_row or summary_only", c.outputAction)
	case c.outputFileName == "" || filepath.Base(c.outputFileName) != c.outputFileName || strings.HasPrefix(c.outputFileName, ".") || c.outputFileName == "summary.json":
		return usagef("--output-file-name %q must be a plain file name, not hidden, not summary.json", c.outputFileName)
	case c.miniBatchSize < 1 || c.maxConcurrency < 1 || c.instanceCount < 1 || c.batchConcurrency < 1 || c.threads < 1:
		return usagef("--mini-batch-size, --max-concurrency-per-instance, --instance-count, --batch-concurrency and --threads must be at least 1")
	case c.instanceIndex < 0 || c.instanceIndex >= c.instanceCount:
		return usagef("--instance-index %d must be in [0, %d) (--instance-count)", c.instanceIndex, c.instanceCount)
	case c.maxRetries < 0 || c.timeout <= 0 || c.errorThreshold < -1 || c.ctxSize < 0:
		return usagef("--max-retries and --ctx-size must not be negative, --timeout must be positive, --error-threshold at least -1")
	case c.loggingLevel != "info" && c.loggingLevel != "warning" && c.loggingLevel != "debug":
		return usagef("--logging-level %q is not info, warning or debug", c.loggingLevel)
	}
	return nil
}

// run loads the model, starts the engine and works this worker's shard.
func (c *batchConfig) run(ctx context.Context, p sample.Params, log *slog.Logger, progress io.Writer) (batch.Counts, error) {
	root, files, err := c.inputFiles(ctx, log, progress)
	if err != nil {
		return batch.Counts{}, err
	}
	start := time.Now()
	if _, err := os.Stat(c.model); err != nil {
		return batch.Counts{}, permanentBatch("ModelNotFound", fmt.Errorf("--model: %w", err))
	}
	l, err := load(c.model, c.threads, progress)
	if err != nil {
		return batch.Counts{}, permanentBatch("InvalidModel", err)
	}
	defer l.Close()
	ctxSize := c.ctxSize
	if ctxSize == 0 {
		ctxSize = min(l.Model.Config.ContextLength, 4096)
	}
	tmpl, err := chatTemplate(c.chatTemplate, l.ChatTemplate, log)
	if err != nil {
		return batch.Counts{}, err
	}
	e, err := engine.New(l.Model, l.Tokenizer, engine.Config{
		MaxConcurrent: c.batchConcurrency, ContextSize: ctxSize, KVType: quant.F16,
		BatchTokens: max(256, c.batchConcurrency),
	})
	if err != nil {
		return batch.Counts{}, usageError{err.Error()}
	}
	engineCtx, stopEngine := context.WithCancel(context.Background())
	go e.Run(engineCtx)
	// The engine stops before the model's memory is unmapped (l.Close).
	defer func() {
		stopEngine()
		<-e.Done()
	}()
	name := c.modelName
	if name == "" {
		name = l.Name
	}
	log.Info("model loaded", "model", c.model, "seconds", time.Since(start).Seconds(), "threads", c.threads,
		"context", ctxSize, "batch_concurrency", e.Config().MaxConcurrent, "chat_template", tmpl.Name(), "files", len(files))

	run := time.Now()
	counts, err := batch.Run(ctx, batch.Config{
		Root: root, Files: files, Format: batchio.Format(c.format), Column: c.column,
		Output: c.output, OutputAction: c.outputAction, OutputFileName: c.outputFileName,
		MiniBatchSize: c.miniBatchSize, MaxConcurrency: c.maxConcurrency,
		MaxRetries: c.maxRetries, Timeout: c.timeout, ErrorThreshold: c.errorThreshold,
		InstanceCount: c.instanceCount, InstanceIndex: c.instanceIndex,
		Params: p, ReturnFullText: c.returnFullText, ModelName: name,
		Settings: c.settings(p), Log: log, Progress: progress,
	}, batch.NewEngineScorer(e, l.Tokenizer, tmpl))
	st := e.Stats()
	secs := time.Since(run).Seconds()
	log.Info("finished", "seconds", secs, "generated_tokens", st.GeneratedTokens,
		"tok_s", float64(st.GeneratedTokens)/max(secs, 1e-9), "prompt_tokens", st.PromptTokens)
	var f *batch.Failure
	if errors.As(err, &f) && f.Permanent {
		return counts, permanentBatch(f.Reason, f)
	}
	return counts, err
}

// inputFiles returns the input's folder and its files relative to it:
// a local file or folder as it is; an https:// or s3:// input fetched
// first into OUTPUT/.leo-batch/input/<instance> (resumable, verified;
// per instance, so that workers never write the same files).
func (c *batchConfig) inputFiles(ctx context.Context, log *slog.Logger, progress io.Writer) (string, []string, error) {
	src, err := fetch.ParseSource(c.input, c.allowHTTP)
	if err != nil {
		return "", nil, usageError{"--input: " + err.Error()}
	}
	switch src.Kind {
	case fetch.HF:
		return "", nil, usagef("--input: hf:// is a model source; want a path, https:// or s3://")
	case fetch.HTTPS, fetch.S3:
		dest := filepath.Join(c.output, ".leo-batch", "input", fmt.Sprint(c.instanceIndex))
		log.Info("fetching the input", "source", src.String(), "into", dest)
		res, err := fetch.Pull(ctx, src, dest, fetch.Options{AllowHTTP: c.allowHTTP, Report: fetch.JSONLines(progress)})
		if err != nil {
			if _, ok := fetch.HTTPStatus(err); ok {
				return "", nil, permanentBatch("InputNotFound", err)
			}
			return "", nil, &batch.Failure{Reason: "InputFetchFailed", Err: err}
		}
		var files []string
		for _, f := range res.Manifest.Files {
			if !strings.HasPrefix(path0(f.Name), ".") {
				files = append(files, f.Name)
			}
		}
		slices.Sort(files)
		if c.inputType == "uri_file" && len(files) != 1 {
			return "", nil, permanentBatch("InvalidInput", fmt.Errorf("--input-type uri_file, but %s has %d files", src, len(files)))
		}
		return dest, files, nil
	}
	fi, err := os.Stat(src.Path)
	if err != nil {
		return "", nil, permanentBatch("InputNotFound", fmt.Errorf("--input: %w", err))
	}
	if !fi.IsDir() {
		return filepath.Dir(src.Path), []string{filepath.Base(src.Path)}, nil
	}
	if c.inputType == "uri_file" {
		return "", nil, permanentBatch("InvalidInput", fmt.Errorf("--input %s is a folder, but --input-type is uri_file", src.Path))
	}
	files, err := batch.ListFiles(src.Path, c.output) // the output may lie inside the input
	if err != nil {
		return "", nil, permanentBatch("InputNotFound", err)
	}
	return src.Path, files, nil
}

// path0 is a slash-separated path's first element.
func path0(p string) string { first, _, _ := strings.Cut(p, "/"); return first }

// settings are the run's settings, as summary.json lists them.
func (c *batchConfig) settings(p sample.Params) map[string]any {
	return map[string]any{
		"input": c.input, "input_type": c.inputType, "format": c.format, "column": c.column,
		"output_action": c.outputAction, "output_file_name": c.outputFileName,
		"mini_batch_size": c.miniBatchSize, "max_concurrency_per_instance": c.maxConcurrency,
		"max_retries": c.maxRetries, "timeout": c.timeout.String(), "error_threshold": c.errorThreshold,
		"logging_level": c.loggingLevel, "instance_count": c.instanceCount,
		"parameters": p, "return_full_text": c.returnFullText, "model": c.model,
	}
}

// writeResult writes the final counts where the operator reads them (the
// termination message), with the reason and message of a failure.
func (c *batchConfig) writeResult(counts batch.Counts, runErr error) error {
	if c.resultFile == "" {
		return nil
	}
	counts.Event = ""
	if runErr != nil {
		counts.Reason = batch.ReasonFailed
		var f *batch.Failure
		var be *batchError
		switch {
		case errors.As(runErr, &be):
			counts.Reason = be.reason
		case errors.As(runErr, &f):
			counts.Reason = f.Reason
		case errors.As(runErr, new(usageError)):
			counts.Reason = "InvalidSettings"
		}
		counts.Message = firstLineOf(runErr.Error(), maxResultBytes)
	}
	b, _ := json.Marshal(counts) // plain data
	return writeResult(c.resultFile, b)
}

func firstLineOf(s string, n int) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > n {
		s = s[:n]
	}
	return s
}

// batchError is a batch run that failed for good: exit status 3, so that
// the Job's podFailurePolicy fails the Job at once instead of retrying.
type batchError struct {
	reason string
	err    error
}

func (e *batchError) Error() string { return e.err.Error() }
func (e *batchError) Unwrap() error { return e.err }

// permanent: the Job must not retry the worker (exit status 3).
func (e *batchError) permanent() bool { return true }

func permanentBatch(reason string, err error) error { return &batchError{reason: reason, err: err} }
