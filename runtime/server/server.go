package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/leo-operator/leo/runtime/chat"
	"github.com/leo-operator/leo/runtime/engine"
	"github.com/leo-operator/leo/runtime/sample"
	"github.com/leo-operator/leo/runtime/tokenizer"
)

// Defaults of Options.
const (
	DefaultRequestTimeout = 90 * time.Second // Azure ML's default requestTimeoutMs
	DefaultMaxBodyBytes   = 1 << 20
	DefaultWriteTimeout   = 30 * time.Second
)

// keepAliveInterval is how long a started stream may go without an
// event before it gets an SSE comment, so that proxies with idle
// timeouts do not cut it.
const keepAliveInterval = 15 * time.Second

// Options configure a Server.
type Options struct {
	// ModelName is the model's id in /v1/models and the "model" of
	// responses; a request naming another model gets a 404. Required.
	ModelName string
	// Keys are the API keys a request may present as
	// "Authorization: Bearer <key>"; empty means no authentication. The
	// health probes never need one.
	Keys []string
	// RequestTimeout bounds a generation request, queueing included
	// (Azure ML's requestTimeoutMs): past it the answer is a 408, or an
	// error event on a stream. Default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// MaxBodyBytes bounds request bodies. Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// WriteTimeout bounds each write of a response (each event of a
	// stream), not the whole response: a client that stops reading fails
	// the write, which frees the handler and the request's sequences.
	// Default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// DefaultMaxNewTokens is the length limit of a request that sets none
	// (/score and chat completions; /v1/completions defaults to OpenAI's
	// 16). Default sample.DefaultMaxNewTokens.
	DefaultMaxNewTokens int
	// Chat turns conversations into prompts. The zero Template is
	// chat.Llama2().
	Chat chat.Template
	// Registry gets the server's metrics and is what /metrics serves.
	// Default: a new registry with the Go and process collectors.
	Registry *prometheus.Registry
	// Log gets a line per request. Default slog.Default().
	Log *slog.Logger
}

// Server answers the endpoint's HTTP requests. Its methods are safe for
// concurrent use.
type Server struct {
	e          *engine.Engine
	tok        *tokenizer.Tokenizer
	model      string
	chat       chat.Template
	keys       atomic.Pointer[keyring]
	timeout    time.Duration
	writeTime  time.Duration // Options.WriteTimeout
	keepAlive  time.Duration // keepAliveInterval; tests shorten it
	maxBody    int64
	defaultMax int
	log        *slog.Logger
	met        *metrics
	created    int64 // Unix seconds, for /v1/models

	ready, draining atomic.Bool

	// pending holds a token for each generation request past
	// authentication, taken before its body is read: the engine's
	// queue limit applies only at Submit, after the body is read,
	// decoded and tokenized, so without it any number of requests could
	// hold a connection, a goroutine and a body each.
	pending chan struct{}

	routes  map[string]route
	handler http.Handler
}

// route is one path's handlers by method.
type route struct {
	methods map[string]http.HandlerFunc
	open    bool // a health probe: no API key needed
	gen     bool // runs generation: refused while draining, bounded by pending
}

