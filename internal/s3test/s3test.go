// Package s3test runs a real S3-compatible store for tests: SeaweedFS's
// weed (built from the Go module proxy by hack/seaweedfs/build.sh, or the
// binary $WEED names), on loopback ports, with one identity. Proxy puts a
// fault-injecting HTTP proxy in front of it.
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

// Keys of the store's one identity.
const (
	AccessKey = "leo-test-access"
	SecretKey = "leo-test-secret-key-0123456789"
)

// Store is a running weed server.
type Store struct {
	Endpoint string // http://127.0.0.1:PORT (the S3 API)
	Client   *minio.Client
	cmd      *exec.Cmd
	log      *bytes.Buffer
}

var binary = sync.OnceValues(func() (string, error) {
	if p := os.Getenv("WEED"); p != "" {
		return p, nil
	}
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "hack", "seaweedfs", "build.sh")
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

// freePorts returns n loopback ports that are free now, each with port +
// 10000 free too (weed's gRPC ports).
func freePorts(n int) ([]int, error) {
	var ports []int
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		if p+10000 > 65535 {
			_ = l.Close()
			continue
		}
		g, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+10000))
		if err != nil {
			_ = l.Close()
			continue
		}
		held = append(held, l, g)
		ports = append(ports, p)
	}
	return ports, nil
}

// Start runs weed server (master, volume, filer, S3) in a temporary
// directory until the test ends, and waits until its S3 API answers.
func Start(t testing.TB) *Store {
	t.Helper()
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(cfg, []byte(`{"identities":[{"name":"leo","credentials":[{"accessKey":"`+AccessKey+`","secretKey":"`+SecretKey+`"}],"actions":["Admin","Read","List","Tagging","Write"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ports, err := freePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &Store{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", ports[3]), log: &bytes.Buffer{}}
	s.cmd = exec.Command(bin, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir="+data,
		fmt.Sprintf("-master.port=%d", ports[0]), fmt.Sprintf("-volume.port=%d", ports[1]),
		fmt.Sprintf("-filer.port=%d", ports[2]), "-s3", fmt.Sprintf("-s3.port=%d", ports[3]), "-s3.config="+cfg,
		"-master.volumeSizeLimitMB=64", "-volume.max=8")
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		if t.Failed() {
			t.Logf("weed's log:\n%s", tail(s.log.String(), 4000))
		}
	})
	s.Client, err = minio.New(strings.TrimPrefix(s.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""), BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Ready when a bucket can be made (the filer and a volume are up).
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
			t.Fatalf("weed's S3 API at %s did not come up: %v\n%s", s.Endpoint, err, tail(s.log.String(), 4000))
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
