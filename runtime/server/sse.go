package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"

	"github.com/leo-operator/leo/runtime/engine"
)

// sse writes Server-Sent Events as OpenAI streams them: each event one
// "data: <json>\n\n", flushed at once, and "data: [DONE]\n\n" at the end.
type sse struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

// startSSE sends the stream's header.
func startSSE(w http.ResponseWriter) *sse {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx-based ingresses would buffer the stream otherwise
	w.WriteHeader(http.StatusOK)
	s := &sse{w: w, rc: http.NewResponseController(w)}
	_ = s.rc.Flush()
	return s
}

// event sends v as one event. An error means the client is gone.
func (s *sse) event(v any) error { return s.data(marshal(v)) }

func (s *sse) data(b []byte) error {
	if _, err := s.w.Write(append(append([]byte("data: "), b...), '\n', '\n')); err != nil {
		return err
	}
	return s.rc.Flush()
}

func (s *sse) done() error { return s.data([]byte("[DONE]")) }

// chunks makes the events of one endpoint's stream.
type chunks interface {
	// start is the first event of choice i (chat: the assistant's role;
	// an echoed prompt), nil for none.
	start(i int) any
	delta(i int, text string) any
	end(i int, finish string) any
	usage(u usage) any
}

// piece is what a stream's reader passes on: a text delta, the end of
// the sequence (end, with its result) or the error that ended it.
type piece struct {
	index int
	text  string
	end   bool
	res   engine.Result
	err   error
}

// streamJob runs a job and streams its sequences as they are generated,
// interleaved: one goroutine reads each engine stream, and this one
// writes their pieces in the order they come. Errors before the first
// event are ordinary error responses; after it, an error event ends the
// stream (without [DONE]), so that clients do not take it for a
// complete answer.
func (s *Server) streamJob(w http.ResponseWriter, r *http.Request, j *job, c chunks) {
	ctx, cancel := s.deadline(r)
	streams, aerr := s.submit(ctx, r, j)
	if aerr != nil {
		cancel()
		writeError(w, r, aerr)
		return
	}
	pieces := make(chan piece, len(streams))
	var wg sync.WaitGroup
	defer func() {
		cancel() // ends the sequences still running, and so their readers
		wg.Wait()
	}()
	for i, st := range streams {
		wg.Go(func() { read(ctx, i, st, pieces) })
	}

	out := startSSE(w)
	fail := func(err error) {
		e := generationError(r, err, s.timeout)
		noteError(r, e)
		if e.Status != statusClientGone {
			_ = out.event(e.body())
		}
	}
	gone := func() { noteError(r, errClientGone) }
	for i := range streams {
		if ev := c.start(i); ev != nil {
			if out.event(ev) != nil {
				gone()
				return
			}
		}
	}
	var results []engine.Result
	for len(results) < len(streams) {
		var p piece
		select {
		case p = <-pieces:
		case <-ctx.Done():
			fail(ctx.Err())
			return
		}
		var ev any
		switch {
		case p.err != nil:
			fail(p.err)
			return
		case p.end:
			results = append(results, p.res)
			s.observe(r, p.res)
			ev = c.end(p.index, finishReason(p.res.Finish))
		default:
			ev = c.delta(p.index, p.text)
		}
		if out.event(ev) != nil {
			gone()
			return
		}
	}
	if j.includeUsage {
		ri := info(r)
		u := usage{PromptTokens: ri.promptTokens, CompletionTokens: ri.completionTokens}
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
		if out.event(c.usage(u)) != nil {
			gone()
			return
		}
	}
	if out.done() != nil {
		gone()
	}
}

// read passes on one stream's pieces until its end.
func read(ctx context.Context, i int, st *engine.Stream, out chan<- piece) {
	for {
		text, err := st.Recv(ctx)
		p := piece{index: i, text: text}
		switch {
		case errors.Is(err, io.EOF):
			p.end = true
			p.res, _ = st.Result()
		case err != nil:
			p.err = err
		}
		select {
		case out <- p:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}
