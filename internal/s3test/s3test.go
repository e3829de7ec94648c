// Package s3test runs a real S3 server for tests: Versity's S3 gateway,
// versitygw (built from the Go module proxy by hack/versitygw/build.sh, or
// the binary $VERSITYGW names), serving a temporary directory on a
// loopback port, with one account. Proxy puts a fault-injecting HTTP proxy
// in front of it.
package s3test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Keys of the server's one account.
const (
	AccessKey = "leo-test-access"
	SecretKey = "leo-test-secret-key-0123456789"
)

// Store is a running versitygw.
type Store struct {
	Endpoint string // http://127.0.0.1:PORT (the S3 API)
	Client   *minio.Client
	cmd      *exec.Cmd
	log      *bytes.Buffer
}

var binary = sync.OnceValues(func() (string, error) {
	if p := os.Getenv("VERSITYGW"); p != "" {
		return p, nil
	}
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "hack", "versitygw", "build.sh")
	out, err := exec.Command(script).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("%s: %w\n%s", script, err, ee.Stderr)
		}
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
})

// freePort returns a loopback port that is free now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start runs versitygw's POSIX backend over a temporary directory until
// the test ends, and waits until its S3 API answers. Object metadata goes
// to a sidecar directory, so the temporary directory's file system need
// not support extended attributes.
func Start(t testing.TB) *Store {
	t.Helper()
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	data, meta := filepath.Join(dir, "data"), filepath.Join(dir, "meta")
	for _, d := range []string{data, meta} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), log: &bytes.Buffer{}}
	s.cmd = exec.Command(bin, "--access", AccessKey, "--secret", SecretKey, "--port", fmt.Sprintf("127.0.0.1:%d", port),
		"posix", "--sidecar", meta, data)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		if t.Failed() {
			t.Logf("versitygw's log:\n%s", tail(s.log.String(), 4000))
		}
	})
	s.Client, err = minio.New(strings.TrimPrefix(s.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""), BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Ready when a bucket can be made and written to.
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = s.Client.MakeBucket(ctx, "ready-check", minio.MakeBucketOptions{})
		if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
			err = nil // made by an earlier try whose answer was lost
		}
		if err == nil {
			_, err = s.Client.PutObject(ctx, "ready-check", "x", bytes.NewReader([]byte("x")), 1, minio.PutObjectOptions{})
		}
		cancel()
		if err == nil {
			return s
		}
		if time.Now().After(deadline) || s.cmd.ProcessState != nil {
			t.Fatalf("versitygw's S3 API at %s did not come up: %v\n%s", s.Endpoint, err, tail(s.log.String(), 4000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
