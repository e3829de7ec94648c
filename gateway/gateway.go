package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/leo-operator/leo/gateway/route"
)

// Defaults of Options.
const (
	DefaultWakeTimeout  = 5 * time.Minute
	DefaultMaxBodyBytes = 1 << 20
	// maxAttempts bounds the pods one request is tried on.
	maxAttempts = 3
	// maxMirrors bounds the mirrored copies in flight; past it copies are
	// dropped (and counted) rather than slowing anything down.
	maxMirrors = 64
)

// Headers of Azure ML's online endpoints.
const (
	// HeaderDeployment pins a request to a deployment, and tells the client
	// which deployment answered.
	HeaderDeployment = "azureml-model-deployment"
	// HeaderModelErrorStatus and HeaderModelErrorReason come with a 424:
	// the model's own status code and why.
	HeaderModelErrorStatus = "ms-azureml-model-error-statuscode"
	HeaderModelErrorReason = "ms-azureml-model-error-reason"
)

// Waker scales a deployment from zero instances to at least one.
type Waker interface {
	Wake(ctx context.Context, namespace, endpoint, deployment string) error
}

// Options configure a Gateway.
type Options struct {
	// HostSuffix enables host-based routing: a request for
	// <endpoint>.<namespace>.<HostSuffix> is routed to that endpoint with
	// its path as it is (/score, /v1/...). Empty: path routing only.
	HostSuffix string
	// Waker scales deployments from zero; nil: a deployment with no
	// instance is answered 503 at once.
	Waker Waker
	// WakeTimeout bounds how long a request is held for a deployment to
	// get a ready pod; past it the answer is 503 with Retry-After.
	// Default DefaultWakeTimeout.
	WakeTimeout time.Duration
	// MaxBodyBytes bounds request bodies (413 beyond). Default
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Transport reaches the pods. Default: keep-alive connections, many
	// per pod.
	Transport http.RoundTripper
	// Registry gets the gateway's metrics, and is what MetricsHandler
	// serves.
	// Default: a new registry with the Go and process collectors.
	Registry *prometheus.Registry
	// Log gets a line per failed request. Default slog.Default().
	Log *slog.Logger
}

// Gateway routes the requests of every endpoint to its deployments' pods.
// It is stateless but for load counters: any number of replicas can run.
type Gateway struct {
	opts      Options
	transport http.RoundTripper
	log       *slog.Logger
	met       *metrics
	reg       *prometheus.Registry

	mu      sync.Mutex // SetEndpoints
	ages    keyAges
	current atomic.Pointer[table]
	changed atomic.Pointer[chan struct{}] // closed when current changes
	synced  atomic.Bool
	drain   atomic.Bool

	// counters orders prune's deletions (write) after the lookup and
	// increment of a counter (read), so that no request counts itself on
	// a counter just deleted.
	counters sync.RWMutex
	load     sync.Map // deployment id ("ns/name/deployment") → *deploymentLoad
	podLoad  sync.Map // "host:port" → *atomic.Int64, requests in flight
	mirrors  chan struct{}
}

// deploymentLoad counts one deployment's requests in this gateway.
type deploymentLoad struct {
	ns, endpoint, deployment string
	inFlight                 atomic.Int64 // held and forwarded
	held                     atomic.Int64 // waiting for a ready pod
}

