package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/leo-operator/leo/runtime/chat"
	"github.com/leo-operator/leo/runtime/engine"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/sample"
	"github.com/leo-operator/leo/runtime/server"
)

// serveConfig is everything `leo-runtime serve` is told, by flags or by
// environment variables (an OnlineEndpoint's pod sets the latter).
type serveConfig struct {
	model, addr, modelName, keysFile, chatTemplate string
	kvType                                         string
	threads, ctxSize, batchTokens, maxNewTokens    int
	maxConcurrent, maxQueued, timeoutMs            int
	maxQueueWaitMs, kvCacheTokens                  int
	kvCacheMiB, maxBodyBytes                       int64
	shutdownTimeout, drainDelay, keysReload        time.Duration
}

func serveFlags(fs *flag.FlagSet) *serveConfig {
	c := &serveConfig{}
	fs.StringVar(&c.model, "model", "", "GGUF model file (required)")
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "address to listen on; 0.0.0.0:8080 in a pod")
	fs.StringVar(&c.modelName, "model-name", "", "the model's id in /v1/models and responses (default: the file's general.name)")
	fs.IntVar(&c.threads, "threads", runtime.GOMAXPROCS(0), "CPU threads (default: GOMAXPROCS, which follows the container's CPU limit)")
	fs.IntVar(&c.ctxSize, "ctx-size", 0, "positions per sequence, prompt and generated tokens together (default: the model's context length, at most 4096)")
	fs.IntVar(&c.maxConcurrent, "max-concurrent-requests", 16, "sequences generated at once, each holding a KV cache slot (Azure ML's maxConcurrentRequestsPerInstance)")
	fs.IntVar(&c.maxQueued, "max-queued-requests", 0, "sequences that may wait for a slot; beyond that requests get 429 (0: 4 × max-concurrent-requests; -1: none)")
	fs.IntVar(&c.maxQueueWaitMs, "max-queue-wait-ms", 0, "a request waiting this long for a slot gets 429 (Azure ML's maxQueueWaitMs; 0: it waits up to its timeout)")
	fs.IntVar(&c.timeoutMs, "request-timeout-ms", int(server.DefaultRequestTimeout/time.Millisecond), "a request not finished by then gets 408, waiting time included (Azure ML's requestTimeoutMs)")
	fs.Int64Var(&c.kvCacheMiB, "kv-cache-mib", 0, "cap on the KV cache's memory; lowers max-concurrent-requests to the slots that fit (0: no cap)")
	fs.IntVar(&c.kvCacheTokens, "kv-cache-tokens", 0, "cap on the KV cache's positions, all sequences together; lowers max-concurrent-requests to the whole contexts that fit, and the default context to it (0: no cap)")
	fs.StringVar(&c.kvType, "kv-cache-type", "f16", "KV cache element type: f16 (as llama.cpp: half the memory and faster with many streams) or f32")
	fs.IntVar(&c.batchTokens, "batch-tokens", 256, "most tokens in one forward pass: every running sequence's next token, then prompt chunks")
	fs.IntVar(&c.maxNewTokens, "default-max-new-tokens", sample.DefaultMaxNewTokens, "max_new_tokens of requests that do not say")
	fs.Int64Var(&c.maxBodyBytes, "max-body-bytes", server.DefaultMaxBodyBytes, "largest request body accepted")
	fs.StringVar(&c.keysFile, "keys-file", "", "file of API keys, one per line, or a directory of one key per file (a mounted Secret); then every path but /, /healthz and /readyz needs 'Authorization: Bearer <key>'. Keys may also come from LEO_API_KEYS (comma-separated)")
	fs.DurationVar(&c.keysReload, "keys-reload-interval", 10*time.Second, "how often the keys file is read again, so that a rotated key takes effect without a restart (0: never)")
	fs.StringVar(&c.chatTemplate, "chat-template", "", "chat format: llama2, mistral, chatml, llama3 or zephyr (default: from the model's tokenizer.chat_template, else llama2)")
	fs.DurationVar(&c.drainDelay, "drain-delay", 5*time.Second, "on SIGTERM, how long to go on answering (/readyz 503, new requests 503) before closing the listener, so that Kubernetes takes the pod out of its Service first")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 20*time.Second, "then, how long in-flight requests may take to finish; keep drain-delay + shutdown-timeout below the pod's terminationGracePeriodSeconds (30s by default)")
	return c
}

