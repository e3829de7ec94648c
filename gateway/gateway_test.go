package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leo-operator/leo/internal/testmodel"
	"github.com/leo-operator/leo/internal/testruntime"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testmodel.Cleanup()
	os.Exit(code)
}

// pod is a real runtime server on loopback, standing for one runtime pod.
type pod = testruntime.Server

func startPod(t testing.TB, keys ...string) *pod { return testruntime.Start(t, keys...) }

func addrs(pods ...*pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Addr)
	}
	return out
}

// front is a gateway under test on loopback.
type front struct {
	g   *Gateway
	srv *httptest.Server
}

func startGateway(t testing.TB, o Options, eps ...Endpoint) *front {
	t.Helper()
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	g := New(o)
	g.SetEndpoints(eps)
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return &front{g: g, srv: srv}
}

const scoreBody = `{"input_data": {"input_string": ["Once upon a time"], "parameters": {"max_new_tokens": 1}}}`

func longBody(tokens int) string {
	return fmt.Sprintf(`{"input_data": {"input_string": ["Once upon a time"], "parameters": {"max_new_tokens": %d, "ignore_eos": true}}}`, tokens)
}

// call sends a POST through the gateway and returns the status, the
// deploying header and the body.
func (f *front) call(t testing.TB, ctx context.Context, path, body string, header ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		return 0, nil, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestTrafficSplit(t *testing.T) {
	blue1, blue2, green := startPod(t), startPod(t), startPod(t)
	f := startGateway(t, Options{}, Endpoint{Namespace: "ns", Name: "chat", Open: true, Deployments: []Deployment{
		{Name: "blue", Traffic: 90, Pods: addrs(blue1, blue2), Replicas: 2, MaxConcurrentPerInstance: 8, Timeout: 30 * time.Second},
		{Name: "green", Traffic: 10, Pods: addrs(green), Replicas: 1, MaxConcurrentPerInstance: 8, Timeout: 30 * time.Second},
	}})
	const n = 2000
	var mu sync.Mutex
	answered := map[string]int{}
	work := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range work {
				code, h, body := f.call(t, t.Context(), "/endpoints/ns/chat/score", scoreBody)
				if code != http.StatusOK || !strings.HasPrefix(body, `[{"0":`) {
					t.Errorf("status %d: %s", code, body)
					continue
				}
				mu.Lock()
				answered[h.Get(HeaderDeployment)]++
				mu.Unlock()
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	greenShare := 100 * float64(answered["green"]) / n
	t.Logf("%d requests: blue %d (pods %d + %d), green %d: green's share %.1f%% (want 10 ± 3)",
		n, answered["blue"], blue1.Seen.Load(), blue2.Seen.Load(), answered["green"], greenShare)
	if greenShare < 7 || greenShare > 13 {
		t.Errorf("green got %.1f%% of the traffic, want 10 ± 3", greenShare)
	}
	if answered["blue"]+answered["green"] != n || int(blue1.Seen.Load()+blue2.Seen.Load()) != answered["blue"] || int(green.Seen.Load()) != answered["green"] {
		t.Errorf("answers by header %v do not match what the pods saw: blue %d+%d, green %d", answered, blue1.Seen.Load(), blue2.Seen.Load(), green.Seen.Load())
	}
	// Least load spreads blue's requests over both of its pods.
	if lo, hi := min(blue1.Seen.Load(), blue2.Seen.Load()), max(blue1.Seen.Load(), blue2.Seen.Load()); lo < hi/3 {
		t.Errorf("blue's pods got %d and %d requests: not spread by load", blue1.Seen.Load(), blue2.Seen.Load())
	}
}

func TestPinnedDeploymentAndMirror(t *testing.T) {
	blue, green, shadow := startPod(t), startPod(t), startPod(t)
	f := startGateway(t, Options{}, Endpoint{Namespace: "ns", Name: "chat", Open: true, Deployments: []Deployment{
		{Name: "blue", Traffic: 100, Pods: addrs(blue), Replicas: 1, MaxConcurrentPerInstance: 4},
		{Name: "green", Pods: addrs(green), Replicas: 1, MaxConcurrentPerInstance: 4},
		{Name: "shadow", Mirror: 100, Pods: addrs(shadow), Replicas: 1, MaxConcurrentPerInstance: 4},
	}})
	for range 20 {
		code, h, body := f.call(t, t.Context(), "/endpoints/ns/chat/score", scoreBody, HeaderDeployment, "green")
		if code != http.StatusOK || h.Get(HeaderDeployment) != "green" {
			t.Fatalf("pinned to green: %d from %q: %s", code, h.Get(HeaderDeployment), body)
		}
		code, h, body = f.call(t, t.Context(), "/endpoints/ns/chat/score", scoreBody)
		if code != http.StatusOK || h.Get(HeaderDeployment) != "blue" {
			t.Fatalf("unpinned: %d from %q, want blue (the mirror's answers never reach the client): %s", code, h.Get(HeaderDeployment), body)
		}
	}
	if blue.Seen.Load() != 20 || green.Seen.Load() != 20 {
		t.Errorf("blue saw %d and green %d requests, want 20 each", blue.Seen.Load(), green.Seen.Load())
	}
	// Every request, pinned or not, was copied to the mirror.
	waitFor(t, 10*time.Second, func() bool { return shadow.Seen.Load() == 40 }, func() string {
		return fmt.Sprintf("the mirror saw %d of 40 requests", shadow.Seen.Load())
	})
	code, _, body := f.call(t, t.Context(), "/endpoints/ns/chat/score", scoreBody, HeaderDeployment, "purple")
	if code != http.StatusNotFound || !strings.Contains(body, "purple") {
		t.Errorf("pinned to a deployment that does not exist: %d %s", code, body)
	}
}

func TestAuth(t *testing.T) {
	p := startPod(t, "key-a1", "key-a2")
	q := startPod(t, "key-b1", "key-b2")
	f := startGateway(t, Options{},
		Endpoint{Namespace: "ns", Name: "a", Keys: []string{"key-a1", "key-a2"}, Deployments: []Deployment{{Name: "blue", Traffic: 100, Pods: addrs(p), Replicas: 1}}},
		Endpoint{Namespace: "ns", Name: "b", Keys: []string{"key-b1", "key-b2"}, Deployments: []Deployment{{Name: "blue", Traffic: 100, Pods: addrs(q), Replicas: 1}}},
	)
	cases := []struct {
		path, auth string
		want       int
	}{
		{"/endpoints/ns/a/score", "", http.StatusUnauthorized},
		{"/endpoints/ns/a/score", "Bearer nope", http.StatusUnauthorized},
		{"/endpoints/ns/a/score", "Basic key-a1", http.StatusUnauthorized},
		{"/endpoints/ns/a/score", "Bearer key-b1", http.StatusUnauthorized}, // b's key on a's path
		{"/endpoints/ns/a/score", "Bearer key-a1", http.StatusOK},
		{"/endpoints/ns/a/score", "bearer key-a2", http.StatusOK},
		{"/endpoints/ns/b/score", "Bearer key-a2", http.StatusUnauthorized},
		{"/endpoints/ns/b/v1/completions", "Bearer key-b2", http.StatusOK},
		{"/endpoints/ns/c/score", "Bearer key-a1", http.StatusNotFound},
		{"/endpoints/ns/a/admin", "Bearer key-a1", http.StatusNotFound},
	}
	for _, c := range cases {
		body := scoreBody
		if strings.HasSuffix(c.path, "completions") {
			body = `{"model": "tiny", "prompt": "Once", "max_tokens": 1}`
		}
		code, h, got := f.call(t, t.Context(), c.path, body, "Authorization", c.auth)
		if code != c.want {
			t.Errorf("%s with %q: %d %s, want %d", c.path, c.auth, code, got, c.want)
		}
		if code == http.StatusUnauthorized && (h.Get("WWW-Authenticate") == "" || !strings.Contains(got, "invalid_api_key")) {
			t.Errorf("%s with %q: a 401 without WWW-Authenticate or code: %v %s", c.path, c.auth, h, got)
		}
	}
}

func TestAzureStatusCodes(t *testing.T) {
	p := startPod(t)
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error": "CUDA out of memory"}`, http.StatusInternalServerError)
	}))
	t.Cleanup(broken.Close)
	f := startGateway(t, Options{}, Endpoint{Namespace: "ns", Name: "chat", Open: true, Deployments: []Deployment{
		{Name: "blue", Traffic: 100, Pods: addrs(p), Replicas: 1, MaxConcurrentPerInstance: 1, Timeout: 20 * time.Second},
		{Name: "slow", Pods: addrs(p), Replicas: 1, MaxConcurrentPerInstance: 4, Timeout: 200 * time.Millisecond},
		{Name: "broken", Pods: []string{strings.TrimPrefix(broken.URL, "http://")}, Replicas: 1, MaxConcurrentPerInstance: 4},
	}})

	t.Run("408", func(t *testing.T) {
		start := time.Now()
		code, _, body := f.call(t, t.Context(), "/endpoints/ns/chat/score", longBody(6000), HeaderDeployment, "slow")
		took := time.Since(start)
		if code != http.StatusRequestTimeout || !strings.Contains(body, "requestTimeoutMs: 200") {
			t.Fatalf("past requestTimeoutMs: %d %s", code, body)
		}
		t.Logf("408 after %v (requestTimeoutMs 200)", took.Round(time.Millisecond))
		if took > 2*time.Second {
			t.Errorf("the 408 came after %v", took)
		}
	})
	t.Run("424", func(t *testing.T) {
		code, h, body := f.call(t, t.Context(), "/endpoints/ns/chat/score", scoreBody, HeaderDeployment, "broken")
		if code != http.StatusFailedDependency || h.Get(HeaderModelErrorStatus) != "500" || h.Get(HeaderModelErrorReason) != "model_error" || !strings.Contains(body, "CUDA out of memory") {
			t.Fatalf("a model error: %d %v %s", code, h, body)
		}
	})
	t.Run("429", func(t *testing.T) {
		// maxConcurrentRequestsPerInstance 1 and one instance: two in
		// flight at most.
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() { f.call(t, ctx, "/endpoints/ns/chat/score", longBody(6000)) })
		}
		waitFor(t, 10*time.Second, func() bool { return f.g.deploymentLoad("ns", "chat", "blue").inFlight.Load() == 2 }, func() string { return "two requests in flight" })
		code, h, body := f.call(t, t.Context(), "/endpoints/ns/chat/score", scoreBody)
		if code != http.StatusTooManyRequests || h.Get("Retry-After") == "" || !strings.Contains(body, "Too many pending requests") {
			t.Errorf("a third request: %d %v %s", code, h, body)
		}
		cancel()
		wg.Wait()
		waitFor(t, 10*time.Second, func() bool { return f.g.deploymentLoad("ns", "chat", "blue").inFlight.Load() == 0 }, func() string { return "the two requests ended" })
		code, _, body = f.call(t, t.Context(), "/endpoints/ns/chat/score", scoreBody)
		if code != http.StatusOK {
			t.Errorf("after the two ended: %d %s", code, body)
		}
	})
}

