package fetch

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/leo-operator/leo/internal/hubtest"
	"github.com/leo-operator/leo/internal/s3test"
)

// s3Store starts versitygw once for this test binary's S3 tests, with the
// checkpoint under s3://models/tiny/.
func s3Store(t *testing.T) (*s3test.Store, []hubtest.File) {
	t.Helper()
	s := s3test.Start(t)
	files := checkpoint(t)
	ctx := context.Background()
	if err := s.Client.MakeBucket(ctx, "models", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if _, err := s.Client.PutObject(ctx, "models", "tiny/"+f.Path, bytes.NewReader(f.Data), int64(len(f.Data)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A neighbour that shares the prefix's first letters: not part of it.
	if _, err := s.Client.PutObject(ctx, "models", "tiny-v2/x.bin", bytes.NewReader([]byte("x")), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	return s, files
}

func s3Options(endpoint string, rep Reporter) Options {
	return Options{S3Endpoint: endpoint, S3AccessKey: s3test.AccessKey, S3SecretKey: s3test.SecretKey, AllowHTTP: true,
		PartSize: 256 << 10, Connections: 4, Backoff: 5 * time.Millisecond, StallTimeout: 5 * time.Second, Report: rep}
}

// TestS3 pulls from a real S3 server (versitygw), directly and through a
// proxy that injects faults.
func TestS3(t *testing.T) {
	store, files := s3Store(t)
	ctx := context.Background()

	t.Run("prefix", func(t *testing.T) {
		src, _ := ParseSource("s3://models/tiny", false)
		dest := t.TempDir()
		res, err := Pull(ctx, src, dest, s3Options(store.Endpoint, nil))
		if err != nil {
			t.Fatal(err)
		}
		checkDest(t, dest, files)
		if res.Transferred != totalSize(files) {
			t.Errorf("transferred %d, want %d", res.Transferred, totalSize(files))
		}
	})
	t.Run("one object", func(t *testing.T) {
		src, _ := ParseSource("s3://models/tiny/config.json", false)
		dest := t.TempDir()
		if _, err := Pull(ctx, src, dest, s3Options(store.Endpoint, nil)); err != nil {
			t.Fatal(err)
		}
		checkDest(t, dest, files[:1])
	})
	t.Run("errors", func(t *testing.T) {
		o := s3Options(store.Endpoint, nil)
		o.S3SecretKey = "wrong"
		src, _ := ParseSource("s3://models/tiny", false)
		if _, err := Pull(ctx, src, t.TempDir(), o); err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "credentials") {
			t.Errorf("a wrong secret: %v", err)
		}
		src, _ = ParseSource("s3://no-such-bucket/x", false)
		if _, err := Pull(ctx, src, t.TempDir(), s3Options(store.Endpoint, nil)); err == nil || !strings.Contains(err.Error(), "404") {
			t.Errorf("a missing bucket: %v", err)
		}
		o = s3Options(store.Endpoint, nil)
		o.AllowHTTP = false
		if _, err := Pull(ctx, src, t.TempDir(), o); err == nil || !strings.Contains(err.Error(), "allow-http") {
			t.Errorf("a plain-http endpoint without --allow-http: %v", err)
		}
	})

	big := files[1]
	key := "models/tiny/" + big.Path
	size := int64(len(big.Data))
	for _, c := range []struct {
		name  string
		fault func(n int) s3test.Fault
		sent  int64
		retry string
	}{
		{"cut mid-part", func(n int) s3test.Fault {
			if n%3 == 0 {
				return s3test.Fault{CutAfter: 100 << 10}
			}
			return s3test.Fault{}
		}, size, ""},
		{"5xx", func(n int) s3test.Fault {
			if n < 3 {
				return s3test.Fault{Status: http.StatusServiceUnavailable}
			}
			return s3test.Fault{}
		}, size, ""},
		{"stall", func(n int) s3test.Fault {
			if n < 2 {
				return s3test.Fault{StallAfter: 50 << 10}
			}
			return s3test.Fault{}
		}, size, "stalled"},
		{"corrupt byte", func(n int) s3test.Fault {
			return s3test.Fault{Corrupt: n < 16, CorruptAt: size / 3}
		}, 2 * size, "MD5"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := s3test.NewProxy(t, store)
			p.Fault = func(k string, n int) s3test.Fault {
				if k != key {
					return s3test.Fault{}
				}
				return c.fault(n)
			}
			var ev events
			o := s3Options(p.URL, &ev)
			if c.name == "stall" {
				o.StallTimeout = 300 * time.Millisecond
			}
			src, _ := ParseSource("s3://models/tiny/"+big.Path, false)
			dest := t.TempDir()
			if _, err := Pull(ctx, src, dest, o); err != nil {
				t.Fatal(err)
			}
			checkDest(t, dest, []hubtest.File{big})
			if got := p.Sent(); got < c.sent || got > c.sent+c.sent/20 {
				t.Errorf("the proxy sent %d bytes, want %d (within 5%%)", got, c.sent)
			}
			if c.retry != "" {
				found := false
				for _, r := range ev.kinds("retry") {
					found = found || strings.Contains(r.Error, c.retry)
				}
				if !found {
					t.Errorf("no retry event mentions %q: %+v", c.retry, ev.kinds("retry"))
				}
			}
		})
	}

	t.Run("resume", func(t *testing.T) {
		p := s3test.NewProxy(t, store)
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		p.Fault = func(string, int) s3test.Fault {
			if p.Sent() > size/2 {
				cancel()
			}
			return s3test.Fault{}
		}
		src, _ := ParseSource("s3://models/tiny/"+big.Path, false)
		dest := t.TempDir()
		if _, err := Pull(cctx, src, dest, s3Options(p.URL, nil)); !errors.Is(err, context.Canceled) {
			t.Fatalf("the interrupted pull: %v", err)
		}
		var ev events
		res, err := Pull(ctx, src, dest, s3Options(store.Endpoint, &ev))
		if err != nil {
			t.Fatal(err)
		}
		checkDest(t, dest, []hubtest.File{big})
		present := ev.kinds("start")[0].BytesPresent
		if present <= 0 || res.Transferred != size-present {
			t.Errorf("resumed: %d bytes were on disk; the pull fetched %d of %d", present, res.Transferred, size)
		}
	})
}