// envName is the environment variable that sets a flag: --max-body-bytes
// is LEO_MAX_BODY_BYTES.
func envName(flagName string) string {
	return "LEO_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// flagsFromEnv sets each flag from its environment variable, if set; the
// command line, parsed afterwards, wins. It also names the variable in
// each flag's help.
func flagsFromEnv(fs *flag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		f.Usage += " [$" + name + "]"
		if v, ok := os.LookupEnv(name); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("$%s=%q: %w", name, v, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return usageError{err.Error()}
	}
	return nil
}

// readKeys reads the API keys: the comma-separated LEO_API_KEYS, and the
// keys file: one key per line (blank lines and lines starting with #
// skipped) or, when it is a directory (a mounted Kubernetes Secret), one key
// per file, hidden files (the Secret volume's ..data links) skipped.
func readKeys(file string) ([]string, error) {
	var keys []string
	for _, k := range strings.Split(os.Getenv("LEO_API_KEYS"), ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	if file == "" {
		return keys, nil
	}
	fromFile, err := readKeysFile(file)
	if err != nil {
		return nil, err
	}
	keys = append(keys, fromFile...)
	if len(keys) == 0 {
		return nil, fmt.Errorf("keys file %s holds no key; with no keys the server would accept every request, so remove --keys-file to mean that", file)
	}
	return keys, nil
}

func readKeysFile(file string) ([]string, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("keys file: %w", err)
	}
	if !fi.IsDir() {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("keys file: %w", err)
		}
		var keys []string
		for _, line := range strings.Split(string(b), "\n") {
			if k := strings.TrimSpace(line); k != "" && !strings.HasPrefix(k, "#") {
				keys = append(keys, k)
			}
		}
		return keys, nil
	}
	entries, err := os.ReadDir(file)
	if err != nil {
		return nil, fmt.Errorf("keys directory: %w", err)
	}
	var keys []string
	for _, e := range entries { // sorted by name
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(file, e.Name())
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			continue // a dangling link or a folder is not a key
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("keys directory: %w", err)
		}
		if k := strings.TrimSpace(string(b)); k != "" {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// reloadKeys re-reads the keys every interval and gives the server the new
// ones when they change (a rotated key of a mounted Secret), until ctx ends.
// A read that fails or finds no key keeps the keys in force.
func reloadKeys(ctx context.Context, file string, every time.Duration, current []string, srv *server.Server, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		keys, err := readKeys(file)
		if err != nil {
			log.Warn("keys not reloaded; the keys in force stay", "file", file, "err", err)
			continue
		}
		if slices.Equal(keys, current) {
			continue
		}
		if err := srv.SetKeys(keys); err != nil {
			log.Warn("keys not reloaded; the keys in force stay", "file", file, "err", err)
			continue
		}
		current = keys
		log.Info("keys reloaded", "file", file, "keys", len(keys))
	}
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	c := serveFlags(fs)
	if err := flagsFromEnv(fs); err != nil {
		return err
	}
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := required(map[string]string{"model": c.model}); err != nil {
		return err
	}
	switch {
	case c.timeoutMs < 1 || c.maxBodyBytes < 1 || c.maxNewTokens < 1 || c.maxConcurrent < 1 || c.batchTokens < 1:
		return usagef("--request-timeout-ms, --max-body-bytes, --default-max-new-tokens, --max-concurrent-requests and --batch-tokens must be positive")
	case c.shutdownTimeout < 0 || c.drainDelay < 0 || c.ctxSize < 0 || c.maxQueueWaitMs < 0 || c.kvCacheTokens < 0 || c.maxQueued < -1:
		return usagef("--shutdown-timeout, --drain-delay, --ctx-size, --max-queue-wait-ms and --kv-cache-tokens must not be negative, --max-queued-requests not below -1")
	case c.kvCacheMiB < 0 || c.kvCacheMiB > 1<<30:
		return usagef("--kv-cache-mib must be in [0, %d]", 1<<30)
	}
	kvType, err := parseKVType(c.kvType)
	if err != nil {
		return err
	}
	keys, err := readKeys(c.keysFile)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	// Listen first: while the model loads, the liveness paths answer and
	// /readyz says 503, so that a kubelet does not restart a pod that is
	// only slow to load.
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	var handler atomic.Pointer[http.Handler]
	loading := loadingHandler()
	handler.Store(&loading)
	opts := server.Options{
		Keys: keys, RequestTimeout: time.Duration(c.timeoutMs) * time.Millisecond,
		MaxBodyBytes: c.maxBodyBytes, DefaultMaxNewTokens: c.maxNewTokens, Log: log,
	}
	// Read, idle and per-write deadlines, so that a slow client cannot
	// hold a handler past the request timeout.
	hs := server.NewHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*handler.Load()).ServeHTTP(w, r) }), opts)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	log.Info("listening", "url", "http://"+ln.Addr().String())

	start := time.Now()
	// On the failures below, Close's error is dropped for the one that
	// says why serve stops.
	l, err := load(c.model, c.threads, stderr)
	if err != nil {
		_ = hs.Close()
		return err
	}
	defer l.Close()
	if c.ctxSize == 0 {
		c.ctxSize = min(l.Model.Config.ContextLength, 4096)
		if c.kvCacheTokens > 0 {
			// A cache smaller than the default context is one sequence's.
			c.ctxSize = min(c.ctxSize, c.kvCacheTokens)
		}
	}
	tmpl, err := chatTemplate(c.chatTemplate, l.ChatTemplate, log)
	if err != nil {
		_ = hs.Close()
		return err
	}
	e, err := engine.New(l.Model, l.Tokenizer, engine.Config{
		MaxConcurrent: c.maxConcurrent, MaxQueued: c.maxQueued, ContextSize: c.ctxSize,
		BatchTokens: c.batchTokens, KVCacheBytes: c.kvCacheMiB << 20, KVCacheTokens: c.kvCacheTokens, KVType: kvType,
		MaxQueueWait: time.Duration(c.maxQueueWaitMs) * time.Millisecond,
	})
	if err != nil {
		_ = hs.Close()
		return usageError{err.Error()}
	}
	name := c.modelName
	if name == "" {
		name = l.Name
	}
	opts.ModelName, opts.Chat = name, tmpl
	srv, err := server.New(e, l.Tokenizer, opts)
	if err != nil {
		_ = hs.Close()
		return err
	}
	engineCtx, stopEngine := context.WithCancel(context.Background())
	go e.Run(engineCtx)
	// The engine must be stopped before the model's memory is unmapped
	// (the deferred l.Close).
	defer func() {
		stopEngine()
		<-e.Done()
	}()
	if c.keysFile != "" && c.keysReload > 0 {
		go reloadKeys(engineCtx, c.keysFile, c.keysReload, keys, srv, log)
	}
	ready := srv.Handler()
	handler.Store(&ready)
	ec := e.Config()
	log.Info("model loaded", "model", c.model, "name", name, "seconds", time.Since(start).Seconds(),
		"threads", c.threads, "context", ec.ContextSize, "slots", ec.MaxConcurrent, "queue", ec.MaxQueued,
		"kv_cache", kvType.String(), "kv_cache_mib", engine.KVBytesPerPosition(l.Model.Config, kvType)*int64(ec.ContextSize*ec.MaxConcurrent)>>20,
		"chat_template", tmpl.Name(), "auth", len(keys) > 0)

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	// Graceful shutdown: fail readiness and refuse new work while
	// Kubernetes takes the pod out of the Service, then close the
	// listener and let the requests in flight finish until the deadline.
	log.Info("draining", "delay", c.drainDelay, "deadline", c.shutdownTimeout)
	srv.Drain()
	time.Sleep(c.drainDelay)
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	shutdownErr := hs.Shutdown(sctx)
	e.Close()
	select {
	case <-e.Done():
	case <-sctx.Done():
		// Past the deadline: end what is left with an error, give the
		// handlers a moment to tell their clients, then close.
		stopEngine()
		<-e.Done()
		grace, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(grace) // past the deadline already; Close ends what is left
	}
	_ = hs.Close() // nothing is left to report: shutdownErr says what was cut off
	if shutdownErr != nil {
		log.Warn("requests still running at the shutdown deadline were cut off", "error", shutdownErr)
	}
	log.Info("stopped")
	return nil
}

