package batch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/leo-operator/leo/runtime/batchio"
)

// inputFile is one file of a mini-batch, read and parsed.
type inputFile struct {
	name    string
	format  batchio.Format
	rows    []batchio.Row
	err     error // the file cannot be read or parsed: it fails
	created int64 // the "created" of its OpenAI outputs: the file's mtime
	// Per row: its job's index in the mini-batch's jobs, or -1 when the
	// row failed before generation (rowErr says why).
	job    []int
	rowErr []error
	full   []bool // return_full_text
}

// miniBatch works one mini-batch, with its retries, and returns its
// journal record; nil when ctx ended first (the worker is stopping).
func (w *worker) miniBatch(ctx context.Context, mb MiniBatch) *record {
	cfg := &w.cfg
	id := mb.ID(cfg.InstanceIndex)
	files := make([]*inputFile, len(mb.Files))
	var jobs []Job
	for i, name := range mb.Files {
		f := w.read(name)
		files[i] = f
		for k, row := range f.rows {
			f.job[k] = -1
			if row.Err != nil {
				f.rowErr[k] = row.Err
				continue
			}
			p, full, err := rowParams(cfg.Params, cfg.ReturnFullText, row.Overrides, name, row.Number)
			if err != nil {
				f.rowErr[k] = fmt.Errorf("parameters: %w", err)
				continue
			}
			f.full[k] = full
			job := Job{Prompt: row.Prompt, Params: p}
			if row.Messages != nil {
				job.Messages = make([]Message, len(row.Messages))
				for m, msg := range row.Messages {
					job.Messages[m] = Message{Role: msg.Role, Content: msg.Content}
				}
			}
			f.job[k] = len(jobs)
			jobs = append(jobs, job)
		}
	}

	var results []Result
	var failed error
	attempts := 0
	for len(jobs) > 0 && attempts <= cfg.MaxRetries {
		attempts++
		tctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		res, err := w.sc.Score(tctx, jobs)
		cancel()
		if ctx.Err() != nil {
			return nil // stopping: not a failure of the mini-batch
		}
		if err == nil {
			results, failed = res, nil
			break
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("timed out after %s", cfg.Timeout)
		}
		failed = fmt.Errorf("mini-batch %s failed after %d tries: %w", id, attempts, err)
		w.log.Warn("mini-batch failed", "mini_batch", id, "try", attempts, "of", cfg.MaxRetries+1, "err", err)
	}
	r := w.record(mb, id, files, results, failed)
	r.Attempts = attempts
	w.log.Debug("mini-batch done", "mini_batch", id, "files", len(files), "rows", len(jobs), "tries", attempts, "failed", r.Failed)
	return r
}

// read reads and parses one input file.
func (w *worker) read(name string) *inputFile {
	path := filepath.Join(w.cfg.Root, filepath.FromSlash(name))
	f := &inputFile{name: name}
	if st, err := os.Stat(path); err == nil {
		f.created = st.ModTime().Unix()
	}
	f.format, f.rows, f.err = batchio.ReadFile(path, w.cfg.Format, w.cfg.Column)
	if f.err != nil {
		f.rows = nil
		w.log.Warn("input file failed", "file", name, "err", f.err)
	}
	// Output follows row numbers, whatever order the parser gave.
	slices.SortStableFunc(f.rows, func(a, b batchio.Row) int { return a.Number - b.Number })
	f.job, f.rowErr, f.full = make([]int, len(f.rows)), make([]error, len(f.rows)), make([]bool, len(f.rows))
	return f
}

// record makes the journal record of a finished mini-batch: the counts,
// the failures and the output lines, files in order, rows by number.
// failed is the error of a mini-batch that failed after its retries.
func (w *worker) record(mb MiniBatch, id string, files []*inputFile, results []Result, failed error) *record {
	cfg := &w.cfg
	keep := cfg.OutputAction == AppendRow
	r := &record{Kind: kindMiniBatch, MiniBatch: mb.Index, ID: id, Failed: failed != nil}
	if failed != nil {
		r.Error = failed.Error()
	}
	for _, f := range files {
		fr := fileResult{Name: f.name, Format: string(f.format), Rows: len(f.rows)}
		switch {
		case f.err != nil:
			fr.Failed, fr.Error = true, f.err.Error()
		case failed != nil:
			fr.Failed, fr.Error, fr.RowsFailed = true, failed.Error(), len(f.rows)
		}
		openAI := f.format == batchio.FormatOpenAI
		for k, row := range f.rows {
			var rowErr error
			var res Result
			switch {
			case failed != nil:
				rowErr = failed
			case f.rowErr[k] != nil:
				rowErr = f.rowErr[k]
			default:
				res = results[f.job[k]]
				rowErr = res.Err
			}
			if rowErr != nil && failed == nil {
				fr.RowsFailed++
				r.FailedRows = append(r.FailedRows, rowFailure{File: f.name, Row: row.Number, Error: rowErr.Error()})
			} else if rowErr == nil {
				fr.RowsSucceeded++
			}
			if !keep {
				continue
			}
			text := res.Text
			if rowErr == nil && f.full[k] && row.Messages == nil {
				text = row.Prompt + text
			}
			switch {
			case openAI:
				rid := rowID(f.name, row.Number, cfg.Params.Seed)
				o := batchio.OpenAIResult{ID: "batch_req_" + rid, CustomID: row.CustomID}
				switch {
				case rowErr == nil:
					o.StatusCode, o.RequestID = 200, "req_"+rid
					o.Body = openAIBody(row.URL, rid, f.created, cfg.ModelName, text, res)
				case failed != nil:
					o.ErrCode, o.ErrMessage = "mini_batch_failed", rowErr.Error()
				default:
					o.ErrCode, o.ErrMessage = "invalid_request", rowErr.Error()
				}
				r.OpenAI = batchio.AppendOpenAIResult(r.OpenAI, o)
			case rowErr == nil:
				r.Predictions = batchio.AppendPrediction(r.Predictions, row.Number, text, f.name)
			}
		}
		r.Files = append(r.Files, fr)
	}
	return r
}