// New makes a server for the engine e, whose model's tokenizer is tok.
// It starts ready.
func New(e *engine.Engine, tok *tokenizer.Tokenizer, o Options) (*Server, error) {
	if e == nil || tok == nil {
		return nil, errors.New("server: an engine and a tokenizer are required")
	}
	if o.ModelName == "" {
		return nil, errors.New("server: a model name is required (it is the model's id in /v1/models)")
	}
	if o.RequestTimeout < 0 || o.WriteTimeout < 0 || o.MaxBodyBytes < 0 || o.DefaultMaxNewTokens < 0 {
		return nil, fmt.Errorf("server: request timeout (%v), write timeout (%v), max body bytes (%d) and default max new tokens (%d) must not be negative",
			o.RequestTimeout, o.WriteTimeout, o.MaxBodyBytes, o.DefaultMaxNewTokens)
	}
	// Keys are trimmed, as the key a request presents is: a key with
	// surrounding spaces could never match otherwise.
	keys := make([]string, len(o.Keys))
	for i, k := range o.Keys {
		keys[i] = strings.TrimSpace(k)
		if keys[i] == "" {
			return nil, fmt.Errorf("server: API key %d is empty", i)
		}
	}
	cfg := e.Config()
	s := &Server{
		e: e, tok: tok, model: o.ModelName, chat: o.Chat,
		timeout: o.RequestTimeout, writeTime: o.WriteTimeout, keepAlive: keepAliveInterval,
		maxBody: o.MaxBodyBytes, defaultMax: o.DefaultMaxNewTokens,
		log: o.Log, created: time.Now().Unix(),
		// Room for every sequence the engine runs or queues, and as many
		// again being read, decoded or answered.
		pending: make(chan struct{}, 2*cfg.MaxConcurrent+cfg.MaxQueued),
	}
	ring := newKeyring(keys)
	s.keys.Store(&ring)
	if s.timeout == 0 {
		s.timeout = DefaultRequestTimeout
	}
	if s.writeTime == 0 {
		s.writeTime = DefaultWriteTimeout
	}
	if s.maxBody == 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if s.defaultMax == 0 {
		s.defaultMax = sample.DefaultMaxNewTokens
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	reg := o.Registry
	if reg == nil {
		reg = newRegistry()
	}
	met, err := newMetrics(reg, e)
	if err != nil {
		return nil, err
	}
	s.met = met
	s.ready.Store(true)

	get := func(h http.HandlerFunc) map[string]http.HandlerFunc {
		return map[string]http.HandlerFunc{http.MethodGet: h}
	}
	post := func(h http.HandlerFunc) map[string]http.HandlerFunc {
		return map[string]http.HandlerFunc{http.MethodPost: h}
	}
	text := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { writeText(w, http.StatusOK, body) }
	}
	metricsHandler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError)})
	s.routes = map[string]route{
		"/":        {methods: get(text("healthy")), open: true}, // Azure ML's liveness probe
		"/healthz": {methods: get(text("ok")), open: true},
		"/readyz":  {methods: get(s.handleReady), open: true},
		// Open like the probes: the autoscaler and Prometheus read every
		// pod's metrics without each endpoint's keys (counts, no content;
		// the pods are reached by clients through the gateway).
		"/metrics":             {methods: get(metricsHandler.ServeHTTP), open: true},
		"/score":               {methods: post(s.handleScore), gen: true},
		"/v1/models":           {methods: get(s.handleModels)},
		modelRoute:             {methods: get(s.handleModel)},
		"/v1/completions":      {methods: post(s.handleCompletions), gen: true},
		"/v1/chat/completions": {methods: post(s.handleChat), gen: true},
	}
	s.handler = http.HandlerFunc(s.serveHTTP)
	return s, nil
}

// modelRoute is the label and routes key of GET /v1/models/{id}, the one
// route that is not an exact path.
const modelRoute = "/v1/models/{id}"

// route finds the route of path and its label in metrics; ok false for
// an unknown path.
func (s *Server) route(path string) (rt route, label string, ok bool) {
	if rt, ok := s.routes[path]; ok {
		return rt, path, true
	}
	if strings.HasPrefix(path, "/v1/models/") {
		return s.routes[modelRoute], modelRoute, true
	}
	return route{}, "other", false // unknown paths would make unbounded label values
}

// Handler returns the server's HTTP handler. Run it under the
// http.Server of NewHTTPServer, whose timeouts it relies on.
func (s *Server) Handler() http.Handler { return s.handler }

// Timeouts of NewHTTPServer's http.Server.
const (
	readHeaderTimeout = 10 * time.Second
	readMargin        = 10 * time.Second // beyond RequestTimeout, for the body
	idleTimeout       = 120 * time.Second
)

// NewHTTPServer returns the http.Server to serve h, a Server's Handler,
// with the timeouts that keep slow or stalled clients from holding
// connections and goroutines (and from holding up a graceful Shutdown);
// o is the Server's Options:
//
//   - ReadHeaderTimeout 10 s, and ReadTimeout o.RequestTimeout (default
//     DefaultRequestTimeout) plus 10 s for headers and body together: a
//     body that arrives too slowly ends with a 408. net/http lifts the
//     read deadline once the body has been read, so it does not cut long
//     answers.
//   - IdleTimeout 120 s: keep-alive connections are closed at last.
//   - WriteTimeout 0: it would bound the whole response and cut long
//     streams. The Server bounds each write instead (Options.WriteTimeout).
func NewHTTPServer(h http.Handler, o Options) *http.Server {
	timeout := o.RequestTimeout
	if timeout <= 0 {
		timeout = DefaultRequestTimeout
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       timeout + readMargin,
		IdleTimeout:       idleTimeout,
	}
}