func TestRetriesAnotherPod(t *testing.T) {
	alive := startPod(t)
	dead := startPod(t)
	dead.Close() // its address now refuses connections
	f := startGateway(t, Options{}, Endpoint{Namespace: "ns", Name: "chat", Open: true, Deployments: []Deployment{
		{Name: "blue", Traffic: 100, Pods: addrs(dead, alive), Replicas: 2, MaxConcurrentPerInstance: 4},
	}})
	for range 20 {
		if code, _, body := f.call(t, t.Context(), "/endpoints/ns/chat/score", scoreBody); code != http.StatusOK {
			t.Fatalf("with one pod dead: %d %s", code, body)
		}
	}
	if alive.Seen.Load() != 20 {
		t.Errorf("the live pod answered %d of 20", alive.Seen.Load())
	}
}

func TestNoReplayOfARequestThePodHad(t *testing.T) {
	// A pod that reads the whole request and then dies (a query of death,
	// say): the request is not sent to the next pod; the client gets 502.
	var got atomic.Int64
	dying := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		got.Add(1)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}))
	t.Cleanup(dying.Close)
	other := startPod(t)
	draining := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error": {"message": "server is shutting down"}}`, http.StatusServiceUnavailable)
	}))
	t.Cleanup(draining.Close)
	f := startGateway(t, Options{}, Endpoint{Namespace: "ns", Name: "chat", Open: true, Deployments: []Deployment{
		{Name: "blue", Traffic: 100, Pods: []string{strings.TrimPrefix(dying.URL, "http://")}, Replicas: 1, MaxConcurrentPerInstance: 4},
		{Name: "green", Pods: []string{strings.TrimPrefix(dying.URL, "http://"), other.Addr}, Replicas: 2, MaxConcurrentPerInstance: 4},
		{Name: "old", Pods: []string{strings.TrimPrefix(draining.URL, "http://")}, Replicas: 1, MaxConcurrentPerInstance: 4},
	}})
	code, _, body := f.call(t, t.Context(), "/endpoints/ns/chat/score", scoreBody)
	if code != http.StatusBadGateway || got.Load() != 1 {
		t.Errorf("a pod that died with the request: %d %s (it got %d requests)", code, body, got.Load())
	}
	// With another pod beside the dying one: never sent to both.
	for range 10 {
		got.Store(0)
		before := other.Seen.Load()
		code, _, _ := f.call(t, t.Context(), "/endpoints/ns/chat/score", scoreBody, HeaderDeployment, "green")
		if sent := got.Load() + other.Seen.Load() - before; sent != 1 {
			t.Fatalf("one request reached %d pods (status %d)", sent, code)
		}
	}
	// The only pod draining and none due (scaled to zero): its 503, which
	// the client may retry, not a model error.
	f.g.SetEndpoints([]Endpoint{{Namespace: "ns", Name: "chat", Open: true, Deployments: []Deployment{
		{Name: "old", Traffic: 100, Pods: []string{strings.TrimPrefix(draining.URL, "http://")}, Replicas: 0, MaxConcurrentPerInstance: 4},
	}}})
	code, h, body := f.call(t, t.Context(), "/endpoints/ns/chat/score", scoreBody, HeaderDeployment, "old")
	if code != http.StatusServiceUnavailable || h.Get(HeaderModelErrorStatus) != "" {
		t.Errorf("the only pod draining: %d %v %s", code, h, body)
	}
}

