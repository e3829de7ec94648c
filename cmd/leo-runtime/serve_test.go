package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the server's writes and the
// test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var listening = regexp.MustCompile(`msg=listening url=(http://\S+)`)

// serve starts `leo-runtime serve` with args on a free loopback port and
// returns its base URL, a function that stops it as SIGTERM does, and
// the exit code once stopped.
func serve(t *testing.T, args ...string) (url string, stop func() int, stderr *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stderr = &syncBuffer{}
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, append([]string{"serve", "--model", testModel(t), "--addr", "127.0.0.1:0", "--threads", "2"}, args...), io.Discard, stderr)
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		if m := listening.FindStringSubmatch(stderr.String()); m != nil {
			url = m[1]
			break
		}
		select {
		case c := <-code:
			t.Fatalf("serve exited with %d before listening:\n%s", c, stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start listening:\n%s", stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var once sync.Once
	var exit int
	stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case exit = <-code:
			case <-time.After(time.Minute):
				t.Fatal("serve did not stop within a minute of SIGTERM")
			}
		})
		return exit
	}
	t.Cleanup(func() { stop() })
	return url, stop, stderr
}

// waitReady polls /readyz until the model is loaded. Until then the
// server is alive but not ready.
func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusOK:
			return
		case resp.StatusCode != http.StatusServiceUnavailable:
			t.Fatalf("GET /readyz while loading: %d %s", resp.StatusCode, body)
		case time.Now().After(deadline):
			t.Fatal("the model did not load within a minute")
		}
		if live, err := http.Get(url + "/"); err != nil || live.StatusCode != http.StatusOK {
			t.Fatalf("GET / (liveness) while loading: %v %v", live, err)
		} else {
			_ = live.Body.Close()
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// post sends a JSON body, with key as the bearer token unless it is "",
// and returns the response's status and body.
func post(t *testing.T, url, key, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServe(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte("# one key per line\nfile-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LEO_API_KEYS", "env-key")
	t.Setenv("LEO_MAX_BODY_BYTES", "2048") // flags can come from the environment
	url, stop, stderr := serve(t, "--keys-file", keys, "--max-concurrent-requests", "2", "--model-name", "tiny-chat", "--drain-delay", "300ms")

	waitReady(t, url)

	score := `{"input_data": {"input_string": ["Once upon a time"], "parameters": {"max_new_tokens": 5}}}`
	if status, _ := post(t, url+"/score", "", score); status != http.StatusUnauthorized {
		t.Errorf("/score without a key: %d, want 401", status)
	}
	for _, key := range []string{"file-key", "env-key"} {
		status, body := post(t, url+"/score", key, score)
		var out []map[string]string
		if status != http.StatusOK || json.Unmarshal([]byte(body), &out) != nil || len(out) != 1 || len(out[0]) != 1 {
			t.Errorf("/score with key %s: %d %s", key, status, body)
		}
	}
	big := `{"input_data": {"input_string": ["` + strings.Repeat("a", 3000) + `"]}}`
	if status, body := post(t, url+"/score", "env-key", big); status != http.StatusBadRequest || !strings.Contains(body, "2048") {
		t.Errorf("a body over $LEO_MAX_BODY_BYTES: %d %s", status, body)
	}
	status, body := post(t, url+"/v1/chat/completions", "env-key", `{"model": "tiny-chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}`)
	if status != http.StatusOK || !strings.Contains(body, `"chat.completion"`) {
		t.Errorf("chat completion: %d %s", status, body)
	}

	// Graceful shutdown: a stream in flight when SIGTERM comes runs to its
	// end; new requests are refused; the process exits 0.
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/completions", strings.NewReader(
		`{"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": true, "temperature": 0, "stream": true}`))
	req.Header.Set("Authorization", "Bearer env-key")
	stream, err := http.DefaultClient.Do(req)
	if err != nil || stream.StatusCode != http.StatusOK {
		t.Fatalf("streaming request: %v %v", stream, err)
	}
	defer func() { _ = stream.Body.Close() }()
	events := bufio.NewScanner(stream.Body)
	if !events.Scan() {
		t.Fatal("no first event")
	}
	code := make(chan int, 1)
	go func() { code <- stop() }()

	// Once the server drains, /readyz fails and new work is refused.
	deadline := time.Now().Add(time.Minute)
	for {
		r, err := http.Get(url + "/readyz")
		if err != nil || r.StatusCode == http.StatusServiceUnavailable {
			if err == nil {
				_ = r.Body.Close()
			}
			break
		}
		_ = r.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("/readyz still ready after SIGTERM")
		}
		time.Sleep(time.Millisecond)
	}
	drainReq, _ := http.NewRequest(http.MethodPost, url+"/score", strings.NewReader(score))
	drainReq.Header.Set("Authorization", "Bearer env-key")
	if resp, err := http.DefaultClient.Do(drainReq); err == nil {
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("a request while draining got %d, want 503 (or a refused connection)", resp.StatusCode)
		}
		_ = resp.Body.Close()
	}
	// The stream runs to max_tokens (finish_reason "length"), not cut by
	// the shutdown. (Counting events would not do: a busy machine's
	// slow reader gets several tokens per event.)
	var n int
	done, length := false, false
	for events.Scan() {
		if line := events.Text(); strings.HasPrefix(line, "data: ") {
			n++
			done = line == "data: [DONE]"
			length = length || strings.Contains(line, `"finish_reason":"length"`)
		}
	}
	if !done || !length {
		t.Errorf("the stream in flight got %d more events, ending with [DONE]: %v, finish_reason length: %v", n, done, length)
	}
	if c := <-code; c != 0 {
		t.Errorf("serve exited with %d after SIGTERM:\n%s", c, stderr)
	}
	if !strings.Contains(stderr.String(), "stopped") {
		t.Errorf("no shutdown log:\n%s", stderr)
	}
}

