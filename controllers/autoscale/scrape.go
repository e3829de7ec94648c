package autoscale

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics the autoscaler reads: the gateway's per deployment, and the
// runtime pods' own.
const (
	gatewayInFlight = "leo_gateway_requests_in_flight"
	gatewayRequests = "leo_gateway_requests_total"
	runtimeInFlight = "leo_http_requests_in_flight"
	runtimeQueue    = "leo_queue_depth"
	runtimeKVUsage  = "leo_kv_cache_usage_ratio"
)

// maxMetricsBytes bounds a scrape: a pod's metrics are a few kilobytes.
const maxMetricsBytes = 4 << 20

// firstFamilies reads /metrics at the first of addrs (host:port) that
// answers with them, and says which URL that was (the last one tried, with
// its error, when none did).
func firstFamilies(ctx context.Context, c *http.Client, addrs []string) (map[string]*dto.MetricFamily, string, error) {
	var err error
	url := ""
	for _, addr := range addrs {
		url = "http://" + addr + "/metrics"
		var fams map[string]*dto.MetricFamily
		if fams, err = families(ctx, c, url); err == nil {
			return fams, url, nil
		}
	}
	return nil, url, err
}

// families fetches and parses a pod's Prometheus metrics.
func families(ctx context.Context, c *http.Client, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, maxMetricsBytes))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	return fams, nil
}

// deploymentKey names a deployment in the gateway's labels.
type deploymentKey struct{ namespace, endpoint, deployment string }

// gatewayLoad is what the gateways report, per deployment: requests in
// flight (held for a wake-up included) and requests received.
type gatewayLoad struct {
	inFlight, requests float64
}

// addGateway adds one gateway's readings to loads; a value that is not a
// finite, non-negative number makes the whole reading an error.
func addGateway(fams map[string]*dto.MetricFamily, loads map[deploymentKey]*gatewayLoad) error {
	get := func(m *dto.Metric) *gatewayLoad {
		k := deploymentKey{}
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "namespace":
				k.namespace = l.GetValue()
			case "endpoint":
				k.endpoint = l.GetValue()
			case "deployment":
				k.deployment = l.GetValue()
			}
		}
		if k.deployment == "" {
			return nil
		}
		if loads[k] == nil {
			loads[k] = &gatewayLoad{}
		}
		return loads[k]
	}
	if f := fams[gatewayInFlight]; f != nil {
		for _, m := range f.GetMetric() {
			if l := get(m); l != nil {
				v := m.GetGauge().GetValue()
				if !valid(v) {
					return fmt.Errorf("%s = %v", gatewayInFlight, v)
				}
				l.inFlight += v
			}
		}
	}
	if f := fams[gatewayRequests]; f != nil {
		for _, m := range f.GetMetric() {
			if l := get(m); l != nil {
				v := m.GetCounter().GetValue()
				if !valid(v) {
					return fmt.Errorf("%s = %v", gatewayRequests, v)
				}
				l.requests += v
			}
		}
	}
	return nil
}

// valid is a load reading that means something: finite, not negative.
func valid(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) && v >= 0 }

// podLoad is what one runtime pod reports.
type podLoad struct {
	inFlight, queued, kvUsage float64
}

// runtimeLoad reads a runtime pod's load; a value that is not a finite,
// non-negative number is an error.
func runtimeLoad(fams map[string]*dto.MetricFamily) (podLoad, error) {
	one := func(name string) float64 {
		f := fams[name]
		if f == nil || len(f.GetMetric()) == 0 {
			return 0
		}
		m := f.GetMetric()[0]
		if g := m.GetGauge(); g != nil {
			return g.GetValue()
		}
		return m.GetUntyped().GetValue()
	}
	l := podLoad{inFlight: one(runtimeInFlight), queued: one(runtimeQueue), kvUsage: one(runtimeKVUsage)}
	for _, v := range []float64{l.inFlight, l.queued, l.kvUsage} {
		if !valid(v) {
			return podLoad{}, fmt.Errorf("a load metric is %v", v)
		}
	}
	return l, nil
}

// scrapeClient reads pods' metrics with a short timeout: a pod that does
// not answer in time is left out of this reading.
func scrapeClient() *http.Client {
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute,
	}}
}