func TestDrainingPodsReplacementAnswers(t *testing.T) {
	// The only pod of a deployment drains while its replacement starts (a
	// pod deleted, a rolling update): the request waits for the new pod
	// instead of failing.
	draining := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error": {"message": "server is shutting down"}}`, http.StatusServiceUnavailable)
	}))
	t.Cleanup(draining.Close)
	old := strings.TrimPrefix(draining.URL, "http://")
	endpoint := func(pods ...string) Endpoint {
		return Endpoint{Namespace: "ns", Name: "chat", Open: true, Deployments: []Deployment{
			{Name: "blue", Traffic: 100, Pods: pods, Replicas: 1, MaxConcurrentPerInstance: 4, Timeout: time.Minute},
		}}
	}
	f := startGateway(t, Options{}, endpoint(old))
	replacement := startPod(t)
	go func() {
		time.Sleep(300 * time.Millisecond)
		f.g.SetEndpoints([]Endpoint{endpoint(old, replacement.Addr)}) // the new pod is ready; the old one still listed
	}()
	start := time.Now()
	code, _, body := f.call(t, t.Context(), "/endpoints/ns/chat/score", scoreBody)
	if code != http.StatusOK || replacement.Seen.Load() != 1 {
		t.Errorf("while the only pod was replaced: %d %s (the new pod saw %d requests)", code, body, replacement.Seen.Load())
	}
	if waited := time.Since(start); waited < 250*time.Millisecond {
		t.Errorf("answered in %v, before the replacement was ready", waited)
	}
}

