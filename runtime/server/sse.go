package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/leo-operator/leo/runtime/engine"
)

// sse writes Server-Sent Events as OpenAI streams them: each event one
// "data: <json>\n\n", flushed at once, and "data: [DONE]\n\n" at the end.
// Each write has the recorder's write deadline.
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
	return &sse{w: w, rc: http.NewResponseController(w)}
}

// event sends v as one event. An error means the client is gone.
func (s *sse) event(v any) error { return s.data(marshal(v)) }

func (s *sse) data(b []byte) error {
	return s.write(append(append([]byte("data: "), b...), '\n', '\n'))
}

func (s *sse) done() error { return s.data([]byte("[DONE]")) }

// keepAlive sends an SSE comment, which clients ignore, so that proxies
// see traffic on a stream that is quiet for long.
func (s *sse) keepAlive() error { return s.write([]byte(": keep-alive\n\n")) }

func (s *sse) write(b []byte) error {
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.rc.Flush()
}

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
// writes their pieces in the order they come.
//
// The 200 header goes out with the first piece (or the end of the
// stream), not at Submit: until then the sequences may wait in the
// queue, and an error there (the request timeout, the engine stopping)
// gets its own status and an ordinary error body. After the header, an
// error is an error event that ends the stream (without [DONE]), so
// that clients do not take it for a complete answer. A started stream
// that has had no event for s.keepAlive gets an SSE comment.
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

	var out *sse // nil until the header is sent
	send := func(ev any) error {
		if out == nil {
			out = startSSE(w)
			for i := range streams {
				if first := c.start(i); first != nil {
					if err := out.event(first); err != nil {
						return err
					}
				}
			}
		}
		return out.event(ev)
	}
	fail := func(err error) {
		e := generationError(r, err, s.timeout)
		if out == nil {
			writeError(w, r, e)
			return
		}
		noteError(r, e)
		if e.Status != statusClientGone {
			_ = out.event(e.body())
		}
	}
	gone := func() { noteError(r, errClientGone) }
	quiet := time.NewTimer(s.keepAlive)
	defer quiet.Stop()

	var results []engine.Result
	for len(results) < len(streams) {
		var p piece
		select {
		case p = <-pieces:
		case <-ctx.Done():
			fail(ctx.Err())
			return
		case <-quiet.C:
			if out != nil && out.keepAlive() != nil {
				gone()
				return
			}
			quiet.Reset(s.keepAlive)
			continue
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
		if send(ev) != nil {
			gone()
			return
		}
		quiet.Reset(s.keepAlive)
	}
	if j.includeUsage {
		if out.event(c.usage(s.usage(r))) != nil {
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
