package fetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"time"
)

// Options tune Pull. The zero value of each field means its default.
type Options struct {
	// Include keeps only the files whose path matches one of these globs
	// (path.Match; a pattern without "/" also matches base names). Empty:
	// every file of the source.
	Include []string
	// Token is the Hugging Face token (HF_TOKEN), sent to the Hub only.
	Token string
	// Endpoint is the Hub's address (HF_ENDPOINT); https://huggingface.co.
	Endpoint string
	// AllowHTTP permits plain-http sources and endpoints.
	AllowHTTP bool
	// Connections is the parallel ranged requests per file (4).
	Connections int
	// PartSize is the bytes of one ranged request (64 MiB).
	PartSize int64
	// Retries is how many failed attempts in a row a part may have
	// before the pull fails (8); an attempt that got bytes resets it.
	Retries int
	// Backoff is the first retry's delay, doubled each time up to 30 s (1 s).
	Backoff time.Duration
	// StallTimeout ends a request that brings no byte for this long (30 s).
	StallTimeout time.Duration
	// Timeout bounds the whole pull (0: none).
	Timeout time.Duration
	// S3Endpoint is an S3-compatible store's address (https://host:port;
	// AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL when empty; AWS when all
	// are). S3Region is the region (AWS_REGION). S3AccessKey and the rest
	// are credentials; when empty they come from the environment, a
	// shared credentials file, or the instance's role.
	S3Endpoint, S3Region                     string
	S3AccessKey, S3SecretKey, S3SessionToken string
	// Fsync flushes each file to the disk before it is renamed into
	// place, so that a node that loses power cannot leave a file the
	// manifest vouches for with bytes missing. Off by default, as curl and
	// the Hub's own client do: a process killed at any point (the common
	// failure) loses nothing either way, and on this project's machine
	// the flush costs more than the download (the disk takes 211 MB/s).
	Fsync bool
	// Client makes the HTTP requests (a clone of http.DefaultTransport's).
	Client *http.Client
	// Report receives progress (nothing when nil).
	Report Reporter
}

func (o *Options) defaults() {
	if o.Endpoint == "" {
		o.Endpoint = "https://huggingface.co"
	}
	if o.Connections <= 0 {
		o.Connections = 4
	}
	if o.PartSize <= 0 {
		o.PartSize = 64 << 20
	}
	if o.Retries <= 0 {
		o.Retries = 8
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 30 * time.Second
	}
	if o.Client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 16
		o.Client = &http.Client{Transport: t}
	}
	if o.Report == nil {
		o.Report = nopReporter{}
	}
}

// ManifestName is the manifest's file name in the destination.
const ManifestName = "leo-manifest.json"

// Manifest records what a pull put in its destination.
type Manifest struct {
	Source string `json:"source"`
	// Revision is the commit a Hub revision resolved to.
	Revision string         `json:"revision,omitempty"`
	Files    []ManifestFile `json:"files"`
	Updated  time.Time      `json:"updated"`
}

// ManifestFile is one file of a Manifest.
type ManifestFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Result is what Pull did.
type Result struct {
	Manifest *Manifest
	// Transferred is the bytes fetched by this run; Present those already
	// on disk (complete files and parts of interrupted downloads).
	Transferred, Present int64
	Elapsed              time.Duration
}

// run is one Pull's shared state.
type run struct {
	o                    *Options
	dest                 string
	transferred, present atomic.Int64
}