func TestStreamingPassesThrough(t *testing.T) {
	p := startPod(t)
	f := startGateway(t, Options{}, Endpoint{Namespace: "ns", Name: "chat", Open: true, Deployments: []Deployment{
		{Name: "blue", Traffic: 100, Pods: addrs(p), Replicas: 1, MaxConcurrentPerInstance: 4, Timeout: time.Minute},
	}})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.srv.URL+"/endpoints/ns/chat/v1/completions",
		strings.NewReader(`{"model": "tiny", "prompt": "Once", "max_tokens": 6000, "ignore_eos": true, "stream": true}`))
	start := time.Now()
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	r := bufio.NewReader(resp.Body)
	events := 0
	for events < 10 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d events: %v", events, err)
		}
		if strings.HasPrefix(line, "data: {") {
			events++
		}
	}
	took := time.Since(start)
	t.Logf("10 events of a 6,000-token stream through the gateway after %v", took.Round(time.Millisecond))
	// 6,000 tokens take seconds: the first events arrived as they were
	// made, not when the answer was complete.
	if took > 2*time.Second {
		t.Errorf("the first 10 events took %v: buffered?", took)
	}
}

func TestKeyRotationUnderLoad(t *testing.T) {
	// The pods know the old keys only (their Secret volume lags); the
	// gateway forwards with the key it has known the longest.
	p := startPod(t, "primary-1", "secondary-1")
	ep := func(primary string) Endpoint {
		return Endpoint{Namespace: "ns", Name: "chat", Keys: []string{primary, "secondary-1"},
			Deployments: []Deployment{{Name: "blue", Traffic: 100, Pods: addrs(p), Replicas: 1, MaxConcurrentPerInstance: 8}}}
	}
	f := startGateway(t, Options{}, ep("primary-1"))
	rotateUnderLoad(t, f, "/endpoints/ns/chat/score", 3*time.Second, func() { f.g.SetEndpoints([]Endpoint{ep("primary-2")}) })
}

