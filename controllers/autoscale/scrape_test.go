package autoscale

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
)

func TestScrapeRefusesMeaninglessValues(t *testing.T) {
	cases := []struct {
		name, text string
		gateway    bool
		ok         bool
	}{
		{"runtime", "leo_http_requests_in_flight 3\nleo_queue_depth 1\nleo_kv_cache_usage_ratio 0.5\n", false, true},
		{"runtime NaN", "leo_http_requests_in_flight NaN\n", false, false},
		{"runtime negative", "leo_kv_cache_usage_ratio -1\n", false, false},
		{"gateway", "# TYPE leo_gateway_requests_in_flight gauge\nleo_gateway_requests_in_flight{namespace=\"a\",endpoint=\"b\",deployment=\"c\"} 2\n", true, true},
		{"gateway +Inf", "# TYPE leo_gateway_requests_in_flight gauge\nleo_gateway_requests_in_flight{namespace=\"a\",endpoint=\"b\",deployment=\"c\"} +Inf\n", true, false},
	}
	for _, c := range cases {
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(strings.NewReader(c.text))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if c.gateway {
			loads := map[deploymentKey]*gatewayLoad{}
			err = addGateway(fams, loads)
			if err == nil && loads[deploymentKey{"a", "b", "c"}].inFlight != 2 {
				t.Errorf("%s: %+v", c.name, loads)
			}
		} else {
			var l podLoad
			l, err = runtimeLoad(fams)
			if err == nil && (l.inFlight != 3 || l.kvUsage != 0.5) {
				t.Errorf("%s: %+v", c.name, l)
			}
		}
		if (err == nil) != c.ok {
			t.Errorf("%s: error %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

// TestGatewayMetricsAddrs: a gateway pod's metrics port; for one that
// declares none (an older chart), the default port, then its public one,
// where gateways before the metrics listener served /metrics; none for a
// pod that is not ready.
func TestGatewayMetricsAddrs(t *testing.T) {
	pod := func(ready bool, ports ...corev1.ContainerPort) *corev1.Pod {
		p := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "gateway", Ports: ports}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.7"}}
		if ready {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		}
		return p
	}
	for _, c := range []struct {
		name string
		pod  *corev1.Pod
		want []string
	}{
		{"metrics port", pod(true, corev1.ContainerPort{Name: "http", ContainerPort: 8080}, corev1.ContainerPort{Name: "metrics", ContainerPort: 9191}), []string{"10.0.0.7:9191"}},
		{"older chart", pod(true, corev1.ContainerPort{Name: "http", ContainerPort: 8080}), []string{"10.0.0.7:9090", "10.0.0.7:8080"}},
		{"no ports", pod(true), []string{"10.0.0.7:9090"}},
		{"not ready", pod(false, corev1.ContainerPort{Name: "http", ContainerPort: 8080}), nil},
	} {
		if got := gatewayMetricsAddrs(c.pod); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
