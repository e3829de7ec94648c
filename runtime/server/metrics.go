package server

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/leo-operator/leo/runtime/engine"
)

// metrics are the server's Prometheus metrics. The engine's load and
// totals are read from engine.Stats when scraped (Func collectors), so
// they are exact and cost nothing per request; the per-request ones are
// observed by the handlers.
type metrics struct {
	requests *prometheus.CounterVec   // by path and code
	duration *prometheus.HistogramVec // by path
	inFlight prometheus.Gauge         // generation requests only
	ttft     prometheus.Histogram
	speed    prometheus.Histogram
	rejected atomic.Int64 // 429s of the server's bound on pending requests
}

// newRegistry is the registry of a server given none: the Go runtime's
// and the process's metrics, as promhttp's default registry has.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func newMetrics(reg prometheus.Registerer, e *engine.Engine) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leo_http_requests_total", Help: "HTTP requests answered, by path and status code (499: the client went away).",
		}, []string{"path", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "leo_http_request_duration_seconds", Help: "Time to answer an HTTP request, queueing and generation included.",
			// Generation takes from milliseconds to minutes.
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 90, 120, 300},
		}, []string{"path"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "leo_http_requests_in_flight", Help: "Generation requests (/score, /v1/completions, /v1/chat/completions) being answered.",
		}),
		ttft: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "leo_time_to_first_token_seconds", Help: "Time from a sequence's submission to its first generated token, queueing included.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}),
		speed: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "leo_generation_tokens_per_second", Help: "Generation speed of one sequence of at least 2 tokens: the inter-token rate after the first token, (tokens - 1) over the time from its first token to its last.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12), // 1 .. 2048
		}),
	}
	stat := func(f func(engine.Stats) float64) func() float64 {
		return func() float64 { return f(e.Stats()) }
	}
	cs := []prometheus.Collector{
		m.requests, m.duration, m.inFlight, m.ttft, m.speed,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "leo_generated_tokens_total", Help: "Tokens generated.",
		}, stat(func(s engine.Stats) float64 { return float64(s.GeneratedTokens) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "leo_prompt_tokens_total", Help: "Prompt tokens run through the model (those reused from the KV cache are not counted).",
		}, stat(func(s engine.Stats) float64 { return float64(s.PromptTokens) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "leo_prompt_tokens_reused_total", Help: "Prompt tokens whose keys and values were reused from the KV cache of an earlier sequence.",
		}, stat(func(s engine.Stats) float64 { return float64(s.ReusedPromptTokens) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "leo_requests_rejected_total", Help: "Requests refused with HTTP 429: the engine's queue, or the server's bound on pending requests, was full, or no slot was free within the queue wait.",
		}, stat(func(s engine.Stats) float64 { return float64(s.Rejected + m.rejected.Load()) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "leo_queue_depth", Help: "Sequences waiting for a KV cache slot.",
		}, stat(func(s engine.Stats) float64 { return float64(s.Queued) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "leo_sequences_running", Help: "Sequences holding a KV cache slot.",
		}, stat(func(s engine.Stats) float64 { return float64(s.Running) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "leo_kv_cache_usage_ratio", Help: "Share of the KV cache's positions held by running sequences.",
		}, stat(func(s engine.Stats) float64 {
			if s.KVTotal == 0 {
				return 0
			}
			return float64(s.KVUsed) / float64(s.KVTotal)
		})),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering the server's metrics: %w (is the registry shared with another server?)", err)
		}
	}
	return m, nil
}

// observeRequest counts an answered request.
func (m *metrics) observeRequest(path string, code int, took time.Duration) {
	m.requests.WithLabelValues(path, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(path).Observe(took.Seconds())
}

// observeSequence records the timings of a finished sequence.
func (m *metrics) observeSequence(r engine.Result) {
	if r.TimeToFirstToken > 0 {
		m.ttft.Observe(r.TimeToFirstToken.Seconds())
	}
	// GenTime runs from the first token to the last: it holds n-1
	// intervals between tokens, and none for a 1-token sequence.
	if n := len(r.Tokens); n > 1 && r.GenTime > 0 {
		m.speed.Observe(float64(n-1) / r.GenTime.Seconds())
	}
}
