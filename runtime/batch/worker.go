package batch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/leo-operator/leo/runtime/batchio"
	"github.com/leo-operator/leo/runtime/sample"
)

// Output actions (settings.outputAction).
const (
	AppendRow   = "append_row"
	SummaryOnly = "summary_only"
)

// Reasons a run fails with, in summary.json and the termination message.
const (
	ReasonErrorThreshold = "ErrorThresholdExceeded" // more failed files than --error-threshold
	ReasonOutputConflict = "OutputConflict"         // the output folder holds another run's journal
	ReasonInterrupted    = "Interrupted"            // stopped (SIGTERM): the next run resumes
	ReasonFailed         = "Failed"                 // an I/O error: the next run resumes
)

// Failure is a run that stopped before its end. Permanent ones (exit
// status 3) no retry of the pod can fix.
type Failure struct {
	Reason    string
	Permanent bool
	Err       error
}

func (f *Failure) Error() string { return f.Err.Error() }
func (f *Failure) Unwrap() error { return f.Err }

// Config is one worker's run.
type Config struct {
	// Root is the input folder; Files the input files relative to it
	// (slash-separated; ListFiles), all workers' files, sorted. A run on
	// one file has its folder as Root and its name as the one file.
	Root  string
	Files []string
	// Format and Column say how to read the files (batchio.Parse).
	Format batchio.Format
	Column string
	// Output is the output folder; OutputAction AppendRow or
	// SummaryOnly; OutputFileName the predictions file's name.
	Output, OutputAction, OutputFileName string
	// MiniBatchSize is files per mini-batch; MaxConcurrency the mini-
	// batches this worker works on at once.
	MiniBatchSize, MaxConcurrency int
	// MaxRetries is the tries of a failed mini-batch after the first;
	// Timeout one try's limit.
	MaxRetries int
	Timeout    time.Duration
	// ErrorThreshold is the failed files of this shard that stop the
	// run; -1 never.
	ErrorThreshold int
	// InstanceCount workers share the files; this one does shard
	// InstanceIndex.
	InstanceCount, InstanceIndex int
	// Params are the run's generation parameters (rows may override
	// them); ReturnFullText puts the prompt before each prediction.
	Params         sample.Params
	ReturnFullText bool
	// ModelName is the "model" of OpenAI outputs.
	ModelName string
	// Settings are echoed in summary.json.
	Settings map[string]any
	// Log receives the worker's log lines (nil: none); Progress its
	// progress JSON lines (nil: none).
	Log      *slog.Logger
	Progress io.Writer
}

func (c *Config) check() error {
	switch {
	case c.MiniBatchSize < 1 || c.MaxConcurrency < 1 || c.InstanceCount < 1:
		return errors.New("mini-batch size, max concurrency and instance count must be at least 1")
	case c.InstanceIndex < 0 || c.InstanceIndex >= c.InstanceCount:
		return fmt.Errorf("instance index %d is not in [0, %d)", c.InstanceIndex, c.InstanceCount)
	case c.MaxRetries < 0 || c.Timeout <= 0 || c.ErrorThreshold < -1:
		return errors.New("max retries must be >= 0, the timeout > 0, the error threshold >= -1")
	case c.OutputAction != AppendRow && c.OutputAction != SummaryOnly:
		return fmt.Errorf("output action %q is not %s or %s", c.OutputAction, AppendRow, SummaryOnly)
	case c.OutputFileName == "" || filepath.Base(c.OutputFileName) != c.OutputFileName || c.OutputFileName[0] == '.':
		return fmt.Errorf("output file name %q must be a plain file name", c.OutputFileName)
	}
	return nil
}

