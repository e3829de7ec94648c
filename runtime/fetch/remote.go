package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// remote is one file a source offers.
type remote struct {
	name string // path under the destination
	size int64  // bytes; -1 when the source does not say
	// sha256 is the checksum the source publishes (hex), "" when none;
	// gitSHA1 the git blob id of a Hub file kept outside LFS; md5 an S3
	// object's MD5 (the ETag of a single-part upload).
	sha256, gitSHA1, md5 string
	get                  getter
}

// getter opens byte ranges of one remote file.
type getter interface {
	// get opens bytes [off, end) (end < 0: to the end of the file).
	get(ctx context.Context, off, end int64) (io.ReadCloser, error)
	// ranged reports whether get can start anywhere but 0.
	ranged() bool
	// identity changes when the file does (an ETag, a checksum): a
	// partial download made for another identity is thrown away.
	identity() string
}

// permanentError is a failure that no retry will fix (401, 404, ...);
// status is the HTTP status that said so, 0 when none did.
type permanentError struct {
	err    error
	status int
}

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(format string, args ...any) error {
	return &permanentError{err: fmt.Errorf(format, args...)}
}

// permanentStatus is permanent for a failure an HTTP status gave.
func permanentStatus(status int, format string, args ...any) error {
	return &permanentError{err: fmt.Errorf(format, args...), status: status}
}

// HTTPStatus returns the HTTP status (the Hub's, an https server's or an
// S3 store's) that made err a permanent failure: 401 and 403 (credentials),
// 404 (no such repository, revision, file, bucket or key), and the other
// 4xx no retry fixes. ok is false when no status caused err.
func HTTPStatus(err error) (status int, ok bool) {
	var p *permanentError
	if errors.As(err, &p) && p.status != 0 {
		return p.status, true
	}
	return 0, false
}

// retryAfterError is a retryable failure whose server asked for a delay.
type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// httpGetter fetches a URL with HTTP range requests.
type httpGetter struct {
	client   *http.Client
	url      string
	header   http.Header // sent with every request (Authorization)
	etag     string      // a strong ETag: sent as If-Range
	canRange bool
	size     int64
}

func (g *httpGetter) ranged() bool     { return g.canRange }
func (g *httpGetter) identity() string { return g.etag }

func (g *httpGetter) get(ctx context.Context, off, end int64) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.url, nil)
	if err != nil {
		return nil, permanent("%v", err)
	}
	for k, v := range g.header {
		req.Header[k] = v
	}
	whole := off == 0 && (end < 0 || end == g.size)
	if !whole {
		r := fmt.Sprintf("bytes=%d-", off)
		if end >= 0 {
			r += strconv.FormatInt(end-1, 10)
		}
		req.Header.Set("Range", r)
		if g.etag != "" {
			req.Header.Set("If-Range", g.etag)
		}
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return nil, err // the network: retried
	}
	if err := statusError(resp, redactURL(g.url)); err != nil {
		_ = resp.Body.Close()
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent:
		start, _, ok := contentRange(resp.Header.Get("Content-Range"))
		if !ok || start != off {
			_ = resp.Body.Close()
			return nil, fmt.Errorf("GET %s: asked for bytes from %d, the server sent Content-Range %q", redactURL(g.url), off, resp.Header.Get("Content-Range"))
		}
	case !whole:
		// 200 to a range request: the server ignores ranges, or the file
		// changed (If-Range failed). Either way these bytes do not fit.
		_ = resp.Body.Close()
		return nil, permanent("GET %s: the server answered a range request with the whole file (it changed since the download began, or it does not support ranges)", redactURL(g.url))
	}
	return resp.Body, nil
}

// statusError turns a failed HTTP status into an error: permanent for the
// client errors a retry cannot fix, retryable (with the server's
// Retry-After) for 408, 429 and 5xx.
func statusError(resp *http.Response, what string) error {
	code := resp.StatusCode
	if code < 300 {
		return nil
	}
	msg := readSnippet(resp.Body)
	base := fmt.Sprintf("GET %s: %s", what, resp.Status)
	if msg != "" {
		base += ": " + msg
	}
	switch {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return permanentStatus(code, "%s (the file is private or gated, or the token is wrong: set HF_TOKEN or the source's credentials)", base)
	case code == http.StatusNotFound:
		return permanentStatus(code, "%s (no such repository, revision or file)", base)
	case code == http.StatusRequestedRangeNotSatisfiable:
		return permanentStatus(code, "%s (the file is shorter than expected)", base)
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		after := time.Duration(0)
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			after = time.Duration(s) * time.Second
		}
		return &retryAfterError{errors.New(base), after}
	default:
		return permanentStatus(code, "%s", base)
	}
}

func readSnippet(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 300))
	s := strings.TrimSpace(string(b))
	if strings.ContainsFunc(s, func(r rune) bool { return r < ' ' && r != '\n' && r != '\t' }) {
		return ""
	}
	return strings.Join(strings.Fields(s), " ")
}

// contentRange parses "bytes START-END/SIZE" (SIZE may be "*": -1) into
// START and SIZE.
func contentRange(h string) (start, size int64, ok bool) {
	rest, found := strings.CutPrefix(h, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, total, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	var err1, err2, err3 error
	start, err1 = strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	size = -1
	if total != "*" {
		size, err3 = strconv.ParseInt(total, 10, 64)
	}
	if err1 != nil || err2 != nil || err3 != nil || start < 0 || end < start || (size >= 0 && end >= size) {
		return 0, 0, false
	}
	return start, size, true
}

// probeHTTP learns an https source's size, range support and ETag with a
// one-byte range request.
func probeHTTP(ctx context.Context, client *http.Client, rawURL string, header http.Header) (*httpGetter, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, permanent("%v", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Range", "bytes=0-0")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if err := statusError(resp, redactURL(rawURL)); err != nil {
		return nil, err
	}
	g := &httpGetter{client: client, url: rawURL, header: header, size: -1}
	if etag := resp.Header.Get("ETag"); etag != "" && !strings.HasPrefix(etag, "W/") {
		g.etag = etag
	}
	if resp.StatusCode == http.StatusPartialContent {
		if _, size, ok := contentRange(resp.Header.Get("Content-Range")); ok && size >= 0 {
			g.size, g.canRange = size, true
		}
	} else {
		g.size = resp.ContentLength // -1 when not sent
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	return g, nil
}

// redactURL drops a URL's query (signed CDN URLs carry credentials there)
// and user info from messages.
func redactURL(s string) string {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		if at := strings.Index(rest, "@"); at >= 0 && at < strings.Index(rest+"/", "/") {
			rest = rest[at+1:]
		}
		s = scheme + "://" + rest
	}
	return s
}