// --kv-cache-tokens bounds the slots to the whole contexts that fit, and
// a cache smaller than the default context makes one smaller context.
func TestServeKVCacheTokens(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--ctx-size", "64", "--kv-cache-tokens", "200"}, "context=64 slots=3"},
		{[]string{"--kv-cache-tokens", "100"}, "context=100 slots=1"},
	} {
		_, stop, stderr := serve(t, append([]string{"--max-concurrent-requests", "8"}, tc.args...)...)
		deadline := time.Now().Add(time.Minute)
		for !strings.Contains(stderr.String(), "slots=") && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: the log lacks %q:\n%s", tc.args, tc.want, stderr)
		}
		if code := stop(); code != 0 {
			t.Errorf("%v: exit %d", tc.args, code)
		}
	}
}

func TestServeUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		env, val string
		args     []string
		code     int
		want     string
	}{
		{"LEO_MAX_CONCURRENT_REQUESTS", "many", nil, 2, "$LEO_MAX_CONCURRENT_REQUESTS"},
		{"", "", []string{"--kv-cache-type", "q4"}, 2, "--kv-cache-type"},
		{"", "", []string{"--chat-template", "{% nonsense %}"}, 2, "--chat-template"},
		{"", "", []string{"--max-concurrent-requests", "0"}, 2, "--max-concurrent-requests"},
		{"", "", []string{"--max-queue-wait-ms", "-1"}, 2, "--max-queue-wait-ms"},
		{"", "", []string{"--kv-cache-tokens", "-1"}, 2, "--kv-cache-tokens"},
		{"", "", []string{"--keys-file", "/nonexistent/keys"}, 1, "keys file"},
	} {
		if tc.env != "" {
			t.Setenv(tc.env, tc.val)
		}
		var stderr bytes.Buffer
		// A server that starts by mistake stops after a while.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		code := run(ctx, append([]string{"serve", "--model", testModel(t), "--addr", "127.0.0.1:0"}, tc.args...), io.Discard, &stderr)
		cancel()
		if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%s=%s %v: exit %d, stderr %q; want %d and %q", tc.env, tc.val, tc.args, code, stderr.String(), tc.code, tc.want)
		}
		if tc.env != "" {
			_ = os.Unsetenv(tc.env) // fails only for a name with "=" or NUL
		}
	}
}

func TestBenchServe(t *testing.T) {
	stdout, _ := mustCLI(t, "bench-serve", "--model", testModel(t), "--streams", "2", "--queued", "1", "--clients", "8",
		"--max-tokens", "16", "--duration", "1s", "--reps", "1", "--json")
	var res benchServeResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("bench-serve --json: %v\n%s", err, stdout)
	}
	if res.SingleTokS <= 0 || res.AggregateTokS <= 0 || res.Ratio <= 0 || res.StreamsTTFTp50ms <= 0 {
		t.Errorf("rates and latencies must be positive: %+v", res)
	}
	if res.Load.Done == 0 || res.Load.Errors != 0 || res.Load.TTFTp99ms < res.Load.TTFTp50ms {
		t.Errorf("load phase: %+v", res.Load)
	}
}

// TestServeRotatedKeys serves with the keys of a mounted Secret (a
// directory, as the kubelet writes it: files linked through ..data, swapped
// at once on an update) and rotates one key while serving: the old key stops
// working, the new one works, the other key never stops.
func TestServeRotatedKeys(t *testing.T) {
	dir := t.TempDir()
	writeSecret := func(version, primary, secondary string) {
		t.Helper()
		data := filepath.Join(dir, "..data-"+version)
		if err := os.Mkdir(data, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, v := range map[string]string{"primary": primary, "secondary": secondary} {
			if err := os.WriteFile(filepath.Join(data, name), []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(filepath.Base(data), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"primary", "secondary"} {
			if _, err := os.Lstat(filepath.Join(dir, name)); os.IsNotExist(err) {
				if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	writeSecret("1", "old-primary", "the-secondary")
	url, stop, _ := serve(t, "--keys-file", dir, "--keys-reload-interval", "50ms", "--drain-delay", "0s")
	defer stop()
	waitReady(t, url)

	models := func(key string) int {
		req, _ := http.NewRequest(http.MethodGet, url+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	for _, k := range []string{"old-primary", "the-secondary"} {
		if s := models(k); s != http.StatusOK {
			t.Fatalf("key %s: %d before the rotation", k, s)
		}
	}
	writeSecret("2", "new-primary", "the-secondary")
	deadline := time.Now().Add(5 * time.Second)
	for models("old-primary") != http.StatusUnauthorized {
		if s := models("the-secondary"); s != http.StatusOK {
			t.Fatalf("the secondary key failed (%d) during the rotation of the primary", s)
		}
		if time.Now().After(deadline) {
			t.Fatal("the rotated primary key still works after 5 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, k := range []string{"new-primary", "the-secondary"} {
		if s := models(k); s != http.StatusOK {
			t.Errorf("key %s: %d after the rotation", k, s)
		}
	}
}
