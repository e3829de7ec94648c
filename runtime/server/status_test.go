package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leo-operator/leo/internal/testmodel"
	"github.com/leo-operator/leo/runtime/engine"
)

func TestHealth(t *testing.T) {
	v := newEnv(t, envConfig{opts: Options{Keys: []string{"secret"}}})
	for path, want := range map[string]string{"/": "healthy", "/healthz": "ok", "/readyz": "ready"} {
		resp, b := v.do(context.Background(), http.MethodGet, path, "") // no key: health is exempt
		if resp.StatusCode != http.StatusOK || string(b) != want {
			t.Errorf("GET %s: %d %q, want 200 %q", path, resp.StatusCode, b, want)
		}
	}
	v.s.SetReady(false)
	if resp, _ := v.do(context.Background(), http.MethodGet, "/readyz", ""); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("not ready: /readyz %d, want 503", resp.StatusCode)
	}
	if resp, _ := v.do(context.Background(), http.MethodGet, "/healthz", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("not ready: /healthz %d, want 200 (alive)", resp.StatusCode)
	}
	v.s.SetReady(true)
	if resp, _ := v.do(context.Background(), http.MethodGet, "/readyz", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("ready again: /readyz %d", resp.StatusCode)
	}
}

func TestBadRequests(t *testing.T) {
	v := newEnv(t, envConfig{})
	long := strings.Repeat("word ", 300) // more tokens than the context's 256
	for _, c := range []struct {
		name, path, body string
		param            string // "" is null
		want             []string
	}{
		{"bad JSON", "/score", "{\"input_data\": {\n  \"input_string\": [\"hi\"],,\n}}", "", []string{"not valid JSON", "line 2", "column 26"}},
		{"truncated JSON", "/v1/completions", `{"prompt": "hi"`, "", []string{"not valid JSON", "unexpected end"}},
		{"empty body", "/score", "", "", []string{"empty"}},
		{"not an object", "/v1/completions", `["hi"]`, "", []string{"must be a JSON object", "array"}},
		{"no input_data", "/score", `{"input_string": ["hi"]}`, "input_data", []string{"input_data is required"}},
		{"input_string a number", "/score", `{"input_data": {"input_string": 3}}`, "input_data.input_string", []string{"must be an array", "a number"}},
		{"input_string empty", "/score", `{"input_data": {"input_string": []}}`, "input_data.input_string", []string{"empty"}},
		{"prompt not a string", "/score", `{"input_data": {"input_string": ["a", 7]}}`, "input_data.input_string[1]", []string{"must be a string"}},
		{"temperature a string", "/score", scoreBody(`"temperature": "hot"`, "hi"), "input_data.parameters.temperature", []string{"must be a number", "a string"}},
		{"do_sample a string", "/score", scoreBody(`"do_sample": "yes"`, "hi"), "input_data.parameters.do_sample", []string{"true or false"}},
		{"max_new_tokens a fraction", "/score", scoreBody(`"max_new_tokens": 2.5`, "hi"), "input_data.parameters.max_new_tokens", []string{"integer"}},
		{"temperature negative", "/score", scoreBody(`"temperature": -1, "do_sample": true`, "hi"), "input_data.parameters.temperature", []string{"input_data.parameters.temperature must be >= 0"}},
		{"top_p too big", "/score", scoreBody(`"top_p": 2, "top_k": -3`, "hi"), "input_data.parameters.top_p", []string{"top_p must be in (0, 1]", "top_k must be >= 0"}},
		{"max_new_tokens 0", "/score", scoreBody(`"max_new_tokens": 0`, "hi"), "input_data.parameters.max_new_tokens", []string{">= 1"}},
		{"num_return_sequences 17", "/score", scoreBody(`"num_return_sequences": 17`, "hi"), "input_data.parameters.num_return_sequences", []string{"[1, 16]"}},
		{"stop has a number", "/score", scoreBody(`"stop": ["a", 1]`, "hi"), "input_data.parameters.stop[1]", []string{"must be a string"}},
		{"stop empty", "/score", scoreBody(`"stop": [""]`, "hi"), "input_data.parameters.stop[0]", []string{"must not be empty"}},
		{"seed a fraction", "/score", scoreBody(`"seed": 1.5`, "hi"), "input_data.parameters.seed", []string{"integer"}},
		{"prompt too long", "/score", scoreBody("", long), "input_data.input_string", []string{"context holds 256"}},
		{"prompt too long (OpenAI)", "/v1/completions", fmt.Sprintf(`{"prompt": %q}`, long), "prompt", []string{"context holds 256"}},
		{"no prompt", "/v1/completions", `{"max_tokens": 3}`, "prompt", []string{"prompt is required"}},
		{"token prompt out of the vocabulary", "/v1/completions", `{"prompt": [1, 2, 99999]}`, "prompt[2]", []string{"token id 99999", "vocabulary"}},
		{"token prompt negative", "/v1/completions", `{"prompt": [[1], [-1]]}`, "prompt[1][0]", []string{"token id"}},
		{"token prompt empty", "/v1/completions", `{"prompt": [[1], []]}`, "prompt[1]", []string{"at least one token"}},
		{"max_tokens 0", "/v1/completions", `{"prompt": "hi", "max_tokens": 0}`, "max_tokens", []string{"max_tokens must be >= 1"}},
		{"min_tokens > max_tokens", "/v1/completions", `{"prompt": "hi", "max_tokens": 2, "min_tokens": 5}`, "min_tokens", []string{"min_tokens must be <= max_tokens"}},
		{"max_completion_tokens 0", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0}`, "max_completion_tokens", []string{"max_completion_tokens must be >= 1"}},
		{"n 0", "/v1/completions", `{"prompt": "hi", "n": 0}`, "n", []string{"n must be in [1, 16]"}},
		{"too many sequences", "/v1/completions", `{"prompt": ["a", "b", "c", "d", "e", "f"], "n": 4}`, "n", []string{"24 sequences"}},
		{"too many prompts", "/v1/completions", `{"prompt": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t", "u"]}`, "prompt", []string{"21 sequences"}},
		{"response_format json_object", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}`, "response_format", []string{"response_format is not supported"}},
		{"response_format json_schema", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}`, "response_format", []string{"not supported"}},
		{"response_format on completions", "/v1/completions", `{"prompt": "hi", "response_format": {"type": "json_object"}}`, "response_format", []string{"not supported"}},
		{"tools", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]}`, "tools", []string{"tools is not supported"}},
		{"tools with tool_choice auto", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "auto"}`, "tools", []string{"not supported"}},
		{"tool_choice required", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"}`, "tool_choice", []string{"not supported"}},
		{"parallel_tool_calls", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "parallel_tool_calls": true}`, "parallel_tool_calls", []string{"not supported"}},
		{"num_return_sequences greedy", "/score", scoreBody(`"num_return_sequences": 3`, "hi"), "input_data.parameters.num_return_sequences", []string{"do_sample"}},
		{"max_length 0", "/score", scoreBody(`"max_length": 0`, "hi"), "input_data.parameters.max_length", []string{"max_length must be >= 1"}},
		{"max_length within the prompt", "/score", scoreBody(`"max_length": 2`, "hello there, how are you"), "input_data.parameters.max_length", []string{"max_length is 2", "prompt 0 has"}},
		{"max_length below min_new_tokens", "/score", scoreBody(`"max_length": 30, "min_new_tokens": 29`, "hello there, how are you"), "input_data.parameters.max_length", []string{"min_new_tokens 29"}},
		{"min_new_tokens over max_length", "/score", scoreBody(`"max_length": 3, "min_new_tokens": 5`, "hi"), "input_data.parameters.min_new_tokens", []string{"min_new_tokens must be <= max_length"}},
		{"logprobs", "/v1/completions", `{"prompt": "hi", "logprobs": 2}`, "logprobs", []string{"logprobs is not supported"}},
		{"best_of", "/v1/completions", `{"prompt": "hi", "best_of": 3}`, "best_of", []string{"best_of is not supported"}},
		{"suffix", "/v1/completions", `{"prompt": "hi", "suffix": "end"}`, "suffix", []string{"suffix is not supported"}},
		{"logit_bias", "/v1/completions", `{"prompt": "hi", "logit_bias": {"50256": -100}}`, "logit_bias", []string{"logit_bias is not supported"}},
		{"presence_penalty", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "presence_penalty": 0.5}`, "presence_penalty", []string{"presence_penalty is not supported"}},
		{"frequency_penalty", "/v1/completions", `{"prompt": "hi", "frequency_penalty": 1}`, "frequency_penalty", []string{"frequency_penalty is not supported"}},
		{"chat logprobs", "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "logprobs": true}`, "logprobs", []string{"not supported"}},
		{"stream_options without stream", "/v1/completions", `{"prompt": "hi", "stream_options": {"include_usage": true}}`, "stream_options", []string{"only allowed when stream is true"}},
		{"messages missing", "/v1/chat/completions", `{"model": "tiny"}`, "messages", []string{"messages is required"}},
		{"message not an object", "/v1/chat/completions", `{"messages": ["hi"]}`, "messages[0]", []string{"must be an object"}},
		{"content a number", "/v1/chat/completions", `{"messages": [{"role": "user", "content": 5}]}`, "messages[0].content", []string{"string or a list of text parts"}},
		{"role unknown", "/v1/chat/completions", `{"messages": [{"role": "robot", "content": "hi"}]}`, "messages[0].role", []string{"robot"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, resp := v.post(c.path, c.body, http.StatusBadRequest)
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			wantError(t, got, typeInvalid, c.param, c.want...)
		})
	}
	// Nothing above reached the model.
	if st := v.e.Stats(); st.GeneratedTokens != 0 {
		t.Errorf("bad requests generated %d tokens", st.GeneratedTokens)
	}
}

