package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/leo-operator/leo/runtime/engine"
)

// The tests here hold connections the way slow, stalled or too many
// clients do, on raw TCP connections to the loopback.

// sendRequest writes a POST with a JSON body on conn; declared is its
// Content-Length, which may be more than the body sent.
func sendRequest(t *testing.T, conn net.Conn, path, body string, declared int) {
	t.Helper()
	_, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: leo\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, declared, body)
	if err != nil {
		t.Fatal(err)
	}
}

func dial(t *testing.T, addr net.Addr) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// serveLikeServe runs the server's handler under NewHTTPServer's
// http.Server, as leo-runtime serve does, on l; the server is closed
// when the test ends.
func serveLikeServe(t *testing.T, v *env, o Options, l net.Listener, change func(*http.Server)) *http.Server {
	t.Helper()
	hs := NewHTTPServer(v.s.Handler(), o)
	if change != nil {
		change(hs)
	}
	go func() { _ = hs.Serve(l) }() // ErrServerClosed once the test closes it
	t.Cleanup(func() { _ = hs.Close() })
	return hs
}

func TestNewHTTPServer(t *testing.T) {
	hs := NewHTTPServer(http.NotFoundHandler(), Options{RequestTimeout: 5 * time.Second})
	if hs.ReadHeaderTimeout != 10*time.Second || hs.ReadTimeout != 15*time.Second || hs.IdleTimeout != 120*time.Second || hs.WriteTimeout != 0 {
		t.Errorf("ReadHeaderTimeout %v, ReadTimeout %v, IdleTimeout %v, WriteTimeout %v; want 10s, 15s, 2m0s, 0s",
			hs.ReadHeaderTimeout, hs.ReadTimeout, hs.IdleTimeout, hs.WriteTimeout)
	}
	if hs := NewHTTPServer(http.NotFoundHandler(), Options{}); hs.ReadTimeout != DefaultRequestTimeout+10*time.Second {
		t.Errorf("default ReadTimeout %v", hs.ReadTimeout)
	}
}

// smallBuffers makes the kernel's send buffer of each accepted
// connection small, so that a client that does not read blocks the
// server's writes after a few kilobytes.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

// A stream client that stops reading, but keeps its connection open,
// fails the server's next write within Options.WriteTimeout: the handler
// returns and the sequence's slot is freed, long before the request
// timeout, and a graceful Shutdown does not wait for it.
func TestStalledStreamReader(t *testing.T) {
	o := Options{ModelName: "tiny", RequestTimeout: time.Minute, WriteTimeout: 200 * time.Millisecond}
	v := newEnv(t, envConfig{model: long, engine: engine.Config{MaxConcurrent: 2}, opts: o})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := serveLikeServe(t, v, o, smallBuffers{l}, nil)

	conn := dial(t, l.Addr())
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	// Thousands of events, ~100 bytes each: far more than the buffers
	// hold. The client never reads a byte.
	body := `{"prompt": "Once", "max_tokens": 8000, "ignore_eos": true, "stream": true}`
	sendRequest(t, conn, "/v1/completions", body, len(body))
	eventually(t, "the stalled stream's handler ends (status=499)", func() bool { return strings.Contains(v.log.String(), "status=499") })
	eventually(t, "its slot is freed", func() bool { return v.e.Stats().Running == 0 })
	if n := v.e.Stats().GeneratedTokens; n >= 8000 {
		t.Errorf("the engine generated all %d tokens for a client that stopped reading", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown with the stalled client still connected: %v", err)
	}
}

// A body that arrives slower than the http.Server's ReadTimeout ends
// the request with a 408, rather than holding the handler for as long
// as the client likes.
func TestSlowBody(t *testing.T) {
	o := Options{ModelName: "tiny", RequestTimeout: 5 * time.Second}
	v := newEnv(t, envConfig{opts: o})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// NewHTTPServer's ReadTimeout (RequestTimeout + 10 s), scaled down.
	serveLikeServe(t, v, o, l, func(hs *http.Server) { hs.ReadTimeout = 300 * time.Millisecond })

	conn := dial(t, l.Addr())
	body := scoreBody("", "hi")
	sendRequest(t, conn, "/score", body[:10], len(body))
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a slow body: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d, want 408: %s", resp.StatusCode, b)
	}
	wantError(t, decodeJSON(t, b), typeTimeout, "", "request body")
	eventually(t, "the request is logged as 408", func() bool { return strings.Contains(v.log.String(), "status=408") })
}

