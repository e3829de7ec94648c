package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/leo-operator/leo/internal/s3test"
)

// TestBatchRemoteInputs scores inputs fetched first: one CSV file over
// HTTPS (a TLS server the worker trusts through SSL_CERT_FILE, as a pod
// trusts its cluster's CA), and a folder under an S3 prefix (a real S3
// server, versitygw). The worker runs as its own process, so that it
// reads the certificate and the AWS variables as a pod would.
func TestBatchRemoteInputs(t *testing.T) {
	model := testModel(t)
	csv := "id,input_string\n0,Once upon a time\n1,\"The cat, the dog\"\n"
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/data/prompts.csv" {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "prompts.csv", time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC), strings.NewReader(csv))
	}))
	defer srv.Close()
	certFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	worker := func(env []string, args ...string) string {
		t.Helper()
		out := filepath.Join(t.TempDir(), "out")
		cmd := exec.Command(os.Args[0], append([]string{"batch", "--model", model, "--output", out, "--result-file", "",
			"--max-new-tokens", "3", "--logging-level", "warning"}, args...)...)
		cmd.Env = append(append(os.Environ(), "LEO_RUNTIME_MAIN=1"), env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("batch %v: %v\n%s", args, err, stderr.String())
		}
		preds, err := os.ReadFile(filepath.Join(out, "predictions.csv"))
		if err != nil {
			t.Fatal(err)
		}
		return string(preds)
	}

	preds := worker([]string{"SSL_CERT_FILE=" + certFile}, "--input", srv.URL+"/data/prompts.csv", "--input-type", "uri_file")
	lines := strings.Split(strings.TrimSpace(preds), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "0,") || !strings.HasSuffix(lines[0], ",prompts.csv") || !strings.HasPrefix(lines[1], "1,") {
		t.Errorf("predictions of the https input:\n%s", preds)
	}

	s := s3test.Start(t)
	ctx := context.Background()
	if err := s.Client.MakeBucket(ctx, "reviews", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"2026-11/a.csv": csv, "2026-11/b.jsonl": `{"input_string": "Hello"}` + "\n"} {
		if _, err := s.Client.PutObject(ctx, "reviews", name, strings.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	preds = worker([]string{"AWS_ENDPOINT_URL=" + s.Endpoint, "AWS_ACCESS_KEY_ID=" + s3test.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3test.SecretKey},
		"--input", "s3://reviews/2026-11", "--allow-http")
	lines = strings.Split(strings.TrimSpace(preds), "\n")
	if len(lines) != 3 || !strings.HasSuffix(lines[0], ",a.csv") || !strings.HasSuffix(lines[2], ",b.jsonl") {
		t.Errorf("predictions of the S3 folder (a.csv's 2 rows, then b.jsonl's 1):\n%s", preds)
	}
}
