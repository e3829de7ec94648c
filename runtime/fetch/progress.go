package fetch

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Event is one thing a pull reports. Kind is one of
//
//	start     the files are listed: Files, BytesTotal, BytesPresent (already on disk)
//	file      a file's download begins: File, BytesTotal
//	progress  every so often: BytesDone (present + fetched), BytesTotal, Rate, ETA
//	retry     a request failed and will be retried: File, Attempt, Error, RetryIn
//	verified  a file is checked and in place: File, BytesTotal, SHA256
//	done      the manifest is written: Files, BytesDone (fetched by this run), Seconds, Manifest
//	error     (written by leo-runtime pull) the pull failed: Error
//
// As JSON lines (JSONLines) they are what the operator reads from a
// LlamaModel's Job.
type Event struct {
	Time         time.Time `json:"time"`
	Kind         string    `json:"event"`
	Source       string    `json:"source,omitempty"`
	File         string    `json:"file,omitempty"`
	Files        int       `json:"files,omitempty"`
	BytesDone    int64     `json:"bytes_done,omitempty"`
	BytesTotal   int64     `json:"bytes_total,omitempty"`
	BytesPresent int64     `json:"bytes_present,omitempty"`
	Rate         float64   `json:"rate_bytes_per_second,omitempty"`
	ETA          float64   `json:"eta_seconds,omitempty"`
	Attempt      int       `json:"attempt,omitempty"`
	Error        string    `json:"error,omitempty"`
	RetryIn      float64   `json:"retry_in_seconds,omitempty"`
	SHA256       string    `json:"sha256,omitempty"`
	Seconds      float64   `json:"seconds,omitempty"`
	Manifest     string    `json:"manifest,omitempty"`
}

// Reporter receives a pull's events, from any goroutine.
type Reporter interface {
	Event(Event)
}

type nopReporter struct{}

func (nopReporter) Event(Event) {}

// JSONLines writes each event as one line of JSON, progress at most once
// a second.
func JSONLines(w io.Writer) Reporter { return &jsonLines{w: w} }

type jsonLines struct {
	mu   sync.Mutex
	w    io.Writer
	last time.Time
}

func (j *jsonLines) Event(e Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if e.Kind == "progress" {
		if e.Time.Sub(j.last) < time.Second {
			return
		}
		j.last = e.Time
	}
	b, _ := json.Marshal(e)
	_, _ = j.w.Write(append(b, '\n'))
}

// Bar draws a progress bar on a terminal, redrawn in place, with the other
// events as lines above it.
func Bar(w io.Writer) Reporter { return &bar{w: w} }

type bar struct {
	mu    sync.Mutex
	w     io.Writer
	drawn bool
}

func (b *bar) Event(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	line := ""
	switch e.Kind {
	case "progress":
		const width = 30
		frac := 0.0
		if e.BytesTotal > 0 {
			frac = min(1, float64(e.BytesDone)/float64(e.BytesTotal))
		}
		fill := int(frac * width)
		eta := "--"
		if e.ETA > 0 {
			eta = (time.Duration(e.ETA) * time.Second).String()
		}
		_, _ = fmt.Fprintf(b.w, "\r[%s%s] %5.1f%% %s / %s  %s/s  eta %s\x1b[K", strings.Repeat("=", fill), strings.Repeat(" ", width-fill),
			100*frac, humanBytes(e.BytesDone), humanBytes(e.BytesTotal), humanBytes(int64(e.Rate)), eta)
		b.drawn = true
		return
	case "start":
		line = fmt.Sprintf("%s: %d files, %s (%s already here)", e.Source, e.Files, humanBytes(e.BytesTotal), humanBytes(e.BytesPresent))
	case "file":
		line = fmt.Sprintf("fetching %s (%s)", e.File, humanBytes(e.BytesTotal))
	case "retry":
		line = fmt.Sprintf("%s: attempt %d failed: %s; retrying in %.1fs", e.File, e.Attempt, e.Error, e.RetryIn)
	case "verified":
		line = fmt.Sprintf("%s: ok, sha256 %s", e.File, e.SHA256)
	case "done":
		line = fmt.Sprintf("done: %d files, %s fetched in %.1fs; manifest %s", e.Files, humanBytes(e.BytesDone), e.Seconds, e.Manifest)
	default:
		return
	}
	if b.drawn {
		_, _ = io.WriteString(b.w, "\r\x1b[K")
		b.drawn = false
	}
	_, _ = fmt.Fprintln(b.w, line)
}

// progress sends a progress event every 250 ms until the returned stop is
// called (more than once is fine).
func (rn *run) progress(total int64) (stop func()) {
	done := make(chan struct{})
	var once sync.Once
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		lastBytes, lastTime := rn.transferred.Load(), time.Now()
		rate := 0.0
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				got := rn.transferred.Load()
				if dt := now.Sub(lastTime).Seconds(); dt > 0 {
					inst := float64(got-lastBytes) / dt
					if rate == 0 {
						rate = inst
					} else {
						rate = 0.8*rate + 0.2*inst // smooth over about a second
					}
				}
				lastBytes, lastTime = got, now
				doneBytes := got + rn.present.Load()
				e := Event{Kind: "progress", BytesDone: doneBytes, BytesTotal: total, Rate: rate}
				if rate > 0 && total > doneBytes {
					e.ETA = float64(total-doneBytes) / rate
				}
				rn.o.Report.Event(e)
			}
		}
	}()
	return func() {
		once.Do(func() { close(done); <-finished })
	}
}

// humanBytes formats n with a binary unit (KiB, MiB, ...).
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