// Generation requests past authentication are bounded before their
// bodies are read: MaxConcurrent + MaxQueued, and MaxConcurrent again.
// The next one gets a 429 at once, though the engine's queue is empty.
func TestPendingRequestsBounded(t *testing.T) {
	// A paused engine: a request that reached it would wait until the
	// request timeout and get a 408.
	v := newEnv(t, envConfig{paused: true, engine: engine.Config{MaxConcurrent: 1, MaxQueued: 1}, opts: Options{RequestTimeout: 2 * time.Second}})
	if c := cap(v.s.pending); c != 3 {
		t.Fatalf("room for %d pending requests, want 2×1+1", c)
	}
	// Three clients that never finish their bodies hold all of it.
	var conns []net.Conn
	for range 3 {
		conn := dial(t, v.srv.Listener.Addr())
		sendRequest(t, conn, "/score", "{", 1000)
		conns = append(conns, conn)
	}
	eventually(t, "three requests are pending", func() bool { return len(v.s.pending) == 3 })
	var g dto.Metric
	if err := v.s.met.inFlight.Write(&g); err != nil || g.GetGauge().GetValue() != 3 {
		t.Errorf("leo_http_requests_in_flight %v (%v), want 3", g.GetGauge().GetValue(), err)
	}

	got, resp := v.post("/score", scoreBody("", "hi"), http.StatusTooManyRequests)
	wantError(t, got, typeRateLimit, "", "Too many pending requests")
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("no Retry-After")
	}
	if st := v.e.Stats(); st.Queued != 0 {
		t.Errorf("the engine's queue holds %d sequences; the bound is before it", st.Queued)
	}
	// Health probes and other routes are not bounded.
	if r, _ := v.do(context.Background(), http.MethodGet, "/v1/models", ""); r.StatusCode != http.StatusOK {
		t.Errorf("GET /v1/models while full: %d", r.StatusCode)
	}

	for _, c := range conns {
		_ = c.Close()
	}
	eventually(t, "the stalled requests end", func() bool { return len(v.s.pending) == 0 })
	v.start()
	v.post("/score", scoreBody(`"max_new_tokens": 2`, "hi"), http.StatusOK)
}

// http.ResponseController.Flush through the server's ResponseWriter
// reports the connection's error, so that a stream notices a dead client
// at its flush.
func TestFlushError(t *testing.T) {
	errs := make(chan error, 1)
	v := newEnv(t, envConfig{tweak: func(s *Server) {
		s.writeTime = -time.Second // every write's deadline is already past
		s.routes["/flush"] = route{methods: map[string]http.HandlerFunc{
			http.MethodGet: func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte("x")) // buffered: no error yet
				errs <- http.NewResponseController(w).Flush()
			},
		}}
	}})
	if resp, err := v.srv.Client().Get(v.srv.URL + "/flush"); err == nil {
		_ = resp.Body.Close()
	}
	if err := <-errs; err == nil {
		t.Error("Flush returned nil on a connection that cannot be written")
	}
}

// A stream that goes quiet after its header gets SSE comments, which
// clients skip.
func TestStreamKeepAlive(t *testing.T) {
	v := newEnv(t, envConfig{tweak: func(s *Server) { s.keepAlive = time.Microsecond }})
	resp, b := v.do(context.Background(), http.MethodPost, "/v1/completions", `{"prompt": "Once", "max_tokens": 50, "ignore_eos": true, "stream": true}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	const comment = ": keep-alive\n\n"
	body := string(b)
	if !strings.Contains(body, comment) {
		t.Fatalf("no keep-alive comment in %q", tail(body))
	}
	if strings.HasPrefix(body, comment) {
		t.Errorf("a keep-alive before the first event")
	}
	events := parseSSE(t, strings.ReplaceAll(body, comment, ""))
	if last := events[len(events)-1]; len(events) < 3 || last != "[DONE]" {
		t.Errorf("%d events, the last %q", len(events), last)
	}
}
