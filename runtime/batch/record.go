package batch

import (
	"encoding/json"
	"time"
)

// Record kinds.
const (
	kindStart     = "start"      // the journal's first record: the run it belongs to
	kindMiniBatch = "mini_batch" // one finished mini-batch
)

// record is one journal record's payload, as JSON.
type record struct {
	Kind string `json:"kind"`

	// start: a digest of what decides the output (the shard's files, the
	// settings, the generation parameters), so that a worker never
	// resumes another run's journal; and when the shard first started.
	Fingerprint string    `json:"fingerprint,omitempty"`
	Started     time.Time `json:"started,omitzero"`

	// mini_batch: the mini-batch, how it went, and its output bytes: the
	// rows of append_row's predictions file and of the OpenAI batch
	// output, which the merge concatenates.
	MiniBatch  int          `json:"mini_batch"`
	ID         string       `json:"id,omitempty"`
	Attempts   int          `json:"attempts,omitempty"`
	Failed     bool         `json:"failed,omitempty"` // failed after its retries
	Error      string       `json:"error,omitempty"`
	Files      []fileResult `json:"files,omitempty"`
	FailedRows []rowFailure `json:"failed_rows,omitempty"`
	// Predictions and OpenAI are the output lines (JSON base64 in the
	// journal: the payload's size matters less than its simplicity).
	Predictions []byte `json:"predictions,omitempty"`
	OpenAI      []byte `json:"openai,omitempty"`
}

// fileResult is one input file of a mini-batch.
type fileResult struct {
	Name          string `json:"name"`
	Format        string `json:"format,omitempty"`
	Rows          int    `json:"rows"`
	RowsSucceeded int    `json:"rows_succeeded"`
	RowsFailed    int    `json:"rows_failed"`
	Failed        bool   `json:"failed,omitempty"`
	Error         string `json:"error,omitempty"`
}

// rowFailure is a failed row and why.
type rowFailure struct {
	File  string `json:"file"`
	Row   int    `json:"row"`
	Error string `json:"error"`
}

func (r *record) marshal() []byte {
	b, err := json.Marshal(r)
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	return b
}

func unmarshalRecord(b []byte) (*record, error) {
	r := &record{}
	return r, json.Unmarshal(b, r)
}

// Counts are a shard's (or the whole run's) progress, with the JSON names
// the operator reads from progress lines and termination messages.
type Counts struct {
	Event             string `json:"event,omitempty"`
	FilesTotal        int    `json:"files_total"`
	FilesSucceeded    int    `json:"files_succeeded"`
	FilesFailed       int    `json:"files_failed"`
	RowsTotal         int64  `json:"rows_total"`
	RowsSucceeded     int64  `json:"rows_succeeded"`
	RowsFailed        int64  `json:"rows_failed"`
	MiniBatchesTotal  int    `json:"mini_batches_total"`
	MiniBatchesDone   int    `json:"mini_batches_done"`
	MiniBatchesFailed int    `json:"mini_batches_failed"`
	Reason            string `json:"reason,omitempty"`
	Message           string `json:"message,omitempty"`
}

// add counts a finished mini-batch.
func (c *Counts) add(r *record) {
	c.MiniBatchesDone++
	if r.Failed {
		c.MiniBatchesFailed++
	}
	for _, f := range r.Files {
		if f.Failed {
			c.FilesFailed++
		} else {
			c.FilesSucceeded++
		}
		c.RowsTotal += int64(f.Rows)
		c.RowsSucceeded += int64(f.RowsSucceeded)
		c.RowsFailed += int64(f.RowsFailed)
	}
}
