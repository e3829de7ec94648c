package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/leo-operator/leo/runtime/chat"
	"github.com/leo-operator/leo/runtime/engine"
	"github.com/leo-operator/leo/runtime/sample"
	"github.com/leo-operator/leo/runtime/server"
)

// serveConfig is everything `leo-runtime serve` is told, by flags or by
// environment variables (an OnlineEndpoint's pod sets the latter).
type serveConfig struct {
	model, addr, modelName, keysFile, chatTemplate string
	threads, ctxSize, batchTokens, maxNewTokens    int
	maxConcurrent, maxQueued, timeoutMs            int
	kvCacheMiB, maxBodyBytes                       int64
	shutdownTimeout                                time.Duration
}

func serveFlags(fs *flag.FlagSet) *serveConfig {
	c := &serveConfig{}
	fs.StringVar(&c.model, "model", "", "GGUF model file (required)")
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "address to listen on; 0.0.0.0:8080 in a pod")
	fs.StringVar(&c.modelName, "model-name", "", "the model's id in /v1/models and responses (default: the file's general.name)")
	fs.IntVar(&c.threads, "threads", runtime.NumCPU(), "CPU threads")
	fs.IntVar(&c.ctxSize, "ctx-size", 0, "positions per sequence, prompt and generated tokens together (default: the model's context length, at most 4096)")
	fs.IntVar(&c.maxConcurrent, "max-concurrent-requests", 16, "sequences generated at once, each holding a KV cache slot (Azure ML's maxConcurrentRequestsPerInstance)")
	fs.IntVar(&c.maxQueued, "max-queued-requests", 0, "sequences that may wait for a slot; beyond that requests get 429 (default: 4 × max-concurrent-requests)")
	fs.IntVar(&c.timeoutMs, "request-timeout-ms", 90000, "a request not finished by then gets 408, waiting time included (Azure ML's requestTimeoutMs)")
	fs.Int64Var(&c.kvCacheMiB, "kv-cache-mib", 0, "cap on the KV cache's memory; lowers max-concurrent-requests to the slots that fit (0: no cap)")
	fs.IntVar(&c.batchTokens, "batch-tokens", 256, "most tokens in one forward pass: every running sequence's next token, then prompt chunks")
	fs.IntVar(&c.maxNewTokens, "default-max-new-tokens", sample.DefaultMaxNewTokens, "max_new_tokens of requests that do not say")
	fs.Int64Var(&c.maxBodyBytes, "max-body-bytes", 1<<20, "largest request body accepted")
	fs.StringVar(&c.keysFile, "keys-file", "", "file of API keys, one per line; then every path but /, /healthz and /readyz needs 'Authorization: Bearer <key>'. Keys may also come from LEO_API_KEYS (comma-separated)")
	fs.StringVar(&c.chatTemplate, "chat-template", "", "chat format: llama2, chatml, llama3 or zephyr (default: from the model's tokenizer.chat_template, else llama2)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM, how long in-flight requests may take to finish")
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
				errs = append(errs, fmt.Errorf("$%s=%q: %v", name, v, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return usageError{err.Error()}
	}
	return nil
}

// readKeys reads the API keys: one per line of the file (blank lines and
// lines starting with # skipped), and the comma-separated LEO_API_KEYS.
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
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("keys file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k := strings.TrimSpace(sc.Text()); k != "" && !strings.HasPrefix(k, "#") {
			keys = append(keys, k)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("keys file %s: %w", file, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("keys file %s holds no key; with no keys the server would accept every request, so remove --keys-file to mean that", file)
	}
	return keys, nil
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
	if c.timeoutMs < 1 || c.maxBodyBytes < 1 || c.maxNewTokens < 1 || c.shutdownTimeout < 0 {
		return usagef("--request-timeout-ms, --max-body-bytes and --default-max-new-tokens must be positive, --shutdown-timeout not negative")
	}
	keys, err := readKeys(c.keysFile)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	start := time.Now()
	l, err := load(c.model, c.threads)
	if err != nil {
		return err
	}
	defer l.Close()
	if c.ctxSize == 0 {
		c.ctxSize = min(l.Model.Config.ContextLength, 4096)
	}
	tmpl, err := chatTemplate(c.chatTemplate, l.ChatTemplate, log)
	if err != nil {
		return err
	}
	e, err := engine.New(l.Model, l.Tokenizer, engine.Config{
		MaxConcurrent: c.maxConcurrent, MaxQueued: c.maxQueued, ContextSize: c.ctxSize,
		BatchTokens: c.batchTokens, KVCacheBytes: c.kvCacheMiB << 20,
	})
	if err != nil {
		return usageError{err.Error()}
	}
	name := c.modelName
	if name == "" {
		name = l.Name
	}
	srv, err := server.New(e, l.Tokenizer, server.Options{
		ModelName: name, Keys: keys, RequestTimeout: time.Duration(c.timeoutMs) * time.Millisecond,
		MaxBodyBytes: c.maxBodyBytes, DefaultMaxNewTokens: c.maxNewTokens, Chat: tmpl, Log: log,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	ec := e.Config()
	log.Info("model loaded", "model", c.model, "name", name, "seconds", time.Since(start).Seconds(),
		"threads", c.threads, "context", ec.ContextSize, "slots", ec.MaxConcurrent, "queue", ec.MaxQueued,
		"kv_cache_mib", engine.KVBytesPerPosition(l.Model.Config)*int64(ec.ContextSize*ec.MaxConcurrent)>>20,
		"chat_template", tmpl.Name, "auth", len(keys) > 0)
	fmt.Fprintf(stderr, "listening on http://%s\n", ln.Addr())

	engineCtx, stopEngine := context.WithCancel(context.Background())
	defer stopEngine()
	go e.Run(engineCtx)
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	// Graceful shutdown: fail readiness and refuse new work, let the
	// requests in flight finish until the deadline, then stop.
	log.Info("shutting down", "deadline", c.shutdownTimeout)
	srv.Drain()
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	shutdownErr := hs.Shutdown(sctx)
	e.Close()
	select {
	case <-e.Done():
	case <-sctx.Done():
		stopEngine() // ends what is left with an error
		<-e.Done()
	}
	if shutdownErr != nil {
		log.Warn("requests still running at the shutdown deadline were cut off", "error", shutdownErr)
	}
	log.Info("stopped")
	return nil
}

// chatTemplate picks the chat format: the flag's, else the model's own
// (recognised by its markers), else Llama 2's.
func chatTemplate(flagValue, fromModel string, log *slog.Logger) (chat.Template, error) {
	if flagValue != "" {
		t, err := chat.FromGGUF(flagValue)
		if err != nil {
			return t, usagef("--chat-template %q: %v", flagValue, err)
		}
		return t, nil
	}
	t, err := chat.FromGGUF(fromModel)
	if err != nil {
		log.Warn("the model's chat template is not one leo knows; using Llama 2's", "error", err)
		return chat.Llama2(), nil
	}
	return t, nil
}
