package autoscale

import (
	"context"
	"fmt"
	"io"
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

// addGateway adds one gateway's readings to loads.
func addGateway(fams map[string]*dto.MetricFamily, loads map[deploymentKey]*gatewayLoad) {
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
				l.inFlight += m.GetGauge().GetValue()
			}
		}
	}
	if f := fams[gatewayRequests]; f != nil {
		for _, m := range f.GetMetric() {
			if l := get(m); l != nil {
				l.requests += m.GetCounter().GetValue()
			}
		}
	}
}

// podLoad is what one runtime pod reports.
type podLoad struct {
	inFlight, queued, kvUsage float64
}

func runtimeLoad(fams map[string]*dto.MetricFamily) podLoad {
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
	return podLoad{inFlight: one(runtimeInFlight), queued: one(runtimeQueue), kvUsage: one(runtimeKVUsage)}
}

// scrapeClient reads pods' metrics with a short timeout: a pod that does
// not answer in time is left out of this reading.
func scrapeClient() *http.Client {
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute,
	}}
}
