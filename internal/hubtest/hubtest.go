// Package hubtest is a Hugging Face Hub for tests: a real HTTP server on
// loopback that speaks the parts of the Hub's protocol a download uses —
// model info with file metadata (GET /api/models/{repo}/revision/{rev}
// ?blobs=true), file resolution (GET /{repo}/resolve/{rev}/{path}: small
// files directly, LFS files through a redirect to a CDN path), ranged
// requests, ETags, and Bearer tokens for gated repositories — serving real
// files. Faults can be injected per request (a cut connection, a stall, a
// 5xx, a corrupted byte), and the body bytes it sends are counted, so a
// test can assert what a resumed download fetched.
package hubtest

import (
	"bytes"
	"context"
	"crypto/sha1" //nolint:gosec // git's blob ids are SHA-1
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// LFSThreshold is the size from which files are are stored "in LFS" (served via
// the CDN redirect, listed with their SHA-256), as the Hub does for
// weights.
const LFSThreshold = 10 << 10

// File is one file of a repository.
type File struct {
	Path string
	Data []byte
}

// Repo is a repository at one commit.
type Repo struct {
	ID     string // "org/name"
	Commit string // 40 hex digits
	// Branches are revisions that resolve to Commit ("main" is added).
	Branches []string
	Files    []File
	// Token, when set, is required (the repository is gated).
	Token string
}

// Fault is what to do with one file request. The zero value serves it.
type Fault struct {
	// CutAfter > 0 closes the connection after this many body bytes.
	CutAfter int64
	// StallAfter > 0 stops sending after this many body bytes, until the
	// client gives up (or a minute passes).
	StallAfter int64
	// Status, when set, answers with this status (and RetryAfter seconds).
	Status     int
	RetryAfter int
	// CorruptAt >= 0 with Corrupt set flips the bits of the byte at this
	// file offset, if the response covers it.
	Corrupt   bool
	CorruptAt int64
	// Delay is a pause before each write of the body (a slow link).
	Delay time.Duration
}

// Request is a file request as the fault hook sees it.
type Request struct {
	Path      string // the file's path in the repository
	N         int    // how many requests for this path came before (0 first)
	RangeFrom int64  // the first byte asked for
}

// Server is a running fake Hub.
type Server struct {
	*httptest.Server
	mu     sync.Mutex
	repos  map[string]*Repo
	counts map[string]int
	// Fault, when set, decides each file request's fault.
	Fault func(Request) Fault
	// sent counts body bytes of file responses, sentTo per client.
	sent   atomic.Int64
	sentTo map[string]int64
	// AuthSeen records the Authorization headers of API and resolve
	// requests (to check the token is sent to the Hub).
	authSeen []string
}

// New starts a TLS server holding repos; its Client trusts it.
func New(repos ...*Repo) *Server {
	s := newServer(repos)
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	return s
}

// NewPlain starts a plain-http server (for a client that cannot be told
// to trust a test certificate, such as a process already running).
func NewPlain(repos ...*Repo) *Server {
	s := newServer(repos)
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

func newServer(repos []*Repo) *Server {
	s := &Server{repos: map[string]*Repo{}, counts: map[string]int{}, sentTo: map[string]int64{}}
	for _, r := range repos {
		s.repos[r.ID] = r
	}
	return s
}

// Sent returns the body bytes of file responses so far.
func (s *Server) Sent() int64 { return s.sent.Load() }

// ResetSent sets the counter to zero.
func (s *Server) ResetSent() { s.sent.Store(0) }

// ClientHeader names the client of a request for SentTo.
const ClientHeader = "X-Hubtest-Client"

// SentTo returns the body bytes sent in answer to requests whose
// ClientHeader was name: unlike Sent, not moved by an earlier client that
// went away while its last requests were still arriving.
func (s *Server) SentTo(name string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sentTo[name]
}

// TaggedClient is s.Client with every request carrying ClientHeader: name.
func (s *Server) TaggedClient(name string) *http.Client {
	c := *s.Client()
	c.Transport = tagger{c.Transport, name}
	return &c
}

type tagger struct {
	rt   http.RoundTripper
	name string
}

func (t tagger) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(ClientHeader, t.name)
	return t.rt.RoundTrip(r)
}

// AuthSeen returns the Authorization headers the API and resolve
// endpoints received.
func (s *Server) AuthSeen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.authSeen...)
}