func TestBodyTooLarge(t *testing.T) {
	v := newEnv(t, envConfig{opts: Options{MaxBodyBytes: 100}})
	got, resp := v.post("/score", scoreBody("", strings.Repeat("x", 200)), http.StatusBadRequest)
	wantError(t, got, typeInvalid, "", "request body is larger than 100 bytes")
	// net/http learnt that the body was too large: it closes the
	// connection rather than read the rest.
	if !resp.Close {
		t.Errorf("the answer to a body too large keeps the connection open (Connection %q)", resp.Header.Get("Connection"))
	}
	v.post("/score", scoreBody(`"max_new_tokens": 1`, "hi"), http.StatusOK)
}

func TestAuth(t *testing.T) {
	v := newEnv(t, envConfig{opts: Options{Keys: []string{"key-one", "key-two", " key-three\n"}}})
	body := scoreBody(`"max_new_tokens": 2`, "hi")
	for _, c := range []struct{ name, header string }{
		{"no header", ""},
		{"wrong key", "Bearer key-four"},
		{"prefix of a key", "Bearer key-"},
		{"not bearer", "Basic a2V5LW9uZQ=="},
	} {
		var h []string
		if c.header != "" {
			h = []string{"Authorization", c.header}
		}
		got, resp := v.post("/score", body, http.StatusUnauthorized, h...)
		wantError(t, got, typeAuth, "", "API key")
		if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q", c.name, resp.Header.Get("WWW-Authenticate"))
		}
	}
	v.post("/score", body, http.StatusOK, "Authorization", "Bearer key-one")
	v.post("/score", body, http.StatusOK, "Authorization", "bearer key-two")
	v.post("/score", body, http.StatusOK, "Authorization", "Bearer key-three") // given with spaces around it
	for _, path := range []string{"/v1/models", "/nowhere"} {
		if resp, _ := v.do(context.Background(), http.MethodGet, path, ""); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a key: %d, want 401", path, resp.StatusCode)
		}
	}
	// Metrics are open, as the probes: the autoscaler reads every pod's.
	for _, h := range [][]string{nil, {"Authorization", "Bearer key-two"}} {
		if resp, _ := v.do(context.Background(), http.MethodGet, "/metrics", "", h...); resp.StatusCode != http.StatusOK {
			t.Errorf("GET /metrics (header %v): %d", h, resp.StatusCode)
		}
	}
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	v := newEnv(t, envConfig{})
	resp, b := v.do(context.Background(), http.MethodGet, "/v2/score", "")
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown path: %d", resp.StatusCode)
	}
	wantError(t, decodeJSON(t, b), typeInvalid, "", "/v2/score")
	for _, c := range []struct{ method, path, allow string }{
		{http.MethodGet, "/score", "POST"},
		{http.MethodPut, "/v1/completions", "POST"},
		{http.MethodPost, "/healthz", "GET, HEAD"},
		{http.MethodDelete, "/v1/models", "GET, HEAD"},
	} {
		resp, b := v.do(context.Background(), c.method, c.path, "")
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != c.allow {
			t.Errorf("%s %s: %d Allow %q, want 405 %q", c.method, c.path, resp.StatusCode, resp.Header.Get("Allow"), c.allow)
			continue
		}
		wantError(t, decodeJSON(t, b), typeInvalid, "", c.method)
	}
	if resp, _ := v.do(context.Background(), http.MethodHead, "/healthz", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD /healthz: %d", resp.StatusCode)
	}
}

