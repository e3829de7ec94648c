package fetch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/leo-operator/leo/internal/hubtest"
)

const commit = "0123456789abcdef0123456789abcdef01234567"

func checkpoint(t *testing.T) []hubtest.File {
	t.Helper()
	files, err := hubtest.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// events collects a pull's events.
type events struct {
	mu sync.Mutex
	ev []Event
}

func (e *events) Event(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ev = append(e.ev, ev)
}

func (e *events) kinds(kind string) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Event
	for _, ev := range e.ev {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

func hubOptions(s *hubtest.Server, rep Reporter) Options {
	return Options{Endpoint: s.URL, Client: s.Client(), PartSize: 256 << 10, Connections: 4,
		Backoff: 5 * time.Millisecond, StallTimeout: 5 * time.Second, Report: rep}
}

func totalSize(files []hubtest.File) int64 {
	var n int64
	for _, f := range files {
		n += int64(len(f.Data))
	}
	return n
}

// checkDest asserts that dest holds exactly want's files (plus the
// manifest), byte for byte, and that the manifest records them.
func checkDest(t *testing.T, dest string, want []hubtest.File) *Manifest {
	t.Helper()
	for _, f := range want {
		got, err := os.ReadFile(filepath.Join(dest, f.Path))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, f.Data) {
			t.Fatalf("%s: the downloaded bytes differ from the source's", f.Path)
		}
	}
	b, err := os.ReadFile(filepath.Join(dest, ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != len(want) {
		t.Fatalf("the manifest lists %d files, want %d: %+v", len(m.Files), len(want), m.Files)
	}
	for _, f := range want {
		mf, ok := m.find(f.Path)
		if !ok || mf.SHA256 != hubtest.SHA256(f.Data) || mf.Size != int64(len(f.Data)) {
			t.Fatalf("manifest entry for %s is %+v, want sha256 %s and %d bytes", f.Path, mf, hubtest.SHA256(f.Data), len(f.Data))
		}
	}
	if _, err := os.Stat(filepath.Join(dest, partialDir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("partial downloads left behind: %v", err)
	}
	return &m
}

func TestHubPull(t *testing.T) {
	files := checkpoint(t)
	s := hubtest.New(&hubtest.Repo{ID: "leo/tiny-llama", Commit: commit, Branches: []string{"v1"}, Files: files})
	defer s.Close()
	src, err := ParseSource("hf://leo/tiny-llama@v1", false)
	if err != nil {
		t.Fatal(err)
	}
	var ev events
	o := hubOptions(s, &ev)
	o.Include = []string{"*.safetensors", "*.json", "tokenizer.model"}
	dest := t.TempDir()
	res, err := Pull(context.Background(), src, dest, o)
	if err != nil {
		t.Fatal(err)
	}
	var want []hubtest.File
	for _, f := range files {
		if f.Path != "README.md" {
			want = append(want, f)
		}
	}
	m := checkDest(t, dest, want)
	if _, err := os.Stat(filepath.Join(dest, "README.md")); err == nil {
		t.Error("README.md was fetched, but no --include pattern matches it")
	}
	size := totalSize(want)
	if m.Revision != commit || res.Transferred != size || s.Sent() != size {
		t.Errorf("revision %q, transferred %d, server sent %d; want %s, %d, %d", m.Revision, res.Transferred, s.Sent(), commit, size, size)
	}
	if got := ev.kinds("verified"); len(got) != len(want) {
		t.Errorf("%d verified events, want %d", len(got), len(want))
	}
	if d := ev.kinds("done"); len(d) != 1 || d[0].BytesDone != size {
		t.Errorf("done events %+v, want one with bytes_done %d", d, size)
	}
	// A second pull finds everything in place and fetches nothing.
	s.ResetSent()
	res, err = Pull(context.Background(), src, dest, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Transferred != 0 || s.Sent() != 0 || res.Present != size {
		t.Errorf("second pull: transferred %d, server sent %d, present %d; want 0, 0, %d", res.Transferred, s.Sent(), res.Present, size)
	}
}

func TestHubGatedAndMissing(t *testing.T) {
	files := checkpoint(t)[:1]
	s := hubtest.New(&hubtest.Repo{ID: "meta/gated", Commit: commit, Files: files, Token: "hf_secret"})
	defer s.Close()
	src, _ := ParseSource("hf://meta/gated", false)
	o := hubOptions(s, nil)
	_, err := Pull(context.Background(), src, t.TempDir(), o)
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "HF_TOKEN") {
		t.Fatalf("without a token: %v; want a 401 that names HF_TOKEN", err)
	}
	o.Token = "hf_secret"
	dest := t.TempDir()
	if _, err := Pull(context.Background(), src, dest, o); err != nil {
		t.Fatalf("with the token: %v", err)
	}
	checkDest(t, dest, files)
	for _, a := range s.AuthSeen()[1:] {
		if a != "Bearer hf_secret" {
			t.Errorf("the Hub saw Authorization %q", a)
		}
	}
	src, _ = ParseSource("hf://meta/gated@no-such-branch", false)
	if _, err := Pull(context.Background(), src, t.TempDir(), o); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a missing revision: %v; want a 404", err)
	}
	o.Include = []string{"*.gguf"}
	src, _ = ParseSource("hf://meta/gated", false)
	if _, err := Pull(context.Background(), src, t.TempDir(), o); err == nil || !strings.Contains(err.Error(), "no file matches") {
		t.Errorf("no match: %v", err)
	}
}

// TestFaults: each injected fault ends with the right bytes, and the
// bytes sent are the file once (plus what a corruption forces again).
func TestFaults(t *testing.T) {
	files := checkpoint(t)
	big := files[1] // the first shard, about 4 MB: 16 parts of 256 KiB
	size := int64(len(big.Data))
	cases := []struct {
		name  string
		fault func(hubtest.Request) hubtest.Fault
		// sent is the server's body bytes the pull should cost.
		sent  int64
		retry string // a retry event's error contains this
	}{
		{"cut mid-part", func(r hubtest.Request) hubtest.Fault {
			if r.N%3 == 0 {
				return hubtest.Fault{CutAfter: 100 << 10}
			}
			return hubtest.Fault{}
		}, size, "connection"},
		{"stall", func(r hubtest.Request) hubtest.Fault {
			if r.N < 2 {
				return hubtest.Fault{StallAfter: 50 << 10}
			}
			return hubtest.Fault{}
		}, size, "stalled"},
		{"5xx", func(r hubtest.Request) hubtest.Fault {
			if r.N < 6 {
				return hubtest.Fault{Status: http.StatusServiceUnavailable}
			}
			return hubtest.Fault{}
		}, size, "503"},
		{"corrupt byte", func(r hubtest.Request) hubtest.Fault {
			// The first fetch of the file (all its parts) flips one byte.
			return hubtest.Fault{Corrupt: r.N < 16, CorruptAt: size / 3}
		}, 2 * size, "SHA-256 mismatch"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := hubtest.New(&hubtest.Repo{ID: "leo/tiny", Commit: commit, Files: []hubtest.File{big}})
			defer s.Close()
			s.Fault = c.fault
			var ev events
			src, _ := ParseSource("hf://leo/tiny", false)
			dest := t.TempDir()
			o := hubOptions(s, &ev)
			if c.name == "stall" {
				o.StallTimeout = 300 * time.Millisecond
			}
			if _, err := Pull(context.Background(), src, dest, o); err != nil {
				t.Fatal(err)
			}
			checkDest(t, dest, []hubtest.File{big})
			// Bytes lost in flight when a connection is cut may be sent again.
			if got := s.Sent(); got < c.sent || got > c.sent+c.sent/20 {
				t.Errorf("the server sent %d bytes, want %d (within 5%%)", got, c.sent)
			}
			found := false
			for _, r := range ev.kinds("retry") {
				found = found || strings.Contains(r.Error, c.retry)
			}
			if !found {
				t.Errorf("no retry event mentions %q: %+v", c.retry, ev.kinds("retry"))
			}
		})
	}
}

// TestFaultsThatStay: failures that persist end with a clear error, and
// leave no file in place.
func TestFaultsThatStay(t *testing.T) {
	big := checkpoint(t)[1]
	for _, c := range []struct {
		name  string
		fault hubtest.Fault
		want  string
	}{
		{"always 503", hubtest.Fault{Status: http.StatusServiceUnavailable}, "503"},
		{"always corrupt", hubtest.Fault{Corrupt: true, CorruptAt: 12345}, "SHA-256 mismatch"},
		{"always stalls", hubtest.Fault{StallAfter: 1}, "stalled"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := hubtest.New(&hubtest.Repo{ID: "leo/tiny", Commit: commit, Files: []hubtest.File{big}})
			defer s.Close()
			s.Fault = func(hubtest.Request) hubtest.Fault { return c.fault }
			o := hubOptions(s, nil)
			o.Retries = 3
			o.StallTimeout = 5 * time.Second // generous: slow machines, the race detector
			if c.fault.StallAfter > 0 {
				o.StallTimeout = 200 * time.Millisecond
			}
			src, _ := ParseSource("hf://leo/tiny", false)
			dest := t.TempDir()
			_, err := Pull(context.Background(), src, dest, o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
			if _, err := os.Stat(filepath.Join(dest, big.Path)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a file that failed is in place: %v", err)
			}
		})
	}
}

// TestResume: a pull stopped half way, then run again, fetches only what
// the first one did not.
func TestResume(t *testing.T) {
	files := checkpoint(t)
	s := hubtest.New(&hubtest.Repo{ID: "leo/tiny", Commit: commit, Files: files})
	defer s.Close()
	size := totalSize(files)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Fault = func(hubtest.Request) hubtest.Fault {
		if s.Sent() > size/2 {
			cancel() // the pod is killed
		}
		return hubtest.Fault{}
	}
	src, _ := ParseSource("hf://leo/tiny", false)
	dest := t.TempDir()
	first, err := Pull(ctx, src, dest, hubOptions(s, nil))
	if !errors.Is(err, context.Canceled) || first != nil {
		t.Fatalf("the interrupted pull returned %v, %v", first, err)
	}
	s.Fault = nil
	var ev events
	o := hubOptions(s, &ev)
	o.Client = s.TaggedClient("second")
	res, err := Pull(context.Background(), src, dest, o)
	if err != nil {
		t.Fatal(err)
	}
	checkDest(t, dest, files)
	st := ev.kinds("start")
	if len(st) != 1 || st[0].BytesPresent <= 0 {
		t.Fatalf("the resumed pull found nothing on disk: %+v", st)
	}
	present := st[0].BytesPresent
	if res.Transferred != size-present || s.SentTo("second") != size-present {
		t.Errorf("resumed: %d bytes were on disk, so %d were missing; the pull fetched %d and the server sent %d", present, size-present, res.Transferred, s.SentTo("second"))
	}
	t.Logf("first pull left %d of %d bytes; the second fetched %d", present, size, res.Transferred)
}

// TestChangedRemote: a partial download made for other bytes (the branch
// moved to a new commit) is thrown away, not mixed in.
func TestChangedRemote(t *testing.T) {
	files := checkpoint(t)
	big := files[1]
	s := hubtest.New(&hubtest.Repo{ID: "leo/tiny", Commit: commit, Files: []hubtest.File{big}})
	ctx, cancel := context.WithCancel(context.Background())
	s.Fault = func(hubtest.Request) hubtest.Fault {
		if s.Sent() > int64(len(big.Data))/2 {
			cancel()
		}
		return hubtest.Fault{}
	}
	src, _ := ParseSource("hf://leo/tiny", false)
	dest := t.TempDir()
	if _, err := Pull(ctx, src, dest, hubOptions(s, nil)); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	s.Close()
	changed := hubtest.File{Path: big.Path, Data: bytes.Clone(big.Data)}
	changed.Data[0] ^= 1
	s2 := hubtest.New(&hubtest.Repo{ID: "leo/tiny", Commit: strings.Repeat("ab", 20), Files: []hubtest.File{changed}})
	defer s2.Close()
	if _, err := Pull(context.Background(), src, dest, hubOptions(s2, nil)); err != nil {
		t.Fatal(err)
	}
	checkDest(t, dest, []hubtest.File{changed})
	if s2.Sent() != int64(len(changed.Data)) {
		t.Errorf("the new commit's file: sent %d bytes, want all %d", s2.Sent(), len(changed.Data))
	}
}

func TestHTTPSource(t *testing.T) {
	data := checkpoint(t)[1].Data
	var mu sync.Mutex
	requests := 0
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		mu.Unlock()
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(w, r, "m.gguf", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	src, err := ParseSource(srv.URL+"/models/m.gguf?sig=abc", false)
	if err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	res, err := Pull(context.Background(), src, dest, Options{Client: srv.Client(), PartSize: 1 << 20, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	checkDest(t, dest, []hubtest.File{{Path: "m.gguf", Data: data}})
	if res.Transferred != int64(len(data)) || requests < 2 {
		t.Errorf("transferred %d in %d requests", res.Transferred, requests)
	}
	if _, err := ParseSource("http://example.com/m.gguf", false); err == nil || !strings.Contains(err.Error(), "allow-http") {
		t.Errorf("plain http: %v", err)
	}
	if _, err := ParseSource("http://example.com/m.gguf", true); err != nil {
		t.Errorf("plain http, allowed: %v", err)
	}
}

// TestNoRangeServer: a server that ignores Range gets one connection, and
// a cut connection starts the file over (there is no other way).
func TestNoRangeServer(t *testing.T) {
	data := checkpoint(t)[1].Data
	var mu sync.Mutex
	n := 0
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		first := n == 2 // the probe is request 1
		mu.Unlock()
		w.Header().Set("Content-Length", "") // no length either
		w.WriteHeader(http.StatusOK)
		if first {
			_, _ = w.Write(data[:len(data)/2])
			panic(http.ErrAbortHandler)
		}
		_, _ = w.Write(data)
	}))
	defer srv.Close()
	src, _ := ParseSource(srv.URL+"/m.bin", false)
	dest := t.TempDir()
	if _, err := Pull(context.Background(), src, dest, Options{Client: srv.Client(), Backoff: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	checkDest(t, dest, []hubtest.File{{Path: "m.bin", Data: data}})
}

func TestLocalSource(t *testing.T) {
	files := checkpoint(t)[:3]
	src := t.TempDir()
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(src, f.Path), f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := ParseSource("pvc://"+src, false)
	dest := t.TempDir()
	if _, err := Pull(context.Background(), s, dest, Options{}); err != nil {
		t.Fatal(err)
	}
	checkDest(t, dest, files)
	// In place: verified against the manifest written there.
	if _, err := Pull(context.Background(), s, "", Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Pull(context.Background(), s, "", Options{}); err != nil {
		t.Fatalf("verifying again: %v", err)
	}
	if err := os.WriteFile(filepath.Join(src, files[0].Path), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Pull(context.Background(), s, "", Options{}); err == nil || !strings.Contains(err.Error(), "does not match its manifest") {
		t.Errorf("a changed file in place: %v", err)
	}
}

// TestRefusedListings: a Hub listing that cannot be fetched safely is
// refused before any file is requested: an exabyte file (more than the
// free space), a name that climbs out of the destination.
func TestRefusedListings(t *testing.T) {
	for _, c := range []struct{ siblings, want string }{
		{`[{"rfilename":"huge.safetensors","size":1,"lfs":{"sha256":"` + strings.Repeat("0", 64) + `","size":1152921504606846976}}]`, "not enough space"},
		{`[{"rfilename":"../../etc/passwd","size":3}]`, "outside the destination"},
	} {
		srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasPrefix(r.URL.Path, "/api/") {
				t.Errorf("unexpected request %s", r.URL)
				return
			}
			_, _ = w.Write([]byte(`{"sha":"` + commit + `","siblings":` + c.siblings + `}`))
		}))
		src, _ := ParseSource("hf://leo/refused", false)
		_, err := Pull(context.Background(), src, t.TempDir(), Options{Endpoint: srv.URL, Client: srv.Client()})
		srv.Close()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.siblings, err, c.want)
		}
	}
}

func TestParseSource(t *testing.T) {
	for _, c := range []struct {
		in, want string
	}{
		{"hf://meta-llama/Llama-2-7b-hf", "hf://meta-llama/Llama-2-7b-hf@main"},
		{"hf://TheBloke/Llama-2-7B-GGUF@a1b2c3", "hf://TheBloke/Llama-2-7B-GGUF@a1b2c3"},
		{"pvc://models/llama", "models/llama"},
		{"/mnt/models/x.gguf", "/mnt/models/x.gguf"},
		{"https://example.com/a/b.gguf?token=secret", "https://example.com/a/b.gguf?token=secret"},
		{"s3://models/llama-2-7b/", "s3://models/llama-2-7b/"},
	} {
		s, err := ParseSource(c.in, false)
		if err != nil || s.String() != c.want {
			t.Errorf("%s: %v, %v; want %s", c.in, s, err, c.want)
		}
	}
	for _, bad := range []string{"hf://onlyone", "hf://a/b/c", "hf://a/b@", "hf://../b", "ftp://x/y", "https://example.com/", "", "hf://a b/c", "s3://B/key", "s3://b", "s3://bucket/a/../b"} {
		if _, err := ParseSource(bad, false); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestJSONLines(t *testing.T) {
	var buf bytes.Buffer
	r := JSONLines(&buf)
	r.Event(Event{Kind: "start", Files: 2, BytesTotal: 10})
	r.Event(Event{Kind: "progress", BytesDone: 5, BytesTotal: 10, Rate: 2, ETA: 2.5})
	r.Event(Event{Kind: "progress", BytesDone: 6, BytesTotal: 10}) // under a second later: dropped
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %q", len(lines), buf.String())
	}
	var e map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &e); err != nil {
		t.Fatal(err)
	}
	if e["event"] != "progress" || e["bytes_done"] != 5.0 || e["bytes_total"] != 10.0 || e["rate_bytes_per_second"] != 2.0 || e["eta_seconds"] != 2.5 {
		t.Errorf("progress line %s", lines[1])
	}
}

// FuzzSourceAndRanges: what a user or a server sends (a SOURCE argument,
// a Content-Range header) never panics, and what parses is sane.
func FuzzSourceAndRanges(f *testing.F) {
	for _, s := range []string{"hf://a/b@main", "https://h/x.gguf", "pvc://m", "bytes 0-9/10", "bytes 5-4/*", "hf://a/../b", "bytes -1-2/3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if src, err := ParseSource(s, true); err == nil && src.Kind == HF {
			for _, part := range strings.Split(src.Repo, "/") {
				if !validRepoPart(part) {
					t.Errorf("%q gave repo %q", s, src.Repo)
				}
			}
		}
		if start, size, ok := contentRange(s); ok && (start < 0 || (size >= 0 && start >= size)) {
			t.Errorf("%q parsed as start %d of %d", s, start, size)
		}
		_ = safeName(s)
	})
}