// SHA256 is the hex SHA-256 of b.
func SHA256(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// GitBlobID is git's id of a blob holding b.
func GitBlobID(b []byte) string {
	h := sha1.New() //nolint:gosec // git's blob id
	_, _ = fmt.Fprintf(h, "blob %d\x00", len(b))
	_, _ = h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/api/models/"):
		s.info(w, r, strings.TrimPrefix(p, "/api/models/"))
	case strings.HasPrefix(p, "/cdn/"):
		s.cdn(w, r, strings.TrimPrefix(p, "/cdn/"))
	case strings.Contains(p, "/resolve/"):
		s.resolve(w, r)
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}

// repo finds the repository and checks the token: the real Hub answers
// 401 both for a gated repository without access and for one that does
// not exist.
func (s *Server) repo(w http.ResponseWriter, r *http.Request, id string) *Repo {
	s.mu.Lock()
	s.authSeen = append(s.authSeen, r.Header.Get("Authorization"))
	repo := s.repos[id]
	s.mu.Unlock()
	if repo == nil {
		w.Header().Set("X-Error-Code", "RepoNotFound")
		http.Error(w, `{"error":"Repository not found"}`, http.StatusUnauthorized)
		return nil
	}
	if repo.Token != "" && r.Header.Get("Authorization") != "Bearer "+repo.Token {
		w.Header().Set("X-Error-Code", "GatedRepo")
		http.Error(w, `{"error":"Access to model `+id+` is restricted. You must have access to it and be authenticated to access it."}`, http.StatusUnauthorized)
		return nil
	}
	return repo
}

func (repo *Repo) resolves(rev string) bool {
	if rev == repo.Commit || rev == "main" {
		return true
	}
	for _, b := range repo.Branches {
		if b == rev {
			return true
		}
	}
	return false
}

func (repo *Repo) file(path string) *File {
	for i := range repo.Files {
		if repo.Files[i].Path == path {
			return &repo.Files[i]
		}
	}
	return nil
}

// info answers GET /api/models/{org}/{name}/revision/{rev}?blobs=true.
func (s *Server) info(w http.ResponseWriter, r *http.Request, rest string) {
	parts := strings.SplitN(rest, "/", 4)
	if len(parts) != 4 || parts[2] != "revision" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	repo := s.repo(w, r, parts[0]+"/"+parts[1])
	if repo == nil {
		return
	}
	if !repo.resolves(parts[3]) {
		w.Header().Set("X-Error-Code", "RevisionNotFound")
		http.Error(w, `{"error":"Invalid rev id: `+parts[3]+`"}`, http.StatusNotFound)
		return
	}
	type lfs struct {
		SHA256      string `json:"sha256"`
		Size        int    `json:"size"`
		PointerSize int    `json:"pointerSize"`
	}
	type sibling struct {
		RFilename string `json:"rfilename"`
		Size      int    `json:"size"`
		BlobID    string `json:"blobId"`
		LFS       *lfs   `json:"lfs,omitempty"`
	}
	var sib []sibling
	for _, f := range repo.Files {
		sb := sibling{RFilename: f.Path, Size: len(f.Data), BlobID: GitBlobID(f.Data)}
		if len(f.Data) >= LFSThreshold {
			pointer := fmt.Sprintf("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n", SHA256(f.Data), len(f.Data))
			sb.BlobID = GitBlobID([]byte(pointer))
			sb.LFS = &lfs{SHA256: SHA256(f.Data), Size: len(f.Data), PointerSize: len(pointer)}
		}
		sib = append(sib, sb)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"_id": "0", "id": repo.ID, "modelId": repo.ID, "sha": repo.Commit, "private": false,
		"gated": repo.Token != "", "siblings": sib, "lastModified": "2026-11-01T00:00:00.000Z",
	})
}

// resolve answers GET /{org}/{name}/resolve/{rev}/{path}.
func (s *Server) resolve(w http.ResponseWriter, r *http.Request) {
	id, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/resolve/")
	rev, path, ok := strings.Cut(rest, "/")
	repo := s.repo(w, r, id)
	if repo == nil {
		return
	}
	f := repo.file(path)
	if !ok || !repo.resolves(rev) || f == nil {
		w.Header().Set("X-Error-Code", "EntryNotFound")
		http.Error(w, "Entry not found", http.StatusNotFound)
		return
	}
	w.Header().Set("X-Repo-Commit", repo.Commit)
	if len(f.Data) >= LFSThreshold {
		// As the Hub does: the metadata here, the bytes from the CDN.
		w.Header().Set("X-Linked-Etag", `"`+SHA256(f.Data)+`"`)
		w.Header().Set("X-Linked-Size", strconv.Itoa(len(f.Data)))
		w.Header().Set("ETag", `"`+GitBlobID(f.Data)+`"`)
		http.Redirect(w, r, "/cdn/"+repo.ID+"/"+SHA256(f.Data)+"?X-Amz-Signature=secret&path="+path, http.StatusFound)
		return
	}
	s.send(w, r, f, `"`+GitBlobID(f.Data)+`"`)
}