func TestTimeoutWhileQueued(t *testing.T) {
	// The engine's loop does not run: the request waits in the queue
	// until its deadline, which covers queueing too.
	v := newEnv(t, envConfig{paused: true, opts: Options{RequestTimeout: 50 * time.Millisecond}})
	got, _ := v.post("/score", scoreBody("", "hi"), http.StatusRequestTimeout)
	wantError(t, got, typeTimeout, "", "requestTimeoutMs", "50")
	// The loop drops it when it next looks at the queue. (The log line's
	// lock also orders the handler's Submit before the loop's start for
	// the race detector.)
	eventually(t, "the handler ends", func() bool { return strings.Contains(v.log.String(), "status=408") })
	v.start()
	eventually(t, "the timed-out request leaves the queue", func() bool { st := v.e.Stats(); return st.Queued == 0 && st.Running == 0 })
}

func TestTimeoutWhileGenerating(t *testing.T) {
	// Thousands of tokens take seconds; the timeout is 100 ms.
	v := newEnv(t, envConfig{model: long, engine: engine.Config{MaxConcurrent: 2}, opts: Options{RequestTimeout: 100 * time.Millisecond}})
	got, _ := v.post("/v1/completions", `{"prompt": "Once", "max_tokens": 8000, "ignore_eos": true}`, http.StatusRequestTimeout)
	wantError(t, got, typeTimeout, "", "requestTimeoutMs: 100")

	// A stream that times out ends with an error event and no [DONE].
	resp, b := v.do(context.Background(), http.MethodPost, "/v1/completions", `{"prompt": "Once", "max_tokens": 8000, "ignore_eos": true, "stream": true}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: status %d", resp.StatusCode)
	}
	events := parseSSE(t, string(b))
	last := events[len(events)-1]
	if len(events) < 2 || last == "[DONE]" {
		t.Fatalf("stream of %d events ends with %q", len(events), last)
	}
	wantError(t, decodeJSON(t, []byte(last)), typeTimeout, "", "requestTimeoutMs")
	eventually(t, "the slots are free", func() bool { return v.e.Stats().Running == 0 })
}

// A request that waits maxQueueWaitMs for a slot gets Azure's 429.
func TestQueueWaitExpires(t *testing.T) {
	// Long's 8192 positions keep the one slot busy for seconds.
	v := newEnv(t, envConfig{model: testmodel.Long, engine: engine.Config{MaxConcurrent: 1, MaxQueued: 1, MaxQueueWait: 50 * time.Millisecond},
		opts: Options{RequestTimeout: time.Minute}})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { v.postUntil(ctx, scoreBody(`"max_new_tokens": 8000, "ignore_eos": true`, "hi")) })
	eventually(t, "one request running", func() bool { return v.e.Stats().Running == 1 })
	got, resp := v.post("/score", scoreBody("", "hi"), http.StatusTooManyRequests)
	wantError(t, got, typeRateLimit, "", "maxQueueWaitMs")
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("no Retry-After")
	}
	cancel()
	wg.Wait()
}

// postUntil posts body to /score and waits for the answer, or until ctx
// ends: a client whose request waits or runs in the background.
func (v *env) postUntil(ctx context.Context, body string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, v.srv.URL+"/score", strings.NewReader(body))
	if resp, err := v.srv.Client().Do(req); err == nil {
		_ = resp.Body.Close()
	}
}

func TestQueueFull(t *testing.T) {
	// One slot and one place in the queue, and a paused loop: the first
	// two requests wait, for certain, and the third has no room.
	v := newEnv(t, envConfig{paused: true, engine: engine.Config{MaxConcurrent: 1, MaxQueued: 1}})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { v.postUntil(ctx, scoreBody("", "hi")) })
	}
	eventually(t, "two requests wait", func() bool { return v.e.Stats().Queued == 2 })
	got, resp := v.post("/score", scoreBody("", "hi"), http.StatusTooManyRequests)
	wantError(t, got, typeRateLimit, "", "Too many pending requests")
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("no Retry-After")
	}
	got, _ = v.post("/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}]}`, http.StatusTooManyRequests)
	wantError(t, got, typeRateLimit, "", "Too many pending requests")

	// The waiting clients go away; their places are freed.
	cancel()
	wg.Wait()
	// Wait for both handlers' log lines (whose lock also orders their
	// Submits before the loop's start for the race detector).
	eventually(t, "both handlers end", func() bool { return strings.Count(v.log.String(), "status=499") == 2 })
	v.start()
	eventually(t, "the queue empties", func() bool { st := v.e.Stats(); return st.Queued == 0 && st.Running == 0 })
	v.post("/score", scoreBody(`"max_new_tokens": 2`, "hi"), http.StatusOK)
	if st := v.e.Stats(); st.Rejected != 2 {
		t.Errorf("Stats.Rejected %d, want 2", st.Rejected)
	}
}