// TestTotalTimeout: a pull that does not finish in time ends with an
// error that says so, whatever the link is doing.
func TestTotalTimeout(t *testing.T) {
	big := checkpoint(t)[1]
	s := hubtest.New(&hubtest.Repo{ID: "leo/tiny", Commit: commit, Files: []hubtest.File{big}})
	defer s.Close()
	s.Fault = func(hubtest.Request) hubtest.Fault { return hubtest.Fault{Delay: 50 * time.Millisecond} } // slow, never stalled
	o := hubOptions(s, nil)
	o.Timeout = 500 * time.Millisecond
	src, _ := ParseSource("hf://leo/tiny", false)
	start := time.Now()
	_, err := Pull(context.Background(), src, t.TempDir(), o)
	if err == nil || !strings.Contains(err.Error(), "longer than its timeout") {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the pull stopped %s after it began, long after its 500ms timeout", d)
	}
}

// TestReadOnly: a read-only volume (as a pvc:// mount may be) is verified
// without its manifest being written; other write errors still fail.
func TestReadOnly(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&os.PathError{Op: "open", Path: "/m/x", Err: syscall.EROFS}, true},
		{&os.PathError{Op: "open", Path: "/m/x", Err: syscall.EACCES}, true},
		{&os.PathError{Op: "write", Path: "/m/x", Err: syscall.ENOSPC}, false},
	} {
		if got := readOnly(c.err); got != c.want {
			t.Errorf("readOnly(%v) = %v", c.err, got)
		}
	}
}