// rotateUnderLoad sends requests with the keys primary-1 and secondary-1
// in a loop, calls rotate (which replaces primary-1 by primary-2) after a
// second, and checks: primary-1 fails within 5 s of the rotation and is
// never accepted again when sent after its first failure; secondary-1
// never fails; primary-2 works, though the pods know only the old keys.
func rotateUnderLoad(t *testing.T, f *front, path string, load time.Duration, rotate func()) {
	t.Helper()
	var firstFail, otherFails, lateOK atomic.Int64 // unix nanos; counts
	ctx, cancel := context.WithTimeout(t.Context(), load)
	defer cancel()
	var wg sync.WaitGroup
	for _, key := range []string{"primary-1", "secondary-1", "primary-1", "secondary-1"} {
		wg.Go(func() {
			for ctx.Err() == nil {
				sent := time.Now().UnixNano()
				code, _, _ := f.call(t, ctx, path, scoreBody, "Authorization", "Bearer "+key)
				if ctx.Err() != nil {
					return
				}
				switch {
				case key == "secondary-1" && code != http.StatusOK:
					otherFails.Add(1)
				case key == "primary-1" && code == http.StatusUnauthorized:
					firstFail.CompareAndSwap(0, time.Now().UnixNano())
				case key == "primary-1" && code == http.StatusOK && firstFail.Load() != 0 && sent > firstFail.Load():
					lateOK.Add(1) // accepted though sent after it had failed
				}
			}
		})
	}
	time.Sleep(time.Second)
	rotated := time.Now()
	rotate()
	wg.Wait()
	if firstFail.Load() == 0 {
		t.Fatal("the rotated key never failed")
	}
	lag := time.Duration(firstFail.Load() - rotated.UnixNano())
	t.Logf("key rotated under load: the old key failed %v later; the other key failed %d times", lag.Round(100*time.Microsecond), otherFails.Load())
	if lag > 5*time.Second || otherFails.Load() != 0 || lateOK.Load() != 0 {
		t.Errorf("old key failed after %v (and was accepted %d times after that); the other key failed %d times", lag, lateOK.Load(), otherFails.Load())
	}
	if code, _, body := f.call(t, t.Context(), path, scoreBody, "Authorization", "Bearer primary-2"); code != http.StatusOK {
		t.Errorf("the new key, before the pods know it: %d %s", code, body)
	}
}

