package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
)

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
	// DefaultMaxNewTokens is the length limit of a request that sets none
	// (/score and chat completions; /v1/completions defaults to OpenAI's
	// 16). Default sample.DefaultMaxNewTokens.
	DefaultMaxNewTokens int
	// Chat turns conversations into prompts. Default chat.Llama2().
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
	keys       keyring
	timeout    time.Duration
	maxBody    int64
	defaultMax int
	log        *slog.Logger
	met        *metrics
	created    int64 // Unix seconds, for /v1/models

	ready, draining atomic.Bool

	routes  map[string]route
	handler http.Handler
}

// route is one path's handlers by method.
type route struct {
	methods map[string]http.HandlerFunc
	open    bool // a health probe: no API key needed
	gen     bool // runs generation: refused while draining
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
	if o.RequestTimeout < 0 || o.MaxBodyBytes < 0 || o.DefaultMaxNewTokens < 0 {
		return nil, fmt.Errorf("server: request timeout (%v), max body bytes (%d) and default max new tokens (%d) must not be negative",
			o.RequestTimeout, o.MaxBodyBytes, o.DefaultMaxNewTokens)
	}
	for i, k := range o.Keys {
		if strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("server: API key %d is empty", i)
		}
	}
	s := &Server{
		e: e, tok: tok, model: o.ModelName, chat: o.Chat, keys: newKeyring(o.Keys),
		timeout: o.RequestTimeout, maxBody: o.MaxBodyBytes, defaultMax: o.DefaultMaxNewTokens,
		log: o.Log, created: time.Now().Unix(),
	}
	if s.chat.Name == "" {
		s.chat = chat.Llama2()
	}
	if s.timeout == 0 {
		s.timeout = DefaultRequestTimeout
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
		"/":                    {methods: get(text("healthy")), open: true}, // Azure ML's liveness probe
		"/healthz":             {methods: get(text("ok")), open: true},
		"/readyz":              {methods: get(s.handleReady), open: true},
		"/metrics":             {methods: get(metricsHandler.ServeHTTP)},
		"/score":               {methods: post(s.handleScore), gen: true},
		"/v1/models":           {methods: get(s.handleModels)},
		"/v1/completions":      {methods: post(s.handleCompletions), gen: true},
		"/v1/chat/completions": {methods: post(s.handleChat), gen: true},
	}
	s.handler = http.HandlerFunc(s.serveHTTP)
	return s, nil
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

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
	io.WriteString(w, body)
}

// reqInfo is what a handler tells the request's log line and metrics.
type reqInfo struct {
	promptTokens, completionTokens int
	err                            *apiError
}

type infoKey struct{}

func info(r *http.Request) *reqInfo {
	if i, ok := r.Context().Value(infoKey{}).(*reqInfo); ok {
		return i
	}
	return &reqInfo{} // a handler called outside serveHTTP (tests)
}

// noteError records why a request failed, for its log line and metrics.
func noteError(r *http.Request, e *apiError) { info(r).err = e }

// serveHTTP wraps every request: metrics, a log line, recovery from
// panics, authentication, routing.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rt, known := s.routes[r.URL.Path]
	label := r.URL.Path
	if !known {
		label = "other" // unknown paths would make unbounded label values
	}
	s.met.inFlight.Inc()
	defer s.met.inFlight.Dec()
	ri := &reqInfo{}
	r = r.WithContext(context.WithValue(r.Context(), infoKey{}, ri))
	rec := &recorder{ResponseWriter: w}
	defer s.finish(rec, r, ri, label, start)
	defer s.recoverPanic(rec, r)

	if !rt.open {
		if err := s.keys.check(r); err != nil {
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
	h(rec, r)
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
	if p == http.ErrAbortHandler { // net/http's way to cut a response; it logs nothing
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
func (s *Server) finish(w *recorder, r *http.Request, ri *reqInfo, label string, start time.Time) {
	took := time.Since(start)
	code := w.status
	if !w.wrote {
		code = http.StatusOK
	}
	if ri.err != nil {
		code = ri.err.Status
	}
	s.met.observeRequest(label, code, took)
	attrs := []any{"method", r.Method, "path", r.URL.Path, "status", code, "duration", took}
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

// recorder notes the status a handler sent.
type recorder struct {
	http.ResponseWriter
	status int
	wrote  bool
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
	return w.ResponseWriter.Write(b)
}

// Flush is http.Flusher's, for code that asserts it; Unwrap serves
// http.ResponseController.
func (w *recorder) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// readBody reads a request body of at most maxBody bytes.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, invalid("", "request body is larger than %d bytes", s.maxBody)
		}
		if r.Context().Err() != nil {
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
