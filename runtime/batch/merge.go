package batch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Shard statuses, in done markers and summary.json.
const (
	statusSucceeded = "succeeded"
	statusFailed    = "failed"
)

// marker is a shard's done marker, written (atomically) after its last
// journal record: the shard is complete, succeeded or failed for good.
type marker struct {
	Index    int            `json:"index"`
	Status   string         `json:"status"`
	Reason   string         `json:"reason,omitempty"`
	Message  string         `json:"message,omitempty"`
	Counts   Counts         `json:"counts"`
	Started  time.Time      `json:"started"`
	Finished time.Time      `json:"finished"`
	Settings map[string]any `json:"settings,omitempty"`
}

func markerPath(shard string) string { return filepath.Join(shard, "done") }

func readMarker(shard string) (*marker, error) {
	b, err := os.ReadFile(markerPath(shard))
	if err != nil {
		return nil, err
	}
	m := &marker{}
	return m, json.Unmarshal(b, m)
}

func writeMarker(shard string, m marker) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(markerPath(shard), markerPath(shard)+".tmp", func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}

// maxListed bounds the failed files and rows summary.json lists.
const maxListed = 1000

// Summary is OUTPUT/summary.json.
type Summary struct {
	Status      string     `json:"status"`
	Reason      string     `json:"reason,omitempty"`
	Message     string     `json:"message,omitempty"`
	Files       tally      `json:"files"`
	Rows        tally64    `json:"rows"`
	MiniBatches tally      `json:"mini_batches"`
	Outputs     []string   `json:"outputs,omitempty"`
	FailedFiles []failedIn `json:"failed_files"`
	// FailedFilesNotListed counts the failed files past the first 1,000.
	FailedFilesNotListed int          `json:"failed_files_not_listed,omitempty"`
	FailedRows           []rowFailure `json:"failed_rows"`
	FailedRowsNotListed  int64        `json:"failed_rows_not_listed,omitempty"`
	Settings             any          `json:"settings,omitempty"`
	StartTime            time.Time    `json:"start_time"`
	EndTime              time.Time    `json:"end_time"`
	Shards               []shardLine  `json:"shards"`
}

type tally struct {
	Total     int `json:"total"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
}

type tally64 struct {
	Total     int64 `json:"total"`
	Succeeded int64 `json:"succeeded"`
	Failed    int64 `json:"failed"`
}

type failedIn struct {
	File      string `json:"file"`
	MiniBatch string `json:"mini_batch"`
	Error     string `json:"error"`
}

type shardLine struct {
	Index   int    `json:"index"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	Counts  Counts `json:"counts"`
}

// Merge makes the final outputs from the shards' journals when every one
// of count shards has its done marker, and reports whether it did. The
// predictions file (append_row), the OpenAI batch output (when an input
// file was one) and summary.json are made from the journal records, shard
// by shard, mini-batch by mini-batch, each written to a temporary file,
// fsync'ed and renamed into place: any worker may merge, any number of
// times, and always writes the same bytes (summary.json aside, whose end
// time is the last shard's).
func Merge(output string, count int, outputAction, outputFileName string) (bool, error) {
	markers := make([]*marker, count)
	for i := range count {
		m, err := readMarker(shardDir(output, i))
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("shard %d's done marker: %w", i, err)
		}
		markers[i] = m
	}
	shards := make([][]*record, count)
	for i := range count {
		recs, err := shardRecords(shardDir(output, i))
		if err != nil {
			return false, fmt.Errorf("shard %d: %w", i, err)
		}
		shards[i] = recs
	}
	tmpDir := filepath.Join(workDir(output), "tmp")
	if err := os.MkdirAll(tmpDir, 0o755); err != nil {
		return false, err
	}
	// The temporary names are per merge attempt of a process, so that two
	// workers merging at once do not write the same file.
	tmp := func(name string) string {
		return filepath.Join(tmpDir, strconv.Itoa(os.Getpid())+"-"+name)
	}
	sum := summarize(markers, shards)
	if outputAction == AppendRow {
		out := outputFileName
		if err := writeFileAtomic(filepath.Join(output, out), tmp(out), func(w io.Writer) error {
			return concat(w, shards, func(r *record) []byte { return r.Predictions })
		}); err != nil {
			return false, err
		}
		sum.Outputs = append(sum.Outputs, out)
		if hasOpenAI(shards) {
			out = strings.TrimSuffix(outputFileName, filepath.Ext(outputFileName)) + ".jsonl"
			if err := writeFileAtomic(filepath.Join(output, out), tmp(out), func(w io.Writer) error {
				return concat(w, shards, func(r *record) []byte { return r.OpenAI })
			}); err != nil {
				return false, err
			}
			sum.Outputs = append(sum.Outputs, out)
		}
	}
	b, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return false, err
	}
	return true, writeFileAtomic(filepath.Join(output, "summary.json"), tmp("summary.json"), func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}

