// Package testruntime starts real leo-runtime servers (the engine and the
// HTTP API of `leo-runtime serve`) on loopback for tests, standing for
// runtime pods: the gateway's and the autoscaler's tests send requests
// through them and read their metrics.
package testruntime

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leo-operator/leo/internal/testmodel"
	"github.com/leo-operator/leo/runtime/engine"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/server"
)

// Server is one runtime server on testmodel.Long (Q8_0), served as model
// "tiny", with 4 sequences at once and a request timeout of a minute.
type Server struct {
	// URL is "http://127.0.0.1:port"; Addr is "127.0.0.1:port".
	URL, Addr string
	// Seen counts the generation requests (/score, /v1/...) it got.
	Seen atomic.Int64

	srv *httptest.Server
}

// Start starts a server that wants one of keys (none: no auth); it stops
// when the test ends.
func Start(tb testing.TB, keys ...string) *Server {
	tb.Helper()
	l := testmodel.Load(tb, testmodel.Long, quant.Q8_0)
	e, err := engine.New(l.Model, l.Tokenizer, engine.Config{MaxConcurrent: 4})
	if err != nil {
		tb.Fatal(err)
	}
	s, err := server.New(e, l.Tokenizer, server.Options{
		ModelName: "tiny", Keys: keys, RequestTimeout: time.Minute,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go e.Run(ctx)
	out := &Server{}
	h := s.Handler()
	out.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/score" || strings.HasPrefix(r.URL.Path, "/v1/") {
			out.Seen.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	out.URL = out.srv.URL
	out.Addr = strings.TrimPrefix(out.srv.URL, "http://")
	tb.Cleanup(func() {
		cancel()
		<-e.Done()
		out.srv.Close()
	})
	return out
}

// Close stops serving: its address then refuses connections.
func (s *Server) Close() { s.srv.Close() }
