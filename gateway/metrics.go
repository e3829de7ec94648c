package gateway

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names the autoscaler reads from the gateway's /metrics.
const (
	MetricInFlight = "leo_gateway_requests_in_flight"
	MetricHeld     = "leo_gateway_requests_held_for_wake"
	MetricRequests = "leo_gateway_requests_total"
)

// metrics are the gateway's, per endpoint and deployment (labels
// namespace, endpoint, deployment; empty for a request refused before
// they were known, so that made-up paths cannot grow the series).
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	wakes    *prometheus.CounterVec
	retries  *prometheus.CounterVec
	mirrored *prometheus.CounterVec
}

var deploymentLabels = []string{"namespace", "endpoint", "deployment"}

func newMetrics(reg prometheus.Registerer, g *Gateway) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRequests, Help: "Requests answered, by endpoint, deployment and status code (499: the client went away).",
		}, append(deploymentLabels, "code")),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "leo_gateway_request_duration_seconds", Help: "Time to answer a request, holding for a wake-up included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14),
		}, deploymentLabels),
		wakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leo_gateway_wakes_total", Help: "Deployments scaled from zero by a request.",
		}, deploymentLabels),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leo_gateway_retries_total", Help: "Requests sent to another pod after one failed before answering.",
		}, deploymentLabels),
		mirrored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leo_gateway_mirrored_requests_total", Help: "Copies of requests for mirror deployments: sent, failed (an error or a status of 400 or more), or dropped (no ready pod, or too many in flight).",
		}, append(deploymentLabels, "result")),
	}
	reg.MustRegister(m.requests, m.duration, m.wakes, m.retries, m.mirrored, loadCollector{g})
	return m
}

func (m *metrics) observe(l requestLabels, status int, took time.Duration) {
	m.requests.WithLabelValues(l.ns, l.endpoint, l.deployment, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(l.ns, l.endpoint, l.deployment).Observe(took.Seconds())
}

// forget deletes the series of an endpoint's deployment, or of the whole
// endpoint when deployment is nil.
func (m *metrics) forget(ns, endpoint string, deployment *string) {
	l := prometheus.Labels{"namespace": ns, "endpoint": endpoint}
	if deployment != nil {
		l["deployment"] = *deployment
	}
	m.requests.DeletePartialMatch(l)
	m.duration.DeletePartialMatch(l)
	m.wakes.DeletePartialMatch(l)
	m.retries.DeletePartialMatch(l)
	m.mirrored.DeletePartialMatch(l)
}

// loadCollector reports the live load counters of every deployment in
// the table (one just deleted keeps its counter while requests of its
// end, unreported).
type loadCollector struct{ g *Gateway }

var (
	inFlightDesc = prometheus.NewDesc(MetricInFlight, "Requests of a deployment in this gateway: held for a wake-up or forwarded, not yet answered.", deploymentLabels, nil)
	heldDesc     = prometheus.NewDesc(MetricHeld, "Requests of a deployment waiting for a ready pod (scale from zero, or pods starting).", deploymentLabels, nil)
)

func (c loadCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- inFlightDesc
	ch <- heldDesc
}

func (c loadCollector) Collect(ch chan<- prometheus.Metric) {
	t := c.g.current.Load()
	c.g.load.Range(func(_, v any) bool {
		l := v.(*deploymentLoad)
		if e := t.endpoints[l.ns+"/"+l.endpoint]; e == nil || e.deployments[l.deployment] == nil {
			return true
		}
		ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(l.inFlight.Load()), l.ns, l.endpoint, l.deployment)
		ch <- prometheus.MustNewConstMetric(heldDesc, prometheus.GaugeValue, float64(l.held.Load()), l.ns, l.endpoint, l.deployment)
		return true
	})
}
