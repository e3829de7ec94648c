package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// hubInfo is the part of the Hub's model info
// (GET /api/models/{repo}/revision/{rev}?blobs=true) that a download needs.
type hubInfo struct {
	SHA      string `json:"sha"` // the commit the revision resolves to
	Siblings []struct {
		RFilename string `json:"rfilename"`
		Size      *int64 `json:"size"`
		BlobID    string `json:"blobId"`
		LFS       *struct {
			SHA256 string `json:"sha256"`
			Size   int64  `json:"size"`
		} `json:"lfs"`
	} `json:"siblings"`
}

// listHub lists a Hub revision's files, pinned to the commit the revision
// resolves to (a branch that moves during the pull does not mix commits),
// with the checksums the Hub publishes: LFS files' SHA-256, other files'
// git blob ids.
func listHub(ctx context.Context, o *Options, src Source) (string, []remote, error) {
	base, err := url.Parse(strings.TrimSuffix(o.Endpoint, "/"))
	if err != nil || base.Host == "" || (base.Scheme != "https" && base.Scheme != "http") {
		return "", nil, fmt.Errorf("bad Hub endpoint %q (HF_ENDPOINT): want https://host", o.Endpoint)
	}
	if base.Scheme == "http" && !o.AllowHTTP {
		return "", nil, fmt.Errorf("the Hub endpoint %s is plain http; use https, or allow http explicitly (--allow-http)", o.Endpoint)
	}
	header := http.Header{}
	if o.Token != "" {
		header.Set("Authorization", "Bearer "+o.Token)
	}
	api := base.String() + "/api/models/" + src.Repo + "/revision/" + url.PathEscape(src.Revision) + "?blobs=true"
	var info hubInfo
	err = withRetries(ctx, o, "listing the repository", func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, api, nil)
		if err != nil {
			return permanent("%v", err)
		}
		req.Header = header.Clone()
		resp, err := o.Client.Do(req)
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		if err := statusError(resp, redactURL(api)); err != nil {
			return err
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&info); err != nil {
			return permanent("the Hub's answer to %s is not model info: %v", redactURL(api), err)
		}
		return nil
	})
	if err != nil {
		return "", nil, err
	}
	if !isHex(info.SHA, 40) {
		return "", nil, fmt.Errorf("the Hub did not say which commit %q is (sha %q)", src.Revision, info.SHA)
	}
	var files []remote
	for _, s := range info.Siblings {
		r := remote{name: s.RFilename, size: -1}
		switch {
		case s.LFS != nil:
			if !isHex(s.LFS.SHA256, 64) {
				return "", nil, fmt.Errorf("the Hub lists %s with a bad LFS sha256 %q", s.RFilename, s.LFS.SHA256)
			}
			r.size, r.sha256 = s.LFS.Size, s.LFS.SHA256
		case s.Size != nil:
			r.size = *s.Size
			if isHex(s.BlobID, 40) {
				r.gitSHA1 = s.BlobID
			}
		}
		u := base.String() + "/" + src.Repo + "/resolve/" + info.SHA + "/" + escapePath(s.RFilename)
		// Sizes and checksums come from the listing; the commit pins the
		// bytes, so the sha256 (or blob id) is the identity to resume by.
		g := &httpGetter{client: o.Client, url: u, header: header, size: r.size, canRange: r.size >= 0}
		r.get = &hubGetter{httpGetter: g, id: info.SHA + ":" + r.sha256 + r.gitSHA1}
		files = append(files, r)
	}
	return info.SHA, files, nil
}

// hubGetter is an httpGetter whose identity is the commit and checksum.
type hubGetter struct {
	*httpGetter
	id string
}

func (g *hubGetter) identity() string { return g.id }