// New makes a gateway with no endpoints; a source calls SetEndpoints.
func New(o Options) *Gateway {
	if o.WakeTimeout <= 0 {
		o.WakeTimeout = DefaultWakeTimeout
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.Transport == nil {
		o.Transport = &http.Transport{
			Proxy:               nil, // pods are reached directly
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        4096,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
		}
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	reg := o.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	g := &Gateway{opts: o, transport: o.Transport, log: o.Log, reg: reg, mirrors: make(chan struct{}, maxMirrors)}
	g.met = newMetrics(reg, g)
	g.current.Store(&table{endpoints: map[string]*endpointEntry{}})
	ch := make(chan struct{})
	g.changed.Store(&ch)
	return g
}

// SetEndpoints replaces what the gateway routes to. Requests held for a
// ready pod look again.
func (g *Gateway) SetEndpoints(eps []Endpoint) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t := newTable(eps, &g.ages, time.Now())
	prev := g.current.Swap(t)
	g.synced.Store(true)
	next := make(chan struct{})
	old := g.changed.Swap(&next)
	close(*old)
	g.prune(prev, t)
}

// prune forgets what the gateway counted for endpoints, deployments and
// pods that t no longer has, so that churn does not grow its maps and
// series: the metric series of the endpoints and deployments prev had and
// t has not, and the load counters of deployments and pods not in t with
// nothing in flight (one with requests in flight is forgotten by a later
// call, once they have ended).
func (g *Gateway) prune(prev, t *table) {
	liveDeps, livePods := map[string]bool{}, map[string]bool{}
	for key, e := range t.endpoints {
		for name, d := range e.deployments {
			liveDeps[key+"/"+name] = true
			for _, p := range d.Pods {
				livePods[p] = true
			}
		}
	}
	if prev != nil {
		for key, e := range prev.endpoints {
			if _, ok := t.endpoints[key]; !ok {
				g.met.forget(e.Namespace, e.Name, nil)
				continue
			}
			for name := range e.deployments {
				if !liveDeps[key+"/"+name] {
					g.met.forget(e.Namespace, e.Name, &name)
				}
			}
		}
	}
	g.counters.Lock()
	defer g.counters.Unlock()
	g.load.Range(func(id, v any) bool {
		if !liveDeps[id.(string)] && v.(*deploymentLoad).inFlight.Load() == 0 {
			g.load.Delete(id)
		}
		return true
	})
	g.podLoad.Range(func(addr, v any) bool {
		if !livePods[addr.(string)] && v.(*atomic.Int64).Load() == 0 {
			g.podLoad.Delete(addr)
		}
		return true
	})
}

// Drain makes /readyz answer 503, so that load balancers stop sending
// new requests before the gateway stops; requests keep being served.
func (g *Gateway) Drain() { g.drain.Store(true) }

// MetricsHandler serves /metrics, the counters the autoscaler reads, for
// a listener of its own (leo-gateway --metrics-addr): they name every
// endpoint and deployment and their traffic, which the endpoints' clients,
// on the public listener, have no business reading.
func (g *Gateway) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{}))
	return mux
}

// ServeHTTP answers the gateway's own paths (/healthz, /readyz) and
// routes everything else.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		writeText(w, http.StatusOK, "ok")
		return
	case "/readyz":
		if !g.synced.Load() {
			writeText(w, http.StatusServiceUnavailable, "endpoints not loaded yet")
			return
		}
		if g.drain.Load() {
			writeText(w, http.StatusServiceUnavailable, "shutting down")
			return
		}
		writeText(w, http.StatusOK, "ok")
		return
	}
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	labels := g.handle(rec, r)
	if rec.status == 0 {
		rec.status = statusClientGone
	}
	g.met.observe(labels, rec.status, time.Since(start))
	g.forgetIfGone(labels)
}

// forgetIfGone deletes the series a request just counted when its
// endpoint or deployment was deleted while it ran (prune forgot them
// then, and observe made them again).
func (g *Gateway) forgetIfGone(l requestLabels) {
	if l.endpoint == "" {
		return
	}
	e, ok := g.current.Load().endpoints[l.ns+"/"+l.endpoint]
	switch {
	case !ok:
		g.met.forget(l.ns, l.endpoint, nil)
	case l.deployment != "" && e.deployments[l.deployment] == nil:
		g.met.forget(l.ns, l.endpoint, &l.deployment)
	}
}

// requestLabels are the metric labels of a request: empty until the
// endpoint (and then the deployment) is known.
type requestLabels struct{ ns, endpoint, deployment string }