// SetKeys replaces the API keys, as when an endpoint's key is rotated:
// requests from then on need one of the new keys. An empty list turns
// authentication off, so it is refused here: a rotation never does that.
func (s *Server) SetKeys(keys []string) error {
	trimmed := make([]string, len(keys))
	for i, k := range keys {
		trimmed[i] = strings.TrimSpace(k)
		if trimmed[i] == "" {
			return fmt.Errorf("server: API key %d is empty", i)
		}
	}
	if len(trimmed) == 0 {
		return errors.New("server: SetKeys needs at least one key (authentication cannot be turned off while serving)")
	}
	ring := newKeyring(trimmed)
	s.keys.Store(&ring)
	return nil
}

// SetReady sets what /readyz answers: 200 when ready (the model is
// loaded and the server not draining), 503 otherwise.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Drain starts a graceful shutdown: /readyz answers 503 so that the pod
// leaves the Service's endpoints, and new generation requests get a 503
// "server is shutting down", while those in flight finish. It does not
// close the engine; the caller does, after http.Server.Shutdown.
func (s *Server) Drain() {
	s.draining.Store(true)
	s.ready.Store(false)
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if !s.ready.Load() || s.draining.Load() {
		writeText(w, http.StatusServiceUnavailable, "not ready")
		return
	}
	writeText(w, http.StatusOK, "ready")
}

func writeText(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body) // the client may be gone; nothing to do then
}

// reqInfo is what a handler tells the request's log line and metrics.
type reqInfo struct {
	promptTokens, completionTokens int
	err                            *apiError
}

type infoKey struct{}

// info is the request's reqInfo, which serveHTTP puts in its context.
// Handlers run only under serveHTTP: a missing one is a bug, which would
// otherwise silently lose the request's counts.
func info(r *http.Request) *reqInfo {
	return r.Context().Value(infoKey{}).(*reqInfo)
}

// noteError records why a request failed, for its log line and metrics.
func noteError(r *http.Request, e *apiError) { info(r).err = e }

// serveHTTP wraps every request: a request id, metrics, a log line,
// recovery from panics, authentication, routing, and the bound on
// pending generation requests.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rt, label, known := s.route(r.URL.Path)
	id := requestID(r)
	w.Header().Set("X-Request-Id", id)
	if rt.gen {
		s.met.inFlight.Inc()
		defer s.met.inFlight.Dec()
	}
	ri := &reqInfo{}
	r = r.WithContext(context.WithValue(r.Context(), infoKey{}, ri))
	rec := &recorder{ResponseWriter: w, rc: http.NewResponseController(w), writeTimeout: s.writeTime}
	defer s.finish(rec, r, ri, label, id, start)
	defer s.recoverPanic(rec, r)

	if !rt.open {
		if err := s.keys.Load().check(r); err != nil {
			writeError(rec, r, err)
			return
		}
	}
	if !known {
		writeError(rec, r, &apiError{Status: http.StatusNotFound, Type: typeInvalid,
			Message: fmt.Sprintf("no endpoint at %s; see /score, /v1/completions, /v1/chat/completions, /v1/models", r.URL.Path)})
		return
	}
	h := rt.methods[r.Method]
	if h == nil && r.Method == http.MethodHead {
		h = rt.methods[http.MethodGet] // net/http drops the body
	}
	if h == nil {
		allow := allowed(rt)
		rec.Header().Set("Allow", allow)
		writeError(rec, r, &apiError{Status: http.StatusMethodNotAllowed, Type: typeInvalid,
			Message: fmt.Sprintf("%s does not accept %s; use %s", r.URL.Path, r.Method, allow)})
		return
	}
	if rt.gen && s.draining.Load() {
		writeError(rec, r, errDraining)
		return
	}
	if rt.gen {
		select {
		case s.pending <- struct{}{}:
			defer func() { <-s.pending }()
		default: // answered at once, before the body is read
			s.met.rejected.Add(1)
			writeError(rec, r, errQueueFull)
			return
		}
	}
	h(rec, r)
}

// maxRequestID bounds a client's request id that is logged and echoed.
const maxRequestID = 128

// requestID is the request's id for its log line and the X-Request-Id
// response header: the client's X-Request-Id, or Azure ML's
// X-Ms-Client-Request-Id, so that the client's logs and the server's
// match; a new random one when there is none, or it is longer than
// maxRequestID or holds bytes other than printable ASCII.
func requestID(r *http.Request) string {
	for _, h := range []string{"X-Request-Id", "X-Ms-Client-Request-Id"} {
		if v := r.Header.Get(h); v != "" && len(v) <= maxRequestID && printableASCII(v) {
			return v
		}
	}
	return rand.Text()
}