// cdn answers the redirect's target: /cdn/{org}/{name}/{sha256}.
func (s *Server) cdn(w http.ResponseWriter, r *http.Request, rest string) {
	i := strings.LastIndex(rest, "/")
	if i < 0 {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	s.mu.Lock()
	repo := s.repos[rest[:i]]
	s.mu.Unlock()
	if repo == nil || r.URL.Query().Get("X-Amz-Signature") != "secret" {
		http.Error(w, "AccessDenied", http.StatusForbidden)
		return
	}
	for k := range repo.Files {
		if f := &repo.Files[k]; SHA256(f.Data) == rest[i+1:] {
			s.send(w, r, f, `"`+SHA256(f.Data)+`"`)
			return
		}
	}
	http.Error(w, "NoSuchKey", http.StatusNotFound)
}

// send serves f (ranges, If-Range through http.ServeContent) with the
// request's fault.
func (s *Server) send(w http.ResponseWriter, r *http.Request, f *File, etag string) {
	s.mu.Lock()
	n := s.counts[f.Path]
	s.counts[f.Path]++
	hook := s.Fault
	s.mu.Unlock()
	from := int64(0)
	if rg := r.Header.Get("Range"); strings.HasPrefix(rg, "bytes=") {
		a, _, _ := strings.Cut(strings.TrimPrefix(rg, "bytes="), "-")
		from, _ = strconv.ParseInt(a, 10, 64)
	}
	var fault Fault
	if hook != nil {
		fault = hook(Request{Path: f.Path, N: n, RangeFrom: from})
	}
	if fault.Status != 0 {
		if fault.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(fault.RetryAfter))
		}
		http.Error(w, http.StatusText(fault.Status), fault.Status)
		return
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Accept-Ranges", "bytes")
	client := r.Header.Get(ClientHeader)
	fw := &FaultWriter{ResponseWriter: w, Fault: fault, Ctx: r.Context(), Count: func(n int) {
		s.sent.Add(int64(n))
		s.mu.Lock()
		s.sentTo[client] += int64(n)
		s.mu.Unlock()
	}}
	http.ServeContent(fw, r, "", time.Time{}, bytes.NewReader(f.Data))
}

// FaultWriter applies a Fault to a response body on its way out (cut,
// stall, delay, a corrupted byte at a file offset) and reports the bytes
// it sends to Count. Used by this package and by s3test's proxy.
type FaultWriter struct {
	http.ResponseWriter
	Fault Fault
	Ctx   context.Context
	// Count, when set, is called with the bytes of each write that went
	// out.
	Count   func(n int)
	start   int64 // the file offset of the body's first byte (Content-Range)
	written int64
	header  bool
}

// WriteHeader notes where a ranged body starts, for CorruptAt.
func (fw *FaultWriter) WriteHeader(code int) {
	if cr := fw.Header().Get("Content-Range"); strings.HasPrefix(cr, "bytes ") {
		a, _, _ := strings.Cut(strings.TrimPrefix(cr, "bytes "), "-")
		fw.start, _ = strconv.ParseInt(a, 10, 64)
	}
	fw.header = true
	fw.ResponseWriter.WriteHeader(code)
}

func (fw *FaultWriter) count(n int) {
	fw.written += int64(n)
	if fw.Count != nil {
		fw.Count(n)
	}
}

func (fw *FaultWriter) Write(p []byte) (int, error) {
	if !fw.header {
		fw.WriteHeader(http.StatusOK)
	}
	f := fw.Fault
	if f.Delay > 0 {
		select {
		case <-time.After(f.Delay):
		case <-fw.Ctx.Done():
			return 0, fw.Ctx.Err()
		}
	}
	if f.Corrupt {
		if i := f.CorruptAt - fw.start - fw.written; i >= 0 && i < int64(len(p)) {
			p = bytes.Clone(p)
			p[i] ^= 0xff
		}
	}
	limit := int64(-1)
	switch {
	case f.CutAfter > 0:
		limit = f.CutAfter
	case f.StallAfter > 0:
		limit = f.StallAfter
	}
	if limit >= 0 && fw.written+int64(len(p)) > limit {
		k := int(limit - fw.written)
		n, _ := fw.ResponseWriter.Write(p[:k])
		fw.count(n)
		fw.Flush()
		if f.StallAfter > 0 {
			select {
			case <-fw.Ctx.Done():
			case <-time.After(time.Minute):
			}
		}
		panic(http.ErrAbortHandler) // the connection is closed mid-body
	}
	n, err := fw.ResponseWriter.Write(p)
	fw.count(n)
	return n, err
}

// Flush passes flushes through.
func (fw *FaultWriter) Flush() {
	if fl, ok := fw.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (fw *FaultWriter) Unwrap() http.ResponseWriter { return fw.ResponseWriter }