func TestDrain(t *testing.T) {
	v := newEnv(t, envConfig{model: long, engine: engine.Config{MaxConcurrent: 2}})
	// A request in flight when draining starts goes on to the end.
	req, _ := http.NewRequest(http.MethodPost, v.srv.URL+"/v1/completions", strings.NewReader(`{"prompt": "Once", "max_tokens": 300, "ignore_eos": true, "stream": true}`))
	resp, err := v.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil { // the first event: it runs
		t.Fatal(err)
	}

	v.s.Drain()
	if r, _ := v.do(context.Background(), http.MethodGet, "/readyz", ""); r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("draining: /readyz %d, want 503", r.StatusCode)
	}
	for _, path := range []string{"/score", "/v1/completions", "/v1/chat/completions"} {
		got, _ := v.post(path, `{}`, http.StatusServiceUnavailable)
		wantError(t, got, typeUnavailable, "", "server is shutting down")
	}
	for _, path := range []string{"/healthz", "/v1/models", "/metrics"} {
		if r, _ := v.do(context.Background(), http.MethodGet, path, ""); r.StatusCode != http.StatusOK {
			t.Errorf("draining: GET %s %d, want 200", path, r.StatusCode)
		}
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Errorf("the in-flight stream did not finish: %q", tail(string(rest)))
	}
}

