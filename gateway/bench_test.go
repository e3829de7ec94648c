package gateway

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkGatewayOverhead measures what the gateway adds to a request on
// loopback: the same /score request (one generated token) sent straight to
// a runtime server and through the gateway, alternating, one at a time;
// it prints the medians and their difference.
func BenchmarkGatewayOverhead(b *testing.B) {
	p := startPod(b)
	f := startGateway(b, Options{}, Endpoint{Namespace: "ns", Name: "chat", Keys: []string{"k"}, Deployments: []Deployment{
		{Name: "blue", Traffic: 100, Pods: addrs(p), Replicas: 1, MaxConcurrentPerInstance: 4},
	}})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	send := func(url string) time.Duration {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(scoreBody))
		req.Header.Set("Authorization", "Bearer k")
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		took := time.Since(start)
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("%s: %d", url, resp.StatusCode)
		}
		return took
	}
	direct, gateway := p.URL+"/score", f.srv.URL+"/endpoints/ns/chat/score"
	for range 50 { // warm up connections and caches
		send(direct)
		send(gateway)
	}
	const n = 2000
	for b.Loop() {
		var d, g []time.Duration
		for range n {
			d = append(d, send(direct))
			g = append(g, send(gateway))
		}
		slices.Sort(d)
		slices.Sort(g)
		pd, pg := d[n/2], g[n/2]
		b.ReportMetric(float64((pg - pd).Microseconds()), "µs-added-p50")
		fmt.Printf("%d requests each, alternating: direct p50 %v p90 %v; through the gateway p50 %v p90 %v; added at p50: %v\n",
			n, pd.Round(time.Microsecond), d[n*9/10].Round(time.Microsecond), pg.Round(time.Microsecond), g[n*9/10].Round(time.Microsecond), (pg - pd).Round(time.Microsecond))
	}
}