func TestHostRouting(t *testing.T) {
	p := startPod(t)
	f := startGateway(t, Options{HostSuffix: "leo.example"}, Endpoint{Namespace: "team-a", Name: "chat", Open: true, Deployments: []Deployment{
		{Name: "blue", Traffic: 100, Pods: addrs(p), Replicas: 1, MaxConcurrentPerInstance: 4},
	}})
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/score", strings.NewReader(scoreBody))
	req.Host = "chat.team-a.leo.example"
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(b), `[{"0":`) {
		t.Fatalf("by host: %d %s", resp.StatusCode, b)
	}
}

func TestNoInstances(t *testing.T) {
	f := startGateway(t, Options{}, Endpoint{Namespace: "ns", Name: "chat", Open: true, Deployments: []Deployment{
		{Name: "blue", Traffic: 100, Replicas: 0},
	}}, Endpoint{Namespace: "ns", Name: "idle", Open: true, Deployments: []Deployment{{Name: "blue", Replicas: 1}}})
	if code, _, body := f.call(t, t.Context(), "/endpoints/ns/chat/score", scoreBody); code != http.StatusServiceUnavailable || !strings.Contains(body, "no instances") {
		t.Errorf("scaled to zero, not wakeable: %d %s", code, body)
	}
	if code, _, body := f.call(t, t.Context(), "/endpoints/ns/idle/score", scoreBody); code != http.StatusServiceUnavailable || !strings.Contains(body, "spec.traffic") {
		t.Errorf("no traffic anywhere: %d %s", code, body)
	}
}

func waitFor(t testing.TB, timeout time.Duration, ok func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// /metrics names every endpoint and its traffic: it is served by
// MetricsHandler, for a listener of its own, and not to the endpoints'
// clients.
func TestMetricsOnlyOnTheirListener(t *testing.T) {
	f := startGateway(t, Options{}, Endpoint{Namespace: "team", Name: "chat", Open: true})
	resp, err := http.Get(f.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the public listener: %d, want 404", resp.StatusCode)
	}
	code, _, _ := f.call(t, context.Background(), "/endpoints/team/chat/score", scoreBody)
	want := fmt.Sprintf(`%s{code="%d",deployment="",endpoint="chat",namespace="team"} 1`, MetricRequests, code)
	if body := scrape(t, f.g); !strings.Contains(body, want) {
		t.Errorf("the metrics listener lacks %q in:\n%s", want, body)
	}
}

// scrape reads g's metrics as its metrics listener serves them.
func scrape(t *testing.T, g *Gateway) string {
	t.Helper()
	ms := httptest.NewServer(g.MetricsHandler())
	defer ms.Close()
	resp, err := http.Get(ms.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, body)
	}
	return string(body)
}