func TestEngineClosed(t *testing.T) {
	v := newEnv(t, envConfig{})
	v.e.Close()
	got, _ := v.post("/score", scoreBody("", "hi"), http.StatusServiceUnavailable)
	wantError(t, got, typeUnavailable, "", "shutting down")
}

func TestEngineStopped(t *testing.T) {
	// The engine's loop stops (its context is cancelled) while a request
	// runs: a 503, not the silence kept for a client that went away.
	v := newEnv(t, envConfig{model: long, engine: engine.Config{MaxConcurrent: 2}})
	go func() {
		for deadline := time.Now().Add(10 * time.Second); v.e.Stats().Running == 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		v.stop()
	}()
	got, _ := v.post("/v1/completions", `{"prompt": "Once", "max_tokens": 8000, "ignore_eos": true}`, http.StatusServiceUnavailable)
	wantError(t, got, typeUnavailable, "", "stopped")
}

func TestPanicIsA500(t *testing.T) {
	v := newEnv(t, envConfig{})
	// A second server on the same engine, with a route that panics,
	// added before it serves.
	logs := &syncBuffer{}
	s, err := New(v.e, v.tok, Options{ModelName: "tiny", Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s.routes["/panic"] = route{methods: map[string]http.HandlerFunc{
		http.MethodGet: func(http.ResponseWriter, *http.Request) { panic("boom") },
	}}
	v.srv = httptest.NewServer(s.Handler())
	defer v.srv.Close()
	resp, b := v.do(context.Background(), http.MethodGet, "/panic", "")
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("status %d", resp.StatusCode)
	}
	wantError(t, decodeJSON(t, b), typeServer, "", "internal error")
	if logs := logs.String(); !strings.Contains(logs, "boom") || !strings.Contains(logs, "level=ERROR") {
		t.Errorf("the panic was not logged: %s", logs)
	}
	// The server goes on.
	if r, _ := v.do(context.Background(), http.MethodGet, "/healthz", ""); r.StatusCode != http.StatusOK {
		t.Errorf("after a panic: /healthz %d", r.StatusCode)
	}
}

func TestRequestLog(t *testing.T) {
	v := newEnv(t, envConfig{})
	v.post("/score", scoreBody(`"max_new_tokens": 3, "ignore_eos": true`, "hi"), http.StatusOK)
	logs := v.log.String()
	for _, want := range []string{"level=INFO", "method=POST", "path=/score", "status=200", "duration=", "prompt_tokens=", "completion_tokens=3", "request_id="} {
		if !strings.Contains(logs, want) {
			t.Errorf("log %q lacks %q", logs, want)
		}
	}
}

// The request id is the client's, when sane, else a new one; it is in
// the response's X-Request-Id and the log line.
func TestRequestID(t *testing.T) {
	v := newEnv(t, envConfig{})
	long := strings.Repeat("a", 129)
	for _, c := range []struct {
		header []string
		want   string // "" for a generated one
	}{
		{[]string{"X-Request-Id", "client-id-1"}, "client-id-1"},
		{[]string{"X-Ms-Client-Request-Id", "azure-id-2"}, "azure-id-2"},
		{[]string{"X-Request-Id", "first", "X-Ms-Client-Request-Id", "second"}, "first"},
		{[]string{"X-Request-Id", long}, ""},
		{[]string{"X-Request-Id", "caf\xc3\xa9"}, ""},
		{nil, ""},
	} {
		resp, _ := v.do(context.Background(), http.MethodGet, "/healthz", "", c.header...)
		id := resp.Header.Get("X-Request-Id")
		switch {
		case c.want != "" && id != c.want:
			t.Errorf("headers %q: X-Request-Id %q, want %q", c.header, id, c.want)
		case c.want == "" && (len(id) != 26 || id == long):
			t.Errorf("headers %q: X-Request-Id %q, want a new one", c.header, id)
		}
		if !strings.Contains(v.log.String(), "request_id="+id+"\n") {
			t.Errorf("the log does not have request_id=%s: %s", id, v.log.String())
		}
	}
}

// A stream that times out while queued gets a real 408, not a 200
// followed by an error event: the header waits for the first piece.
func TestStreamTimeoutWhileQueued(t *testing.T) {
	v := newEnv(t, envConfig{paused: true, opts: Options{RequestTimeout: 50 * time.Millisecond}})
	for _, c := range []struct{ path, body string }{
		{"/v1/completions", `{"prompt": "hi", "stream": true}`},
		{"/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "stream": true}`},
	} {
		got, resp := v.post(c.path, c.body, http.StatusRequestTimeout)
		wantError(t, got, typeTimeout, "", "requestTimeoutMs")
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", c.path, ct)
		}
	}
	eventually(t, "both handlers end", func() bool { return strings.Count(v.log.String(), "status=408") == 2 })
	v.start()
	eventually(t, "the queue empties", func() bool { st := v.e.Stats(); return st.Queued == 0 && st.Running == 0 })
}

// Outside serveHTTP a handler would lose its counts: info panics.
func TestInfoOutsideServeHTTP(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("info did not panic")
		}
	}()
	info(httptest.NewRequest(http.MethodGet, "/", nil))
}
