package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leo-operator/leo/internal/testmodel"
	"github.com/leo-operator/leo/runtime/engine"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/tokenizer"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testmodel.Cleanup()
	os.Exit(code)
}

// long is the test model that can generate for seconds.
var long = testmodel.Long

// env is a real server on loopback over a real engine on the test model.
type env struct {
	t   *testing.T
	srv *httptest.Server
	s   *Server
	e   *engine.Engine
	tok *tokenizer.Tokenizer
	log *syncBuffer

	runOnce sync.Once
	ctx     context.Context
	stop    context.CancelFunc // stops the engine's loop
}

type envConfig struct {
	model  model.Config  // default testmodel.Tiny
	engine engine.Config // default MaxConcurrent 4
	opts   Options       // ModelName defaults to "tiny"
	paused bool          // do not start the engine's loop (call start)
	tweak  func(*Server) // changes the server before it serves
}

func newEnv(t *testing.T, c envConfig) *env {
	t.Helper()
	if c.model.Dim == 0 {
		c.model = testmodel.Tiny
	}
	if c.engine.MaxConcurrent == 0 {
		c.engine.MaxConcurrent = 4
	}
	if c.opts.ModelName == "" {
		c.opts.ModelName = "tiny"
	}
	l := testmodel.Load(t, c.model, quant.Q8_0)
	e, err := engine.New(l.Model, l.Tokenizer, c.engine)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	if c.opts.Log == nil {
		c.opts.Log = slog.New(slog.NewTextHandler(logs, nil))
	}
	s, err := New(e, l.Tokenizer, c.opts)
	if err != nil {
		t.Fatal(err)
	}
	if c.tweak != nil {
		c.tweak(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	v := &env{t: t, s: s, e: e, tok: l.Tokenizer, log: logs, ctx: ctx, stop: cancel}
	v.srv = httptest.NewServer(s.Handler())
	// Cleanups run last first: stop the engine (ending what is left with
	// an error), then close the server, whose Close waits for handlers.
	t.Cleanup(v.srv.Close)
	t.Cleanup(func() {
		cancel()
		v.start() // a loop that never ran still aborts the queue
		<-e.Done()
	})
	if !c.paused {
		v.start()
	}
	return v
}

// start runs the engine's loop, once.
func (v *env) start() { v.runOnce.Do(func() { go v.e.Run(v.ctx) }) }

// reply is what the tests look at in a response whose body do has read
// and closed.
type reply struct {
	StatusCode int
	Header     http.Header
	Close      bool // the server closes the connection after it
}

// do sends a request and returns the response's status and header, and
// its body.
func (v *env) do(ctx context.Context, method, path, body string, header ...string) (reply, []byte) {
	v.t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, v.srv.URL+path, strings.NewReader(body))
	if err != nil {
		v.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := v.srv.Client().Do(req)
	if err != nil {
		v.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		v.t.Fatal(err)
	}
	return reply{StatusCode: resp.StatusCode, Header: resp.Header, Close: resp.Close}, b
}

// post sends a JSON body and wants status; it returns the decoded body.
func (v *env) post(path, body string, status int, header ...string) (any, reply) {
	v.t.Helper()
	resp, b := v.do(context.Background(), http.MethodPost, path, body, header...)
	if resp.StatusCode != status {
		v.t.Fatalf("POST %s %s: status %d, want %d; body %s", path, body, resp.StatusCode, status, b)
	}
	return decodeJSON(v.t, b), resp
}

func decodeJSON(t *testing.T, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("response is not JSON: %v: %q", err, b)
	}
	return v
}

// wantKeys checks that v is an object with exactly these keys.
func wantKeys(t *testing.T, what string, v any, keys ...string) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s is %T, want an object", what, v)
	}
	got := slices.Sorted(maps.Keys(m))
	keys = slices.Sorted(slices.Values(keys))
	if !slices.Equal(got, keys) {
		t.Fatalf("%s has keys %v, want %v", what, got, keys)
	}
	return m
}

func wantString(t *testing.T, what string, v any) string {
	t.Helper()
	s, ok := v.(string)
	if !ok {
		t.Fatalf("%s is %T (%v), want a string", what, v, v)
	}
	return s
}

func wantInt(t *testing.T, what string, v any) int {
	t.Helper()
	n, ok := v.(json.Number)
	if !ok {
		t.Fatalf("%s is %T (%v), want a number", what, v, v)
	}
	i, err := n.Int64()
	if err != nil {
		t.Fatalf("%s is %v, want an integer", what, n)
	}
	return int(i)
}

func wantList(t *testing.T, what string, v any, n int) []any {
	t.Helper()
	l, ok := v.([]any)
	if !ok || len(l) != n {
		t.Fatalf("%s is %T %v, want a list of %d", what, v, v, n)
	}
	return l
}

// wantError checks an error body: its exact shape, type and param, and
// that the message contains each of substrings.
func wantError(t *testing.T, body any, typ, param string, substrings ...string) string {
	t.Helper()
	top := wantKeys(t, "error body", body, "error")
	e := wantKeys(t, "error", top["error"], "message", "type", "param", "code")
	msg := wantString(t, "error.message", e["message"])
	if got := wantString(t, "error.type", e["type"]); got != typ {
		t.Errorf("error.type %q, want %q (message %q)", got, typ, msg)
	}
	switch {
	case param == "" && e["param"] != nil:
		t.Errorf("error.param %v, want null (message %q)", e["param"], msg)
	case param != "" && e["param"] != param:
		t.Errorf("error.param %v, want %q (message %q)", e["param"], param, msg)
	}
	if c := e["code"]; c != nil {
		wantString(t, "error.code", c)
	}
	for _, s := range substrings {
		if !strings.Contains(msg, s) {
			t.Errorf("error.message %q does not contain %q", msg, s)
		}
	}
	return msg
}

// eventually polls cond until it holds or 10 seconds pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// syncBuffer is a log destination shared by handler goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// parseSSE checks the framing of an event stream, every event one
// "data: <payload>\n\n", and returns the payloads.
func parseSSE(t *testing.T, body string) []string {
	t.Helper()
	if !strings.HasSuffix(body, "\n\n") {
		t.Fatalf("the stream does not end with a blank line: %q", tail(body))
	}
	var out []string
	for ev := range strings.SplitSeq(strings.TrimSuffix(body, "\n\n"), "\n\n") {
		payload, ok := strings.CutPrefix(ev, "data: ")
		if !ok || strings.Contains(payload, "\n") {
			t.Fatalf("malformed event %q", ev)
		}
		out = append(out, payload)
	}
	return out
}

func tail(s string) string {
	if len(s) > 200 {
		return "..." + s[len(s)-200:]
	}
	return s
}