// Pull fetches the files of src into the directory dest and writes its
// manifest there. A Local source with dest "" (or its own directory) is
// checked in place instead of copied.
func Pull(ctx context.Context, src Source, dest string, o Options) (*Result, error) {
	o.defaults()
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, o.Timeout, fmt.Errorf("the pull took longer than its timeout (%s)", o.Timeout))
		defer cancel()
	}
	start := time.Now()
	rn := &run{o: &o, dest: dest}
	m := &Manifest{Source: src.String()}
	var files []remote
	var err error
	switch src.Kind {
	case HF:
		m.Revision, files, err = listHub(ctx, &o, src)
	case HTTPS:
		files, err = listHTTPS(ctx, &o, src)
	case S3:
		files, err = listS3(ctx, &o, src)
	case Local:
		if inPlace(src.Path, dest) {
			return verifyInPlace(ctx, src, &o)
		}
		files, err = listLocal(src.Path)
	default:
		err = fmt.Errorf("unknown source kind %q", src.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	files, err = selectFiles(files, o.Include)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return nil, err
	}
	old := readManifest(dest)
	if old.Source != m.Source {
		old = &Manifest{} // files of another source: nothing to trust
	}
	var toFetch []remote
	var total, need int64 // need: the bytes still to fetch
	for _, f := range files {
		total += max(f.size, 0)
		if mf, ok := old.find(f.name); ok && upToDate(dest, f, mf) {
			rn.present.Add(mf.Size)
			m.Files = append(m.Files, mf)
			continue
		}
		toFetch = append(toFetch, f)
		partial := partialBytes(dest, f, &o)
		rn.present.Add(partial)
		need += max(f.size, 0) - partial
	}
	if err := checkSpace(dest, need); err != nil {
		return nil, err
	}
	o.Report.Event(Event{Kind: "start", Source: m.Source, Files: len(files), BytesTotal: total, BytesPresent: rn.present.Load()})
	stopProgress := rn.progress(total)
	defer stopProgress()
	for _, f := range toFetch {
		o.Report.Event(Event{Kind: "file", File: f.name, BytesTotal: f.size})
		sum, err := rn.download(ctx, f)
		if err != nil {
			if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
				err = fmt.Errorf("%w (%w)", err, cause)
			}
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		size := f.size
		if size < 0 {
			if fi, err := os.Stat(filepath.Join(dest, filepath.FromSlash(f.name))); err == nil {
				size = fi.Size()
			}
		}
		m.Files = append(m.Files, ManifestFile{Name: f.name, Size: size, SHA256: sum})
		// Recorded at once: a pull killed after this file skips it next time.
		if err := writeManifest(dest, m); err != nil {
			return nil, err
		}
		o.Report.Event(Event{Kind: "verified", File: f.name, BytesTotal: size, SHA256: sum})
	}
	if err := writeManifest(dest, m); err != nil {
		return nil, err
	}
	_ = os.Remove(filepath.Join(dest, partialDir)) // only when empty
	res := &Result{Manifest: m, Transferred: rn.transferred.Load(), Present: rn.present.Load(), Elapsed: time.Since(start)}
	stopProgress()
	o.Report.Event(Event{Kind: "done", Files: len(m.Files), BytesTotal: total, BytesDone: res.Transferred, BytesPresent: res.Present,
		Seconds: res.Elapsed.Seconds(), Manifest: filepath.Join(dest, ManifestName)})
	return res, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// selectFiles keeps the files that match include (all when empty) and
// refuses names that would escape the destination.
func selectFiles(files []remote, include []string) ([]remote, error) {
	for _, p := range include {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("bad --include pattern %q: %w", p, err)
		}
	}
	var out []remote
	for _, f := range files {
		if !safeName(f.name) {
			return nil, fmt.Errorf("the source lists a file named %q, which would land outside the destination", f.name)
		}
		if matches(f.name, include) {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		if len(include) > 0 {
			return nil, fmt.Errorf("no file matches %q (the source has %d files)", include, len(files))
		}
		return nil, errors.New("the source has no files")
	}
	return out, nil
}

func matches(name string, include []string) bool {
	if len(include) == 0 {
		return true
	}
	for _, p := range include {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
		if ok, _ := path.Match(p, path.Base(name)); ok && !containsSlash(p) {
			return true
		}
	}
	return false
}

func containsSlash(s string) bool {
	for i := range len(s) {
		if s[i] == '/' {
			return true
		}
	}
	return false
}

func readManifest(dest string) *Manifest {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dest, ManifestName))
	if err != nil || json.Unmarshal(b, &m) != nil {
		return &Manifest{}
	}
	return &m
}

func (m *Manifest) find(name string) (ManifestFile, bool) {
	for _, f := range m.Files {
		if f.Name == name {
			return f, true
		}
	}
	return ManifestFile{}, false
}

// upToDate: the file is in place with the manifest's size, and the
// manifest's checksum is the one the source publishes (when it does).
func upToDate(dest string, f remote, mf ManifestFile) bool {
	fi, err := os.Stat(filepath.Join(dest, filepath.FromSlash(f.name)))
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != mf.Size {
		return false
	}
	if f.size >= 0 && f.size != mf.Size {
		return false
	}
	return f.sha256 == "" || f.sha256 == mf.SHA256
}

// partialBytes is how much of f an interrupted download left that this
// run will keep (per its saved state; the partial file itself is sparse).
func partialBytes(dest string, f remote, o *Options) int64 {
	st, ok := loadPartial(filepath.Join(dest, partialDir, filepath.FromSlash(f.name)+".part"), f, partSizeFor(f, o))
	if !ok {
		return 0
	}
	var n int64
	for _, d := range st.Done {
		n += max(d, 0)
	}
	return min(n, f.size)
}

func writeManifest(dest string, m *Manifest) error {
	slices.SortFunc(m.Files, func(a, b ManifestFile) int { return cmpString(a.Name, b.Name) })
	m.Updated = time.Now().UTC()
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dest, ManifestName), append(b, '\n'))
}

// ErrNoSpace is in the chain of the error a pull returns when the
// destination's free space is less than the files need (errors.Is).
var ErrNoSpace = errors.New("not enough space")

// checkSpace refuses to start when need bytes (what the files lack, parts
// already on disk counted as fetched) do not fit in dest's free space.
func checkSpace(dest string, need int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dest, &st); err != nil {
		return nil //nolint:nilerr // no way to know the free space: the writes will tell
	}
	free := int64(st.Bavail) * st.Bsize //nolint:gosec // block counts fit in int64
	if need > free {
		return fmt.Errorf("%w in %s: the files need %s more, %s is free", ErrNoSpace, dest, humanBytes(need), humanBytes(free))
	}
	return nil
}