// loadingHandler answers while the model loads: alive, not ready.
func loadingHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			_, _ = io.WriteString(w, "healthy") // a probe that hung up needs no answer
		case "/healthz":
			_, _ = io.WriteString(w, "ok")
		default:
			w.Header().Set("Retry-After", "5")
			http.Error(w, "the model is loading", http.StatusServiceUnavailable)
		}
	})
}

func parseKVType(s string) (quant.Type, error) {
	switch strings.ToLower(s) {
	case "f16":
		return quant.F16, nil
	case "f32":
		return quant.F32, nil
	}
	return 0, usagef("--kv-cache-type %q is not f16 or f32", s)
}

// chatTemplate picks the chat format: the flag's, else the model's own
// (recognised by its markers), else Llama 2's.
func chatTemplate(flagValue, fromModel string, log *slog.Logger) (chat.Template, error) {
	if flagValue != "" {
		t, err := chat.Named(flagValue)
		if err != nil {
			return t, usagef("--chat-template: %v", err)
		}
		return t, nil
	}
	t, err := chat.FromGGUF(fromModel)
	if err != nil {
		log.Warn("the model's chat template is not one leo knows; using Llama 2's (set --chat-template to choose)", "error", err)
		return chat.Llama2(), nil
	}
	return t, nil
}
