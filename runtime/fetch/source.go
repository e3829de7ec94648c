// Package fetch downloads model files robustly: from the Hugging Face Hub
// (hf://org/repo[@revision]), from https:// URLs, from S3 and S3-compatible
// stores (s3://bucket/prefix), and from local paths (pvc:// or a plain
// path). Large files are fetched in parallel ranged
// parts; an interrupted download resumes from what is on disk; a request
// that fails, stalls or is cut off is retried with backoff; every file is
// checked against the checksum its source publishes, renamed into place
// only when whole, and recorded with its SHA-256 in a manifest next to the
// files. Progress goes to a Reporter (a bar on a terminal, JSON lines for
// the operator otherwise).
package fetch

import (
	"fmt"
	"net/url"
	"path"
	"strings"
)

// Kind is a source's scheme.
type Kind string

// The kinds of source.
const (
	HF    Kind = "hf"    // the Hugging Face Hub
	HTTPS Kind = "https" // one file by URL (http too when allowed)
	S3    Kind = "s3"    // objects of an S3 (or S3-compatible) bucket
	Local Kind = "local" // a path on a mounted volume (pvc:// or plain)
)

// Source is a parsed SOURCE argument.
type Source struct {
	Kind Kind
	// HF: the repository ("org/name") and revision (branch, tag or commit;
	// "main" when not given).
	Repo, Revision string
	// HTTPS: the URL.
	URL *url.URL
	// S3: the bucket and the key prefix (a key, or a "directory").
	Bucket, Prefix string
	// Local: the path (a file or a directory).
	Path string
}

func (s Source) String() string {
	switch s.Kind {
	case HF:
		return "hf://" + s.Repo + "@" + s.Revision
	case HTTPS:
		return s.URL.Redacted()
	case S3:
		return "s3://" + s.Bucket + "/" + s.Prefix
	default:
		return s.Path
	}
}

// ParseSource parses hf://org/repo[@revision], https://host/path (and
// http:// when allowHTTP), pvc://path and plain paths.
func ParseSource(s string, allowHTTP bool) (Source, error) {
	switch {
	case strings.HasPrefix(s, "hf://"):
		rest := strings.TrimPrefix(s, "hf://")
		repo, rev, hasRev := strings.Cut(rest, "@")
		if !hasRev {
			rev = "main"
		}
		parts := strings.Split(repo, "/")
		if len(parts) != 2 || !validRepoPart(parts[0]) || !validRepoPart(parts[1]) {
			return Source{}, fmt.Errorf("source %q: want hf://org/repo[@revision], with org and repo made of letters, digits, '-', '_' and '.'", s)
		}
		if rev == "" || strings.ContainsAny(rev, " \t\n?#") {
			return Source{}, fmt.Errorf("source %q: the revision after @ must be a branch, tag or commit", s)
		}
		return Source{Kind: HF, Repo: repo, Revision: rev}, nil
	case strings.HasPrefix(s, "https://"), strings.HasPrefix(s, "http://"):
		u, err := url.Parse(s)
		if err != nil {
			return Source{}, fmt.Errorf("source %q: %w", s, err)
		}
		if u.Host == "" || u.Path == "" || strings.HasSuffix(u.Path, "/") {
			return Source{}, fmt.Errorf("source %q: an https:// source must name one file", s)
		}
		if u.Scheme == "http" && !allowHTTP {
			return Source{}, fmt.Errorf("source %q: plain http is refused (nothing protects the bytes in transit); use https, or allow http explicitly (--allow-http)", s)
		}
		return Source{Kind: HTTPS, URL: u}, nil
	case strings.HasPrefix(s, "s3://"):
		bucket, prefix, _ := strings.Cut(strings.TrimPrefix(s, "s3://"), "/")
		if !validBucket(bucket) {
			return Source{}, fmt.Errorf("source %q: want s3://bucket[/prefix], the bucket 3-63 lowercase letters, digits, '.' and '-'", s)
		}
		if strings.Contains(prefix, "//") || strings.Contains("/"+prefix+"/", "/../") {
			return Source{}, fmt.Errorf("source %q: bad key prefix", s)
		}
		return Source{Kind: S3, Bucket: bucket, Prefix: prefix}, nil
	case strings.Contains(s, "://") && !strings.HasPrefix(s, "pvc://"):
		return Source{}, fmt.Errorf("source %q: unknown scheme; want hf://, https://, pvc:// or a path", s)
	}
	p := strings.TrimPrefix(s, "pvc://")
	if p == "" {
		return Source{}, fmt.Errorf("source %q: empty path", s)
	}
	return Source{Kind: Local, Path: p}, nil
}

func validRepoPart(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 96 {
		return false
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return false
		}
	}
	return true
}

func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 63 {
		return false
	}
	for _, r := range b {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.'
		if !ok {
			return false
		}
	}
	return true
}

// safeName reports whether a file name from a source is a relative path
// that stays inside the destination (no "..", no absolute path).
func safeName(name string) bool {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\\") || strings.ContainsRune(name, 0) {
		return false
	}
	return path.Clean(name) == name && name != "." && !strings.HasPrefix(name, "../") && name != ".."
}