func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// withRetries runs f until it succeeds, fails permanently, or fails
// Retries times.
func withRetries(ctx context.Context, o *Options, what string, f func(context.Context) error) error {
	for n := 1; ; n++ {
		actx, cancel := context.WithTimeout(ctx, o.StallTimeout)
		err := f(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if isPermanent(err) || n >= o.Retries {
			return err
		}
		delay := backoff(o.Backoff, n)
		var ra *retryAfterError
		if errors.As(err, &ra) && ra.after > delay {
			delay = min(ra.after, 5*time.Minute)
		}
		o.Report.Event(Event{Kind: "retry", File: what, Attempt: n, Error: err.Error(), RetryIn: delay.Seconds()})
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// listHTTPS is the one file of an https source, named by the URL's last
// path element.
func listHTTPS(ctx context.Context, o *Options, src Source) ([]remote, error) {
	name, err := url.PathUnescape(src.URL.Path[strings.LastIndex(src.URL.Path, "/")+1:])
	if err != nil || !safeName(name) || strings.Contains(name, "/") {
		return nil, fmt.Errorf("the URL's last path element %q is not a usable file name", src.URL.Path)
	}
	var g *httpGetter
	err = withRetries(ctx, o, "asking for the file's size", func(ctx context.Context) error {
		var err error
		g, err = probeHTTP(ctx, o.Client, src.URL.String(), nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	return []remote{{name: name, size: g.size, get: g}}, nil
}

// fileGetter reads byte ranges of a local file.
type fileGetter struct {
	path string
	id   string
}

func (g *fileGetter) ranged() bool     { return true }
func (g *fileGetter) identity() string { return g.id }

func (g *fileGetter) get(_ context.Context, off, end int64) (io.ReadCloser, error) {
	f, err := os.Open(g.path)
	if err != nil {
		return nil, permanent("%v", err)
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		_ = f.Close()
		return nil, permanent("%v", err)
	}
	if end < 0 {
		return f, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, end-off), f}, nil
}

// listLocal lists a file, or every regular file under a directory (but a
// manifest and partial downloads of an earlier pull).
func listLocal(root string) ([]remote, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, err
	}
	id := func(p string, fi fs.FileInfo) string {
		return fmt.Sprintf("%s:%d:%d", p, fi.Size(), fi.ModTime().UnixNano())
	}
	if fi.Mode().IsRegular() {
		return []remote{{name: filepath.Base(root), size: fi.Size(), get: &fileGetter{root, id(root, fi)}}}, nil
	}
	var out []remote
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == partialDir {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || rel == ManifestName {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, remote{name: rel, size: info.Size(), get: &fileGetter{p, id(p, info)}})
		return nil
	})
	return out, err
}

// inPlace: a local source used where it is (no destination, or the
// destination is the source's own directory).
func inPlace(src, dest string) bool {
	if dest == "" {
		return true
	}
	a, err1 := filepath.Abs(src)
	b, err2 := filepath.Abs(dest)
	return err1 == nil && err2 == nil && a == b
}

// verifyInPlace hashes a local directory's (or file's) files and checks
// them against the manifest there, when there is one; it then writes the
// manifest. Nothing is copied.
func verifyInPlace(ctx context.Context, src Source, o *Options) (*Result, error) {
	start := time.Now()
	dir := src.Path
	if fi, err := os.Stat(dir); err == nil && fi.Mode().IsRegular() {
		dir = filepath.Dir(dir)
	}
	files, err := listLocal(src.Path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	files, err = selectFiles(files, o.Include)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	old := readManifest(dir)
	m := &Manifest{Source: src.String()}
	var total int64
	for _, f := range files {
		total += f.size
	}
	o.Report.Event(Event{Kind: "start", Source: m.Source, Files: len(files), BytesTotal: total})
	for _, f := range files {
		sum, err := hashFile(ctx, f.get.(*fileGetter).path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		if mf, ok := old.find(f.name); ok && (mf.SHA256 != sum || mf.Size != f.size) {
			return nil, fmt.Errorf("%s: %s does not match its manifest: SHA-256 %s and %d bytes, the manifest says %s and %d bytes", src, f.name, sum, f.size, mf.SHA256, mf.Size)
		}
		m.Files = append(m.Files, ManifestFile{Name: f.name, Size: f.size, SHA256: sum})
		o.Report.Event(Event{Kind: "verified", File: f.name, BytesTotal: f.size, SHA256: sum})
	}
	// A volume mounted read-only is checked all the same; the manifest is
	// then only returned.
	if err := writeManifest(dir, m); err != nil && !readOnly(err) {
		return nil, err
	}
	res := &Result{Manifest: m, Present: total, Elapsed: time.Since(start)}
	o.Report.Event(Event{Kind: "done", Files: len(m.Files), BytesTotal: total, BytesPresent: total, Seconds: res.Elapsed.Seconds(), Manifest: filepath.Join(dir, ManifestName)})
	return res, nil
}

func hashFile(ctx context.Context, p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	buf := make([]byte, 4<<20)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if errors.Is(err, io.EOF) {
			return hex.EncodeToString(h.Sum(nil)), nil
		}
		if err != nil {
			return "", err
		}
	}
}

// readOnly reports whether err says the file system refused a write
// (mounted read-only, or no permission).
func readOnly(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)
}
