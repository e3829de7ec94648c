package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/leo-operator/leo/internal/stats"
	"github.com/leo-operator/leo/runtime/engine"
	"github.com/leo-operator/leo/runtime/server"
)

// runBenchServe measures the server under load: it serves the model on a
// loopback port in this process and drives it over HTTP with streaming
// OpenAI completions, as clients would.
//
//  1. one stream at a time: the single-stream generation rate;
//  2. --streams streams at once: the aggregate rate, and its ratio to 1;
//  3. --clients clients at once, each sending requests back to back for
//     --duration: more than the server runs and queues, so some get the
//     deliberate 429; any other error is a failure. Time to first token
//     is reported as p50/p99.
func runBenchServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench-serve", flag.ContinueOnError)
	modelPath := fs.String("model", "", "GGUF model file")
	threads := fs.Int("threads", 2, "CPU threads")
	streams := fs.Int("streams", 16, "concurrent streams of phase 2; also the server's max concurrent requests")
	queued := fs.Int("queued", 16, "the server's max queued requests")
	clients := fs.Int("clients", 64, "concurrent clients of phase 3")
	maxTokens := fs.Int("max-tokens", 128, "tokens generated per request (ignore_eos: always this many)")
	duration := fs.Duration("duration", 20*time.Second, "length of phase 3")
	reps := fs.Int("reps", 5, "repetitions of phases 1 and 2; medians are reported, and the median of each repetition's ratio")
	jsonOut := fs.Bool("json", false, "print JSON")
	kvType := fs.String("kv-cache-type", "f16", "KV cache element type: f16 (serve's default) or f32")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := required(map[string]string{"model": *modelPath}); err != nil {
		return err
	}
	if *streams < 1 || *clients < 1 || *maxTokens < 1 || *reps < 1 || *queued < 0 {
		return usagef("--streams, --clients, --max-tokens and --reps must be positive")
	}
	kv, err := parseKVType(*kvType)
	if err != nil {
		return err
	}
	l, err := load(*modelPath, *threads, stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	e, err := engine.New(l.Model, l.Tokenizer, engine.Config{
		MaxConcurrent: *streams, MaxQueued: *queued, ContextSize: min(l.Model.Config.ContextLength, 512), KVType: kv,
	})
	if err != nil {
		return err
	}
	srv, err := server.New(e, l.Tokenizer, server.Options{ModelName: "bench", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ectx, stop := context.WithCancel(ctx)
	defer stop()
	go e.Run(ectx)
	hs := &http.Server{Handler: srv.Handler()}
	go func() { _ = hs.Serve(ln) }() // ErrServerClosed once the deferred Close runs
	defer func() { _ = hs.Close() }()

	c := &loadClient{url: "http://" + ln.Addr().String() + "/v1/completions", maxTokens: *maxTokens,
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *clients}}}
	if _, err := c.complete(ctx, 0); err != nil { // warm-up
		return err
	}
	_, _ = fmt.Fprintf(stderr, "bench-serve: %s, %d threads, %d tokens per request, %s KV cache\n", *modelPath, *threads, *maxTokens, kv)

	var one, many, ratios, manyTTFT []float64
	for r := 0; r < *reps; r++ {
		rate, _, err := c.phase(ctx, 1, r)
		if err != nil {
			return err
		}
		one = append(one, rate)
		rate, ttfts, err := c.phase(ctx, *streams, r)
		if err != nil {
			return err
		}
		many = append(many, rate)
		// Each repetition's two phases run back to back: their ratio is
		// the figure least moved by a neighbour whose load drifts.
		ratios = append(ratios, rate/one[r])
		manyTTFT = append(manyTTFT, ttfts...)
		_, _ = fmt.Fprintf(stderr, "run %d: 1 stream %.1f tok/s, %d streams %.1f tok/s\n", r+1, one[r], *streams, many[r])
	}
	load, err := c.flood(ctx, *clients, *duration)
	if err != nil {
		return err
	}
	res := benchServeResult{
		Model: *modelPath, KVType: kv.String(), Threads: *threads, MaxTokens: *maxTokens, Streams: *streams,
		SingleTokS: stats.Median(one), AggregateTokS: stats.Median(many), Clients: *clients, Load: load,
		StreamsTTFTp50ms: percentile(manyTTFT, 50), StreamsTTFTp99ms: percentile(manyTTFT, 99),
	}
	res.Ratio = stats.Median(ratios)
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	_, err = fmt.Fprintf(stdout, "model %s, %d threads, %s KV cache, %d tokens per request (streamed over loopback HTTP)\n"+
		"1 stream:            %7.1f tok/s (median of %d)\n"+
		"%d streams at once:  %7.1f tok/s aggregate (median); %.2f× one stream (median of the runs' ratios); time to first token p50 %.0f ms, p99 %.0f ms\n"+
		"%d clients for %s: %d requests done, %d refused with 429, %d other errors; %.1f tok/s\n"+
		"time to first token under that load (queueing included): p50 %.0f ms, p99 %.0f ms\n",
		res.Model, res.Threads, res.KVType, res.MaxTokens,
		res.SingleTokS, *reps,
		res.Streams, res.AggregateTokS, res.Ratio, res.StreamsTTFTp50ms, res.StreamsTTFTp99ms,
		res.Clients, *duration, load.Done, load.Refused, load.Errors, load.TokS,
		load.TTFTp50ms, load.TTFTp99ms)
	if err != nil {
		return err
	}
	if load.Errors > 0 {
		return fmt.Errorf("%d requests failed with errors other than 429; first: %s", load.Errors, load.FirstError)
	}
	return nil
}