// handle routes one request and returns its labels.
func (g *Gateway) handle(w *recorder, r *http.Request) requestLabels {
	ns, name, path, ok := g.route(r)
	if !ok {
		writeError(w, http.StatusNotFound, "not_found",
			"no such path: endpoints are at /endpoints/<namespace>/<endpoint>/score and /endpoints/<namespace>/<endpoint>/v1/...")
		return requestLabels{}
	}
	ep := g.current.Load().endpoints[ns+"/"+name]
	if ep == nil {
		writeError(w, http.StatusNotFound, "endpoint_not_found", fmt.Sprintf("no endpoint %q in namespace %q", name, ns))
		return requestLabels{}
	}
	labels := requestLabels{ns: ns, endpoint: name}
	if !ep.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="leo"`)
		writeError(w, http.StatusUnauthorized, "invalid_api_key",
			"missing or invalid API key: send \"Authorization: Bearer <key>\" with one of this endpoint's keys")
		return labels
	}
	dep, status, msg := ep.choose(r.Header.Get(HeaderDeployment))
	if dep == nil {
		writeError(w, status, "no_deployment", msg)
		return labels
	}
	labels.deployment = dep.Name
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.opts.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the request body is over %d bytes", g.opts.MaxBodyBytes))
		}
		return labels // else the client went away while sending
	}
	load, inFlight := g.enterDeployment(ns, name, dep.Name)
	// Instances counted: the ready ones, or while they start (a wake from
	// zero, a rollout) the ones asked for, at least one.
	instances := max(len(dep.Pods), int(dep.Replicas), 1)
	if limit := int64(2 * max(dep.MaxConcurrentPerInstance, 1) * instances); inFlight > limit {
		load.inFlight.Add(-1)
		w.Header().Set("Retry-After", "1")
		// Azure ML answers a full deployment with these words.
		writeError(w, http.StatusTooManyRequests, "too_many_requests", "Too many pending requests")
		return labels
	}
	defer load.inFlight.Add(-1)

	for _, m := range ep.mirrors {
		if rand.Int32N(100) < m.weight {
			g.mirror(ep, m.name, r, path, body)
		}
	}

	dep, ok = g.awaitPods(w, r, ep, dep, load)
	if !ok {
		return labels
	}
	g.forward(w, r, ep, dep, path, body)
	return labels
}

// route finds the endpoint and the path to send the pods (see route.Parse).
func (g *Gateway) route(r *http.Request) (ns, name, path string, ok bool) {
	return route.Parse(r.URL.Path, r.Host, g.opts.HostSuffix)
}

// authorized says whether r carries one of the endpoint's keys (always,
// when it is open; never, when it has none yet). Every key is compared,
// in constant time.
func (e *endpointEntry) authorized(r *http.Request) bool {
	if e.Open {
		return true
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return keyMatches(strings.TrimSpace(token), e.keys)
}

// choose picks the deployment for a request: the pinned one, else one by
// the traffic weights. On failure it returns the status and message.
func (e *endpointEntry) choose(pinned string) (*Deployment, int, string) {
	if pinned != "" {
		d := e.deployments[pinned]
		if d == nil {
			return nil, http.StatusNotFound, fmt.Sprintf("the %s header names deployment %q, which endpoint %q does not have", HeaderDeployment, pinned, e.Name)
		}
		return d, 0, ""
	}
	if e.liveTotal <= 0 {
		return nil, http.StatusServiceUnavailable, fmt.Sprintf("no deployment of endpoint %q receives traffic: set spec.traffic, or pin one with the %s header", e.Name, HeaderDeployment)
	}
	return e.deployments[e.pick(rand.Int32N(e.liveTotal))], 0, ""
}

// enterDeployment counts a request in its deployment's load and returns
// the load and the count with it.
func (g *Gateway) enterDeployment(ns, name, dep string) (*deploymentLoad, int64) {
	g.counters.RLock()
	defer g.counters.RUnlock()
	l := g.deploymentLoad(ns, name, dep)
	return l, l.inFlight.Add(1)
}

// enterPod counts a request in a pod's load and returns the counter.
func (g *Gateway) enterPod(addr string) *atomic.Int64 {
	g.counters.RLock()
	defer g.counters.RUnlock()
	c := g.podCounter(addr)
	c.Add(1)
	return c
}

func (g *Gateway) deploymentLoad(ns, name, dep string) *deploymentLoad {
	id := ns + "/" + name + "/" + dep
	if l, ok := g.load.Load(id); ok {
		return l.(*deploymentLoad)
	}
	l, _ := g.load.LoadOrStore(id, &deploymentLoad{ns: ns, endpoint: name, deployment: dep})
	return l.(*deploymentLoad)
}

func (g *Gateway) podCounter(addr string) *atomic.Int64 {
	if c, ok := g.podLoad.Load(addr); ok {
		return c.(*atomic.Int64)
	}
	c, _ := g.podLoad.LoadOrStore(addr, new(atomic.Int64))
	return c.(*atomic.Int64)
}

// leastLoaded is the pod with the fewest requests in flight from this
// gateway, skipping those tried; ties go to a random one of them, so that
// an idle deployment's requests spread. "" when none is left.
func (g *Gateway) leastLoaded(pods []string, tried []string) string {
	best, bestLoad, ties := "", int64(0), 0
	for _, p := range pods {
		if contains(tried, p) {
			continue
		}
		l := g.podCounter(p).Load()
		switch {
		case best == "" || l < bestLoad:
			best, bestLoad, ties = p, l, 1
		case l == bestLoad:
			ties++
			if rand.IntN(ties) == 0 {
				best = p
			}
		}
	}
	return best
}

// anotherPod returns deployment dep as now known once it has a ready pod
// not in tried: at once if it has one, else, while a replacement is due
// (it wants replicas), when one is ready, for as long as ctx allows. It
// returns false when no other pod is due (scaled to zero, or deleted) or
// ctx ends first: the draining pod's 503 is then the answer.
func (g *Gateway) anotherPod(ctx context.Context, ep *endpointEntry, dep *Deployment, tried []string) (*Deployment, bool) {
	for {
		changed := *g.changed.Load()
		cur := g.current.Load().endpoints[ep.Namespace+"/"+ep.Name]
		if cur == nil || cur.deployments[dep.Name] == nil {
			return nil, false
		}
		d := cur.deployments[dep.Name]
		for _, p := range d.Pods {
			if !contains(tried, p) {
				return d, true
			}
		}
		if d.Replicas == 0 {
			return nil, false
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, false
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// awaitPods returns the deployment (as now known) once it has a ready pod:
// at once when it has one; else, when it may be woken or its pods are
// starting, it holds the request (waking it from zero) for WakeTimeout.
// On failure it has answered the request.
func (g *Gateway) awaitPods(w *recorder, r *http.Request, ep *endpointEntry, dep *Deployment, load *deploymentLoad) (*Deployment, bool) {
	if len(dep.Pods) > 0 {
		return dep, true
	}
	canWake := dep.Wakeable && g.opts.Waker != nil
	if dep.Replicas == 0 && !canWake {
		writeError(w, http.StatusServiceUnavailable, "no_instances", fmt.Sprintf("deployment %q of endpoint %q has no instances", dep.Name, ep.Name))
		return nil, false
	}
	load.held.Add(1)
	defer load.held.Add(-1)
	timer := time.NewTimer(g.opts.WakeTimeout)
	defer timer.Stop()
	woken := false
	for {
		changed := *g.changed.Load()
		cur := g.current.Load().endpoints[ep.Namespace+"/"+ep.Name]
		if cur == nil || cur.deployments[dep.Name] == nil {
			writeError(w, http.StatusNotFound, "endpoint_not_found", fmt.Sprintf("endpoint %q or its deployment %q was deleted", ep.Name, dep.Name))
			return nil, false
		}
		dep = cur.deployments[dep.Name]
		if len(dep.Pods) > 0 {
			return dep, true
		}
		if dep.Replicas == 0 && canWake && !woken {
			woken = true
			g.met.wakes.WithLabelValues(ep.Namespace, ep.Name, dep.Name).Inc()
			if err := g.opts.Waker.Wake(r.Context(), ep.Namespace, ep.Name, dep.Name); err != nil {
				g.log.Error("waking a deployment from zero failed", "namespace", ep.Namespace, "endpoint", ep.Name, "deployment", dep.Name, "err", err)
				w.Header().Set("Retry-After", "10")
				writeError(w, http.StatusServiceUnavailable, "wake_failed", fmt.Sprintf("deployment %q has no instances and scaling it up failed: %v", dep.Name, err))
				return nil, false
			}
		}
		select {
		case <-changed:
		case <-timer.C:
			w.Header().Set("Retry-After", "30")
			writeError(w, http.StatusServiceUnavailable, "no_ready_instance",
				fmt.Sprintf("deployment %q has no ready instance yet (waited %v); its pods are starting, retry later", dep.Name, g.opts.WakeTimeout))
			return nil, false
		case <-r.Context().Done():
			return nil, false
		}
	}
}

// forward sends the request to the least loaded pod, trying another one
// when a pod fails before answering (it cannot connect, the connection
// breaks, or it is draining), and streams the answer back.
func (g *Gateway) forward(w *recorder, r *http.Request, ep *endpointEntry, dep *Deployment, path string, body []byte) {
	timeout := dep.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	key := ep.forwardKey()
	var tried []string
	var lastErr error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		pod := g.leastLoaded(dep.Pods, tried)
		if pod == "" {
			break
		}
		tried = append(tried, pod)
		if attempt > 0 {
			g.met.retries.WithLabelValues(ep.Namespace, ep.Name, dep.Name).Inc()
		}
		inFlight := g.enterPod(pod)
		// Only a request the pod never received is sent again: one it had
		// whole (and may have run, or died of) is not replayed on others.
		var wrote atomic.Bool
		traced := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			WroteRequest: func(i httptrace.WroteRequestInfo) { wrote.Store(i.Err == nil) },
		})
		resp, err := g.transport.RoundTrip(upstreamRequest(traced, r, pod, path, body, key))
		if err != nil {
			inFlight.Add(-1)
			if ctx.Err() != nil {
				g.timedOut(w, r, dep, timeout)
				return
			}
			lastErr = err
			if wrote.Load() {
				break
			}
			continue
		}
		if resp.StatusCode == http.StatusServiceUnavailable && attempt+1 < maxAttempts {
			// Draining (shutting down): it did not take the request, so
			// another pod may. When the deployment has no other yet (its
			// only pod is being replaced), the request waits for the
			// replacement, as requests wait for starting pods.
			inFlight.Add(-1)
			next, ok := g.anotherPod(ctx, ep, dep, tried)
			if ok || ctx.Err() != nil {
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
				_ = resp.Body.Close()
				if !ok {
					g.timedOut(w, r, dep, timeout)
					return
				}
				lastErr = fmt.Errorf("pod %s answered 503", pod)
				dep = next
				continue
			}
			inFlight = g.enterPod(pod) // its 503 is the answer, passed on below
		}
		// Past this point nothing is retried: the answer has begun (a
		// deadline during a stream can only cut it short).
		g.respond(w, resp, dep)
		_ = resp.Body.Close()
		inFlight.Add(-1)
		return
	}
	g.log.Warn("no pod answered", "namespace", ep.Namespace, "endpoint", ep.Name, "deployment", dep.Name, "pods", tried, "err", lastErr)
	writeError(w, http.StatusBadGateway, "instance_unreachable",
		fmt.Sprintf("no instance of deployment %q answered (tried %d): %v", dep.Name, len(tried), lastErr))
}

func (g *Gateway) timedOut(w *recorder, r *http.Request, dep *Deployment, timeout time.Duration) {
	if r.Context().Err() != nil {
		return // the client went away: nobody to answer
	}
	writeError(w, http.StatusRequestTimeout, "request_timeout",
		fmt.Sprintf("the request did not finish within the request timeout of deployment %q (requestTimeoutMs: %d)", dep.Name, timeout.Milliseconds()))
}

// hopHeaders are connection-level headers a proxy must not pass on.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// upstreamRequest is r as sent to a pod: its path, its body, its headers
// but hop-by-hop ones, and the key the pods know.
func upstreamRequest(ctx context.Context, r *http.Request, pod, path string, body []byte, key string) *http.Request {
	u := *r.URL
	u.Scheme, u.Host, u.Path, u.RawPath = "http", pod, path, ""
	out := (&http.Request{Method: r.Method, URL: &u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Host: pod}).WithContext(ctx)
	out.Header = r.Header.Clone()
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	out.Header.Del(HeaderDeployment)
	if key != "" {
		out.Header.Set("Authorization", "Bearer "+key)
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := r.Header.Get("X-Forwarded-For"); prior != "" {
			host = prior + ", " + host
		}
		out.Header.Set("X-Forwarded-For", host)
	}
	out.ContentLength = int64(len(body))
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	if len(body) == 0 {
		out.Body = http.NoBody
	}
	return out
}

// respond copies a pod's answer to the client, flushing each piece of a
// stream as it comes. A model's server error (5xx but 503) becomes Azure
// ML's 424 with the model's status in a header.
func (g *Gateway) respond(w *recorder, resp *http.Response, dep *Deployment) {
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	h.Set(HeaderDeployment, dep.Name)
	status := resp.StatusCode
	// A 503 is a pod that is not serving (draining), not the model
	// failing: it passes through, as the client should retry.
	if status >= 500 && status != http.StatusServiceUnavailable {
		h.Set(HeaderModelErrorStatus, strconv.Itoa(status))
		h.Set(HeaderModelErrorReason, "model_error")
		status = http.StatusFailedDependency
	}
	w.WriteHeader(status)
	stream := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	for {
		n, err := resp.Body.Read(*buf)
		if n > 0 {
			if _, werr := w.Write((*buf)[:n]); werr != nil {
				return
			}
			if stream {
				w.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// mirror sends a copy of a request to a mirror deployment in the
// background and drops its answer. Copies never wait: none is sent when
// the deployment has no ready pod or too many copies are in flight.
func (g *Gateway) mirror(ep *endpointEntry, name string, r *http.Request, path string, body []byte) {
	dep := ep.deployments[name]
	if dep == nil || len(dep.Pods) == 0 {
		g.met.mirrored.WithLabelValues(ep.Namespace, ep.Name, name, "dropped").Inc()
		return
	}
	select {
	case g.mirrors <- struct{}{}:
	default:
		g.met.mirrored.WithLabelValues(ep.Namespace, ep.Name, name, "dropped").Inc()
		return
	}
	timeout := dep.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	// Detached from the client's request, which may end first.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), timeout)
	req := upstreamRequest(ctx, r, g.leastLoaded(dep.Pods, nil), path, body, ep.forwardKey())
	go func() {
		defer func() { <-g.mirrors }()
		defer cancel()
		result := "sent"
		resp, err := g.transport.RoundTrip(req)
		if err != nil {
			result = "failed"
		} else {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode >= 400 {
				result = "failed"
			}
		}
		g.met.mirrored.WithLabelValues(ep.Namespace, ep.Name, name, result).Inc()
		// The copy may end after the request, and after a deletion.
		g.forgetIfGone(requestLabels{ep.Namespace, ep.Name, name})
	}()
}

// WakerFunc is a function as a Waker.
type WakerFunc func(ctx context.Context, namespace, endpoint, deployment string) error

// Wake calls f.
func (f WakerFunc) Wake(ctx context.Context, namespace, endpoint, deployment string) error {
	return f(ctx, namespace, endpoint, deployment)
}
