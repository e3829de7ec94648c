package autoscale

import (
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
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