type benchServeResult struct {
	Model         string  `json:"model"`
	KVType        string  `json:"kv_cache_type"`
	Threads       int     `json:"threads"`
	MaxTokens     int     `json:"max_tokens"`
	Streams       int     `json:"streams"`
	SingleTokS    float64 `json:"single_stream_tok_s"`
	AggregateTokS float64 `json:"aggregate_tok_s"`
	Ratio         float64 `json:"ratio"` // the median of the repetitions' ratios
	// Time to first token of the streams of phase 2 (all admitted at once).
	StreamsTTFTp50ms float64   `json:"streams_ttft_p50_ms"`
	StreamsTTFTp99ms float64   `json:"streams_ttft_p99_ms"`
	Clients          int       `json:"clients"`
	Load             loadStats `json:"load"`
}

type loadStats struct {
	Done       int     `json:"done"`
	Refused    int     `json:"refused_429"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	TokS       float64 `json:"tok_s"`
	TTFTp50ms  float64 `json:"ttft_p50_ms"`
	TTFTp99ms  float64 `json:"ttft_p99_ms"`
}

// loadClient sends streaming completions and reads them as a client does.
type loadClient struct {
	url       string
	maxTokens int
	http      *http.Client
}

// refusedError is a 429: the server's queue was full; retry after.
type refusedError struct{ retryAfter time.Duration }

func (refusedError) Error() string { return "429 too many pending requests" }

type completion struct {
	tokens int
	ttft   time.Duration
}

// complete sends one streaming request and reads it to the end.
func (c *loadClient) complete(ctx context.Context, i int) (completion, error) {
	body, _ := json.Marshal(map[string]any{
		"prompt": fmt.Sprintf("Once upon a time, in a land of %d rivers, there was", i), "max_tokens": c.maxTokens,
		"temperature": 0, "ignore_eos": true, "stream": true, "stream_options": map[string]any{"include_usage": true},
	})
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return completion{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return completion{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode == http.StatusTooManyRequests {
		_, _ = io.Copy(io.Discard, resp.Body) // drained so that the connection is reused; a failure only costs that
		wait := time.Second
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			wait = time.Duration(s) * time.Second
		}
		return completion{}, refusedError{wait}
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return completion{}, fmt.Errorf("HTTP %d: %s", resp.StatusCode, msg)
	}
	var out completion
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			return out, nil
		}
		var chunk struct {
			Choices []json.RawMessage `json:"choices"`
			Usage   *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
			Error *struct{ Message string } `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			return out, fmt.Errorf("bad event %q: %w", data, err)
		}
		switch {
		case chunk.Error != nil:
			return out, fmt.Errorf("error event: %s", chunk.Error.Message)
		case len(chunk.Choices) > 0 && out.ttft == 0:
			out.ttft = time.Since(start)
		case chunk.Usage != nil:
			out.tokens = chunk.Usage.CompletionTokens
		}
	}
	if err := sc.Err(); err != nil {
		return out, err
	}
	return out, errors.New("the stream ended without [DONE]")
}

// phase runs n streams at once, one request each, and returns their
// aggregate generation rate (all tokens over the wall time) and their
// times to first token in milliseconds.
func (c *loadClient) phase(ctx context.Context, n, rep int) (float64, []float64, error) {
	var wg sync.WaitGroup
	res := make([]completion, n)
	errs := make([]error, n)
	start := time.Now()
	for i := range n {
		wg.Go(func() { res[i], errs[i] = c.complete(ctx, rep*1000+i) })
	}
	wg.Wait()
	wall := time.Since(start)
	tokens := 0
	var ttfts []float64
	for i := range n {
		if errs[i] != nil {
			return 0, nil, fmt.Errorf("%d streams: %w", n, errs[i])
		}
		if res[i].tokens != c.maxTokens {
			return 0, nil, fmt.Errorf("%d streams: a request generated %d tokens, want %d", n, res[i].tokens, c.maxTokens)
		}
		tokens += res[i].tokens
		ttfts = append(ttfts, float64(res[i].ttft)/float64(time.Millisecond))
	}
	return float64(tokens) / wall.Seconds(), ttfts, nil
}

// flood runs clients that each send requests back to back until d has
// passed; a refused request is retried after its Retry-After, as a
// client honouring 429 does.
func (c *loadClient) flood(ctx context.Context, clients int, d time.Duration) (loadStats, error) {
	var (
		mu    sync.Mutex
		st    loadStats
		ttfts []float64
		toks  int
		wg    sync.WaitGroup
	)
	start := time.Now()
	for i := range clients {
		wg.Go(func() {
			for n := 0; time.Since(start) < d && ctx.Err() == nil; n++ {
				r, err := c.complete(ctx, i*100000+n)
				var refused refusedError
				mu.Lock()
				switch {
				case errors.As(err, &refused):
					st.Refused++
				case err != nil:
					if st.Errors == 0 {
						st.FirstError = err.Error()
					}
					st.Errors++
				default:
					st.Done++
					toks += r.tokens
					ttfts = append(ttfts, float64(r.ttft)/float64(time.Millisecond))
				}
				mu.Unlock()
				if refused.retryAfter > 0 {
					time.Sleep(min(refused.retryAfter, time.Until(start.Add(d))))
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return st, err
	}
	st.TokS = float64(toks) / time.Since(start).Seconds()
	st.TTFTp50ms, st.TTFTp99ms = percentile(ttfts, 50), percentile(ttfts, 99)
	return st, nil
}

// percentile is the nearest-rank p-th percentile of v (0 when empty).
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	rank := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(rank, 0), len(s)-1)]
}