func printableASCII(s string) bool {
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

func allowed(rt route) string {
	var ms []string
	for m := range rt.methods {
		ms = append(ms, m)
		if m == http.MethodGet {
			ms = append(ms, http.MethodHead)
		}
	}
	sort.Strings(ms)
	return strings.Join(ms, ", ")
}

// recoverPanic turns a handler's panic into a 500 (or, once the answer has
// started, a cut connection) and a logged stack, so that no request
// takes the process down.
func (s *Server) recoverPanic(w *recorder, r *http.Request) {
	p := recover()
	if p == nil {
		return
	}
	if err, ok := p.(error); ok && errors.Is(err, http.ErrAbortHandler) { // net/http's way to cut a response; it logs nothing
		panic(p)
	}
	s.log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	e := &apiError{Status: http.StatusInternalServerError, Type: typeServer, Message: "internal error; the server logged it"}
	if w.wrote {
		noteError(r, e)
		panic(http.ErrAbortHandler)
	}
	writeError(w, r, e)
}

// finish logs the request and counts it. The code is the error's when
// there was one, even when it came after a stream's 200 header (a
// stream that timed out counts as a 408), and 499 when the client went
// away.
func (s *Server) finish(w *recorder, r *http.Request, ri *reqInfo, label, id string, start time.Time) {
	took := time.Since(start)
	code := w.status
	if !w.wrote {
		code = http.StatusOK
	}
	if ri.err != nil {
		code = ri.err.Status
	}
	s.met.observeRequest(label, code, took)
	attrs := []any{"method", r.Method, "path", r.URL.Path, "status", code, "duration", took, "request_id", id}
	if ri.promptTokens > 0 || ri.completionTokens > 0 {
		attrs = append(attrs, "prompt_tokens", ri.promptTokens, "completion_tokens", ri.completionTokens)
	}
	level := slog.LevelInfo
	if ri.err != nil {
		attrs = append(attrs, "error", ri.err.Message)
		if code >= 500 {
			level = slog.LevelError
		}
	}
	s.log.Log(r.Context(), level, "request", attrs...)
}

// recorder notes the status a handler sent, and gives each write to the
// connection writeTimeout to complete.
type recorder struct {
	http.ResponseWriter
	rc           *http.ResponseController // the ResponseWriter's
	writeTimeout time.Duration
	status       int
	wrote        bool
}

// extend sets the connection's write deadline writeTimeout from now,
// before each write or flush of every response (sse.data's events and
// writeJSON's bodies included). A client that stops reading then fails
// the write, so its handler returns and its sequences end, instead of
// blocking in Write for as long as the client keeps the connection open.
// (http.Server.WriteTimeout would bound the whole response and cut long
// streams.)
func (w *recorder) extend() {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.writeTimeout))
}

func (w *recorder) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	w.extend()
	return w.ResponseWriter.Write(b)
}

// FlushError is what http.ResponseController.Flush calls: its error
// tells that the client is gone. Flush is http.Flusher's, for code that
// asserts it; Unwrap serves http.ResponseController's other methods.
func (w *recorder) FlushError() error {
	w.extend()
	return w.rc.Flush()
}

func (w *recorder) Flush() { _ = w.FlushError() }

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// readBody reads a request body of at most maxBody bytes.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	// MaxBytesReader tells net/http's own ResponseWriter (through an
	// unexported method) that the body was too large, so that it closes
	// the connection rather than read the rest; the recorder cannot
	// pass that on.
	if rec, ok := w.(*recorder); ok {
		w = rec.ResponseWriter
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &tooBig):
			return nil, invalid("", "request body is larger than %d bytes", s.maxBody)
		case errors.As(err, &ne) && ne.Timeout(): // the http.Server's ReadTimeout
			return nil, &apiError{Status: http.StatusRequestTimeout, Type: typeTimeout,
				Message: "the request body did not arrive in time"}
		case r.Context().Err() != nil:
			return nil, errClientGone
		}
		return nil, invalid("", "reading the request body: %v", err)
	}
	return body, nil
}

// setIgnored names the request's ignored keys in X-Leo-Ignored-Fields.
func setIgnored(w http.ResponseWriter, paths []string) {
	if len(paths) > 0 {
		w.Header().Set("X-Leo-Ignored-Fields", ignoredHeader(paths))
	}
}