// fingerprint digests what decides the shard's output, so that a journal
// is resumed only by the run that wrote it.
func (c *Config) fingerprint(mbs []MiniBatch) string {
	b, err := json.Marshal(struct {
		MiniBatches            []MiniBatch
		Format, Column, Action string
		Count, Index           int
		Params                 sample.Params
		FullText               bool
		Model                  string
	}{mbs, string(c.Format), c.Column, c.OutputAction, c.InstanceCount, c.InstanceIndex, c.Params, c.ReturnFullText, c.ModelName})
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// The layout of the output folder's working files.
func workDir(output string) string { return filepath.Join(output, ".leo-batch") }
func shardDir(output string, index int) string {
	return filepath.Join(workDir(output), "shards", strconv.Itoa(index))
}

// worker is one Run.
type worker struct {
	cfg Config
	sc  Scorer
	log *slog.Logger
}

// Run works this worker's shard to its end, resuming from its journal,
// and merges the final outputs when every shard is complete. It returns
// the shard's counts; its error is a *Failure.
func Run(ctx context.Context, cfg Config, sc Scorer) (Counts, error) {
	if err := cfg.check(); err != nil {
		return Counts{}, &Failure{Reason: ReasonFailed, Permanent: true, Err: err}
	}
	w := &worker{cfg: cfg, sc: sc, log: cfg.Log}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	return w.run(ctx)
}

func (w *worker) run(ctx context.Context) (Counts, error) {
	cfg := &w.cfg
	mbs := Plan(cfg.Files, cfg.InstanceCount, cfg.InstanceIndex, cfg.MiniBatchSize)
	counts := Counts{MiniBatchesTotal: len(mbs)}
	for _, mb := range mbs {
		counts.FilesTotal += len(mb.Files)
	}
	dir := shardDir(cfg.Output, cfg.InstanceIndex)
	if err := mkdirDurable(dir); err != nil {
		return counts, &Failure{Reason: ReasonFailed, Err: err}
	}
	j, raw, torn, err := OpenJournal(filepath.Join(dir, "journal"))
	if err != nil {
		return counts, &Failure{Reason: ReasonFailed, Err: fmt.Errorf("journal: %w", err)}
	}
	defer func() { _ = j.Close() }() // appends were fsync'ed
	if torn > 0 {
		w.log.Warn("dropped the torn end of the journal (a crash mid-append); its mini-batch is redone", "bytes", torn)
	}

	fp := cfg.fingerprint(mbs)
	started := time.Now().UTC()
	done := map[int]bool{}
	for i, b := range raw {
		r, err := unmarshalRecord(b)
		if err != nil {
			return counts, &Failure{Reason: ReasonFailed, Err: fmt.Errorf("journal record %d: %w", i, err)}
		}
		switch {
		case i == 0 && (r.Kind != kindStart || r.Fingerprint != fp):
			return counts, &Failure{Reason: ReasonOutputConflict, Permanent: true, Err: fmt.Errorf(
				"%s holds the journal of another run (other input files, settings or generation parameters); use an empty output folder", dir)}
		case i == 0:
			started = r.Started
		case r.Kind == kindMiniBatch && r.MiniBatch < len(mbs) && !done[r.MiniBatch]:
			done[r.MiniBatch] = true
			counts.add(r)
		}
	}
	if len(raw) == 0 {
		if err := j.Append((&record{Kind: kindStart, Fingerprint: fp, Started: started}).marshal()); err != nil {
			return counts, &Failure{Reason: ReasonFailed, Err: fmt.Errorf("journal: %w", err)}
		}
	}
	if len(done) > 0 {
		w.log.Info("resuming from the journal", "mini_batches_done", len(done), "of", len(mbs))
	}
	// A failed marker of an earlier run (threshold) goes: this run decides anew.
	if m, err := readMarker(dir); err == nil && m.Status != statusSucceeded {
		if err := os.Remove(markerPath(dir)); err != nil {
			return counts, &Failure{Reason: ReasonFailed, Err: err}
		}
	}
	w.progress(counts)

	var failure *Failure
	if w.exceeded(counts) {
		failure = w.thresholdFailure(counts)
	} else {
		var pending []MiniBatch
		for _, mb := range mbs {
			if !done[mb.Index] {
				pending = append(pending, mb)
			}
		}
		failure = w.work(ctx, j, pending, &counts)
	}
	if failure != nil && !failure.Permanent {
		counts.Reason, counts.Message = failure.Reason, failure.Error()
		return counts, failure // the next run resumes: no marker
	}
	m := marker{Index: cfg.InstanceIndex, Status: statusSucceeded, Counts: counts, Started: started,
		Finished: time.Now().UTC(), Settings: cfg.Settings}
	if failure != nil {
		m.Status, m.Reason, m.Message = statusFailed, failure.Reason, failure.Error()
		counts.Reason, counts.Message = failure.Reason, failure.Error()
	}
	if err := writeMarker(dir, m); err != nil {
		return counts, &Failure{Reason: ReasonFailed, Err: err}
	}
	merged, err := Merge(cfg.Output, cfg.InstanceCount, cfg.OutputAction, cfg.OutputFileName)
	switch {
	case err != nil && failure == nil:
		return counts, &Failure{Reason: ReasonFailed, Err: fmt.Errorf("merging the outputs: %w", err)}
	case err != nil:
		w.log.Error("merging the outputs", "err", err)
	case merged:
		w.log.Info("all shards complete: merged the outputs", "output", cfg.Output)
	default:
		w.log.Info("shard complete; another worker merges when all are", "shard", cfg.InstanceIndex)
	}
	if failure != nil {
		return counts, failure
	}
	return counts, nil
}

func (w *worker) exceeded(c Counts) bool {
	return w.cfg.ErrorThreshold >= 0 && c.FilesFailed > w.cfg.ErrorThreshold
}

func (w *worker) thresholdFailure(c Counts) *Failure {
	return &Failure{Reason: ReasonErrorThreshold, Permanent: true,
		Err: fmt.Errorf("%d files failed, more than the error threshold of %d", c.FilesFailed, w.cfg.ErrorThreshold)}
}

// work runs the pending mini-batches, MaxConcurrency at once, and
// journals each as it finishes (in whatever order they finish: the merge
// orders them). It stops at the error threshold, or when ctx ends; then
// the mini-batches in flight are dropped, not journaled, and redone by
// the next run.
func (w *worker) work(ctx context.Context, j *Journal, pending []MiniBatch, counts *Counts) *Failure {
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	feed := make(chan MiniBatch)
	out := make(chan *record)
	var wg sync.WaitGroup
	for range min(w.cfg.MaxConcurrency, len(pending)) {
		wg.Go(func() {
			for mb := range feed {
				r := w.miniBatch(runCtx, mb)
				if r == nil {
					continue // stopping
				}
				select {
				case out <- r:
				case <-runCtx.Done():
				}
			}
		})
	}
	go func() {
		defer close(feed)
		for _, mb := range pending {
			select {
			case feed <- mb:
			case <-runCtx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(out) }()

	var failure *Failure
	for r := range out {
		if failure != nil {
			continue // stopping: drain
		}
		if err := j.Append(r.marshal()); err != nil {
			failure = &Failure{Reason: ReasonFailed, Err: fmt.Errorf("journal: %w", err)}
			stop()
			continue
		}
		counts.add(r)
		w.progress(*counts)
		if w.exceeded(*counts) {
			failure = w.thresholdFailure(*counts)
			w.log.Error("error threshold exceeded: stopping", "files_failed", counts.FilesFailed, "threshold", w.cfg.ErrorThreshold)
			stop()
		}
	}
	if failure == nil && ctx.Err() != nil {
		failure = &Failure{Reason: ReasonInterrupted, Err: fmt.Errorf("stopped before the end (%w); the next run resumes", context.Cause(ctx))}
	}
	return failure
}

// progress writes the counts as a progress JSON line.
func (w *worker) progress(c Counts) {
	if w.cfg.Progress == nil {
		return
	}
	c.Event = "progress"
	b, _ := json.Marshal(c) // plain data
	_, _ = w.cfg.Progress.Write(append(b, '\n'))
}

// mkdirDurable makes dir and its missing parents, fsyncing each parent
// whose entries changed, so that the folders survive a power cut.
func mkdirDurable(dir string) error {
	var made []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil || d == filepath.Dir(d) {
			break
		}
		made = append(made, d)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, d := range slices.Backward(made) {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}
