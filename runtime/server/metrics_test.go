package server

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/leo-operator/leo/runtime/engine"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	v := newEnv(t, envConfig{opts: Options{Registry: reg}})
	scrape := func() string {
		resp, b := v.do(context.Background(), http.MethodGet, "/metrics", "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/metrics: %d", resp.StatusCode)
		}
		return string(b)
	}
	counter := func(text, series string) float64 {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
		if m == nil {
			return 0
		}
		f, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	const scoreOK = `leo_http_requests_total{code="200",path="/score"}`
	before := scrape()
	v.post("/score", scoreBody(`"max_new_tokens": 5, "ignore_eos": true`, "hi"), http.StatusOK)
	v.post("/score", `{`, http.StatusBadRequest)
	v.do(context.Background(), http.MethodGet, "/no/such/path", "")
	after := scrape()

	for _, name := range []string{
		"leo_http_requests_total", "leo_http_request_duration_seconds", "leo_time_to_first_token_seconds",
		"leo_generation_tokens_per_second", "leo_generated_tokens_total", "leo_prompt_tokens_total",
		"leo_prompt_tokens_reused_total", "leo_queue_depth", "leo_sequences_running",
		"leo_http_requests_in_flight", "leo_kv_cache_usage_ratio", "leo_requests_rejected_total",
	} {
		if !strings.Contains(after, "# TYPE "+name+" ") {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if a, b := counter(before, scoreOK), counter(after, scoreOK); b != a+1 {
		t.Errorf("%s went from %v to %v, want +1", scoreOK, a, b)
	}
	if n := counter(after, `leo_http_requests_total{code="400",path="/score"}`); n != 1 {
		t.Errorf("400s on /score: %v, want 1", n)
	}
	if n := counter(after, `leo_http_requests_total{code="404",path="other"}`); n != 1 {
		t.Errorf("404s: %v, want 1 (unknown paths are labelled other)", n)
	}
	if n := counter(after, "leo_generated_tokens_total"); n != 5 {
		t.Errorf("leo_generated_tokens_total %v, want 5", n)
	}
	if n := counter(after, "leo_time_to_first_token_seconds_count"); n != 1 {
		t.Errorf("leo_time_to_first_token_seconds_count %v, want 1", n)
	}
	if n := counter(after, "leo_generation_tokens_per_second_count"); n != 1 {
		t.Errorf("leo_generation_tokens_per_second_count %v, want 1", n)
	}
	// Only generation requests count as in flight: not the scrape.
	if n := counter(after, "leo_http_requests_in_flight"); n != 0 {
		t.Errorf("leo_http_requests_in_flight %v, want 0", n)
	}

	// A 1-token sequence has no inter-token interval: no speed.
	v.post("/score", scoreBody(`"max_new_tokens": 1, "ignore_eos": true`, "hi"), http.StatusOK)
	if n := counter(scrape(), "leo_generation_tokens_per_second_count"); n != 1 {
		t.Errorf("after a 1-token sequence leo_generation_tokens_per_second_count is %v, want still 1", n)
	}

	// A registry can hold one server's metrics only.
	if _, err := New(v.e, v.tok, Options{ModelName: "x", Registry: reg}); err == nil {
		t.Error("a second server on the same registry was accepted")
	}
}

// The speed of a sequence is its inter-token rate: n tokens take n-1
// intervals from the first to the last.
func TestTokensPerSecond(t *testing.T) {
	v := newEnv(t, envConfig{paused: true})
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg, v.e)
	if err != nil {
		t.Fatal(err)
	}
	m.observeSequence(engine.Result{Tokens: make([]int32, 5), GenTime: 2 * time.Second})
	m.observeSequence(engine.Result{Tokens: make([]int32, 1), GenTime: time.Microsecond})
	m.observeSequence(engine.Result{Tokens: make([]int32, 3)}) // no time: nothing to divide by
	var h *dto.Histogram
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "leo_generation_tokens_per_second" {
			h = f.GetMetric()[0].GetHistogram()
		}
	}
	if h.GetSampleCount() != 1 || h.GetSampleSum() != 2 {
		t.Errorf("%d observations summing to %v, want 1 of 4 tokens / 2 s = 2", h.GetSampleCount(), h.GetSampleSum())
	}
}
