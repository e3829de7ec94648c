package s3test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/leo-operator/leo/internal/hubtest"
)

// Fault is what the proxy does to one object GET (hubtest's faults; the
// zero value passes it through).
type Fault = hubtest.Fault

// Proxy is a reverse proxy in front of a Store that injects faults into
// object GETs (listings pass untouched) and counts the body bytes it
// sends. Requests keep their Host header, so SigV4 signatures stay valid.
type Proxy struct {
	*httptest.Server
	// Fault decides each object GET's fault; n counts the GETs of that
	// key before this one.
	Fault func(key string, n int) Fault
	mu    sync.Mutex
	count map[string]int
	sent  atomic.Int64
}

// NewProxy starts a proxy to s until the test ends.
func NewProxy(t testing.TB, s *Store) *Proxy {
	target, _ := url.Parse(s.Endpoint)
	p := &Proxy{count: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = nil
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, isObject := objectKey(r)
		var f Fault
		if isObject && p.Fault != nil {
			p.mu.Lock()
			n := p.count[key]
			p.count[key]++
			hook := p.Fault
			p.mu.Unlock()
			f = hook(key, n)
		}
		if f.Status != 0 {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(f.Status)
			_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>injected</Message></Error>`)
			return
		}
		if !isObject {
			rp.ServeHTTP(w, r)
			return
		}
		rp.ServeHTTP(&hubtest.FaultWriter{ResponseWriter: w, Fault: f, Ctx: r.Context(), Count: func(n int) { p.sent.Add(int64(n)) }}, r)
	}))
	t.Cleanup(p.Close)
	return p
}

// Sent returns the object body bytes sent so far.
func (p *Proxy) Sent() int64 { return p.sent.Load() }

// objectKey returns bucket/key for a GET of an object (not a listing).
func objectKey(r *http.Request) (string, bool) {
	if r.Method != http.MethodGet || r.URL.Query().Has("list-type") || r.URL.Query().Has("location") {
		return "", false
	}
	p := strings.TrimPrefix(r.URL.Path, "/")
	if !strings.Contains(p, "/") {
		return "", false
	}
	return p, true
}