// shardRecords reads a shard's journal (without changing it) and returns
// its mini-batch records by mini-batch, the first of each kept.
func shardRecords(dir string) ([]*record, error) {
	data, err := os.ReadFile(filepath.Join(dir, "journal"))
	if err != nil {
		return nil, err
	}
	raw, _ := ParseJournal(data)
	var recs []*record
	seen := map[int]bool{}
	for i, b := range raw {
		r, err := unmarshalRecord(b)
		if err != nil {
			return nil, fmt.Errorf("journal record %d: %w", i, err)
		}
		if r.Kind == kindMiniBatch && !seen[r.MiniBatch] {
			seen[r.MiniBatch] = true
			recs = append(recs, r)
		}
	}
	slices.SortFunc(recs, func(a, b *record) int { return a.MiniBatch - b.MiniBatch })
	return recs, nil
}

func concat(w io.Writer, shards [][]*record, part func(*record) []byte) error {
	for _, recs := range shards {
		for _, r := range recs {
			if _, err := w.Write(part(r)); err != nil {
				return err
			}
		}
	}
	return nil
}

func hasOpenAI(shards [][]*record) bool {
	for _, recs := range shards {
		for _, r := range recs {
			for _, f := range r.Files {
				if f.Format == "openai" {
					return true
				}
			}
		}
	}
	return false
}

// summarize adds up the shards.
func summarize(markers []*marker, shards [][]*record) *Summary {
	s := &Summary{Status: statusSucceeded, FailedFiles: []failedIn{}, FailedRows: []rowFailure{}}
	for i, m := range markers {
		c := m.Counts
		s.Files.Total += c.FilesTotal
		s.MiniBatches.Total += c.MiniBatchesTotal
		s.Shards = append(s.Shards, shardLine{Index: i, Status: m.Status, Reason: m.Reason, Message: m.Message, Counts: c})
		if m.Status != statusSucceeded && s.Status == statusSucceeded {
			s.Status, s.Reason, s.Message = statusFailed, m.Reason, m.Message
		}
		if s.StartTime.IsZero() || m.Started.Before(s.StartTime) {
			s.StartTime = m.Started
		}
		if m.Finished.After(s.EndTime) {
			s.EndTime = m.Finished
		}
		if s.Settings == nil && m.Settings != nil {
			s.Settings = m.Settings
		}
	}
	for _, recs := range shards {
		for _, r := range recs {
			if r.Failed {
				s.MiniBatches.Failed++
			} else {
				s.MiniBatches.Succeeded++
			}
			for _, f := range r.Files {
				s.Rows.Total += int64(f.Rows)
				s.Rows.Succeeded += int64(f.RowsSucceeded)
				s.Rows.Failed += int64(f.RowsFailed)
				if !f.Failed {
					s.Files.Succeeded++
					continue
				}
				s.Files.Failed++
				if len(s.FailedFiles) < maxListed {
					s.FailedFiles = append(s.FailedFiles, failedIn{File: f.Name, MiniBatch: r.ID, Error: f.Error})
				} else {
					s.FailedFilesNotListed++
				}
			}
			for _, fr := range r.FailedRows {
				if len(s.FailedRows) < maxListed {
					s.FailedRows = append(s.FailedRows, fr)
				} else {
					s.FailedRowsNotListed++
				}
			}
		}
	}
	return s
}