// Deleted endpoints and deployments leave nothing behind: their metric
// series, and the load counters of their deployments and pods.
func TestForgetsDeletedDeployments(t *testing.T) {
	blue, green, other := startPod(t), startPod(t), startPod(t)
	dep := func(name string, p *pod) Deployment {
		return Deployment{Name: name, Traffic: 50, Pods: addrs(p), Replicas: 1, MaxConcurrentPerInstance: 8, Timeout: 30 * time.Second}
	}
	chat := Endpoint{Namespace: "ns", Name: "chat", Open: true, Deployments: []Deployment{dep("blue", blue), dep("green", green)}}
	f := startGateway(t, Options{}, chat, Endpoint{Namespace: "ns", Name: "other", Open: true, Deployments: []Deployment{dep("main", other)}})
	for range 20 {
		if code, _, body := f.call(t, t.Context(), "/endpoints/ns/chat/score", scoreBody); code != http.StatusOK {
			t.Fatalf("chat: %d %s", code, body)
		}
	}
	if code, _, body := f.call(t, t.Context(), "/endpoints/ns/other/score", scoreBody); code != http.StatusOK {
		t.Fatalf("other: %d %s", code, body)
	}
	before := scrape(t, f.g)
	for _, s := range []string{`deployment="blue"`, `deployment="green"`, `endpoint="other"`} {
		if !strings.Contains(before, s) {
			t.Fatalf("no series with %s before the change:\n%s", s, before)
		}
	}

	chat.Deployments = chat.Deployments[:1] // green and the other endpoint deleted
	f.g.SetEndpoints([]Endpoint{chat})
	after := scrape(t, f.g)
	if !strings.Contains(after, `deployment="blue"`) {
		t.Errorf("blue's series are gone too:\n%s", after)
	}
	for _, s := range []string{`deployment="green"`, `endpoint="other"`} {
		if strings.Contains(after, s) {
			t.Errorf("a series with %s is left:\n%s", s, after)
		}
	}
	var loads, pods []string
	f.g.load.Range(func(k, _ any) bool { loads = append(loads, k.(string)); return true })
	f.g.podLoad.Range(func(k, _ any) bool { pods = append(pods, k.(string)); return true })
	if len(loads) != 1 || loads[0] != "ns/chat/blue" || len(pods) != 1 || pods[0] != blue.Addr {
		t.Errorf("load counters left: deployments %v, pods %v (want ns/chat/blue, %s)", loads, pods, blue.Addr)
	}
}

// A request in flight when its endpoint is deleted leaves no series behind
// when it ends, and its load counters go at the next change.
func TestForgetsEndpointDeletedMidRequest(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `[{"0":"done"}]`)
	}))
	defer slow.Close()
	addr := strings.TrimPrefix(slow.URL, "http://")
	f := startGateway(t, Options{}, Endpoint{Namespace: "ns", Name: "gone", Open: true, Deployments: []Deployment{
		{Name: "d", Traffic: 100, Pods: []string{addr}, Replicas: 1, MaxConcurrentPerInstance: 1, Timeout: 30 * time.Second}}})
	answered := make(chan int)
	go func() {
		code, _, _ := f.call(t, context.Background(), "/endpoints/ns/gone/score", scoreBody)
		answered <- code
	}()
	<-arrived
	f.g.SetEndpoints(nil)
	close(release)
	if code := <-answered; code != http.StatusOK {
		t.Fatalf("the request in flight: %d", code)
	}
	if body := scrape(t, f.g); strings.Contains(body, `endpoint="gone"`) {
		t.Errorf("series of the deleted endpoint are left:\n%s", body)
	}
	f.g.SetEndpoints(nil)
	n := 0
	f.g.load.Range(func(any, any) bool { n++; return true })
	f.g.podLoad.Range(func(any, any) bool { n++; return true })
	if n != 0 {
		t.Errorf("%d load counters left after the next change", n)
	}
}
