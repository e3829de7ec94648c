// Command benchpull compares `leo-runtime pull` with curl on the same
// file from the same loopback HTTP server (make bench-pull): a 1 GiB file
// served by this process, each client run as its own process writing to
// disk, alternating, medians of the rounds. pull also checks the file's
// SHA-256 as it goes (curl does not), and uses its default four ranged
// connections.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/leo-operator/leo/internal/stats"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchpull:", err)
		os.Exit(1)
	}
}

func run() error {
	sizeMiB := flag.Int("size-mib", 1024, "size of the file served")
	rounds := flag.Int("rounds", 5, "runs of each client (alternating)")
	dir := flag.String("dir", "bin/bench/pull", "working directory (the served file is kept)")
	flag.Parse()
	if _, err := exec.LookPath("curl"); err != nil {
		return errors.New("curl is not installed (apt-get install -y curl)")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	bin := filepath.Join(*dir, "leo-runtime")
	build := exec.Command("go", "build", "-o", bin, "./cmd/leo-runtime")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building leo-runtime: %w", err)
	}
	src := filepath.Join(*dir, fmt.Sprintf("served-%dmib.bin", *sizeMiB))
	data, err := servedFile(src, int64(*sizeMiB)<<20)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:8])+`"`)
		http.ServeContent(w, r, "model.bin", time.Time{}, bytes.NewReader(data))
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Shutdown(context.Background()) }()
	url := "http://" + ln.Addr().String() + "/model.bin"
	fmt.Printf("file: %d MiB served from %s; %d rounds, alternating\n", *sizeMiB, url, *rounds)

	out := filepath.Join(*dir, "out")
	var curlS, pullS []float64
	for r := 0; r < *rounds; r++ {
		_ = os.RemoveAll(out)
		if err := os.MkdirAll(out, 0o755); err != nil {
			return err
		}
		d, err := timed(exec.Command("curl", "-sS", "--fail", "-o", filepath.Join(out, "model.bin"), url))
		if err != nil {
			return fmt.Errorf("curl: %w", err)
		}
		curlS = append(curlS, d)
		if err := check(filepath.Join(out, "model.bin"), sum[:]); err != nil {
			return fmt.Errorf("curl's file: %w", err)
		}
		_ = os.RemoveAll(out)
		d, err = timed(exec.Command(bin, "pull", url, out, "--allow-http", "--progress", "none"))
		if err != nil {
			return fmt.Errorf("leo-runtime pull: %w", err)
		}
		pullS = append(pullS, d)
		if err := check(filepath.Join(out, "model.bin"), sum[:]); err != nil {
			return fmt.Errorf("pull's file: %w", err)
		}
		mbs := func(s float64) float64 { return float64(len(data)) / s / 1e6 }
		fmt.Printf("round %d: curl %.2fs (%.0f MB/s), pull %.2fs (%.0f MB/s)\n", r+1, curlS[r], mbs(curlS[r]), pullS[r], mbs(pullS[r]))
	}
	_ = os.RemoveAll(out)
	c, p := stats.Median(curlS), stats.Median(pullS)
	fmt.Printf("median: curl %.0f MB/s, leo-runtime pull %.0f MB/s = %.0f%% of curl\n",
		float64(len(data))/c/1e6, float64(len(data))/p/1e6, 100*c/p)
	return nil
}

// servedFile returns size bytes of deterministic noise, cached in path.
func servedFile(path string, size int64) ([]byte, error) {
	if b, err := os.ReadFile(path); err == nil && int64(len(b)) == size {
		return b, nil
	}
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(7, 7))
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for k := 0; k < 8; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b, os.WriteFile(path, b, 0o644)
}

// timed runs cmd after flushing the page cache's dirty pages (the last
// run's file), so that each client starts with the disk idle.
func timed(cmd *exec.Cmd) (float64, error) {
	syscall.Sync()
	time.Sleep(time.Second)
	cmd.Stderr = os.Stderr
	start := time.Now()
	err := cmd.Run()
	return time.Since(start).Seconds(), err
}

func check(path string, want []byte) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	got := sha256.Sum256(b)
	if !bytes.Equal(got[:], want) {
		return errors.New("its SHA-256 differs from the served file's")
	}
	return nil
}
