package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leo-operator/leo/internal/hfgen"
	"github.com/leo-operator/leo/internal/hubtest"
)

const testCommit = "89abcdef0123456789abcdef0123456789abcdef"

// jsonEvents parses pull's JSON-lines progress.
func jsonEvents(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "{") {
			continue // the error line main prints
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("a progress line is not JSON: %q", line)
		}
		out = append(out, e)
	}
	return out
}

func eventsOf(evs []map[string]any, kind string) []map[string]any {
	var out []map[string]any
	for _, e := range evs {
		if e["event"] == kind {
			out = append(out, e)
		}
	}
	return out
}

func checkpointRepo(t *testing.T, token string) (*hubtest.Repo, []hubtest.File) {
	t.Helper()
	files, err := hubtest.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	return &hubtest.Repo{ID: "leo/tiny", Commit: testCommit, Files: files, Token: token}, files
}

func checkFiles(t *testing.T, dir string, files []hubtest.File) {
	t.Helper()
	for _, f := range files {
		got, err := os.ReadFile(filepath.Join(dir, f.Path))
		if err != nil || !bytes.Equal(got, f.Data) {
			t.Fatalf("%s: not the source's bytes (%v)", f.Path, err)
		}
	}
}

func TestPull(t *testing.T) {
	repo, files := checkpointRepo(t, "hf_test")
	s := hubtest.NewPlain(repo)
	defer s.Close()
	t.Setenv("HF_ENDPOINT", s.URL)
	dest := t.TempDir()

	// Gated: a clear failure, and a last JSON line the operator can show.
	code, _, stderr := cli(t, "pull", "hf://leo/tiny", dest, "--allow-http")
	evs := jsonEvents(t, stderr)
	if code != 1 || len(evs) == 0 || evs[len(evs)-1]["event"] != "error" || !strings.Contains(evs[len(evs)-1]["error"].(string), "HF_TOKEN") {
		t.Fatalf("without a token: exit %d, stderr %s", code, stderr)
	}

	t.Setenv("HF_TOKEN", "hf_test")
	stdout, stderr := mustCLI(t, "pull", "hf://leo/tiny@main", dest, "--include", "*.safetensors", "--allow-http", "--include", "tokenizer.model", "--part-size-mib", "1")
	checkFiles(t, dest, files[1:3])
	checkFiles(t, dest, files[4:5])
	if _, err := os.Stat(filepath.Join(dest, "config.json")); err == nil {
		t.Error("config.json was fetched without matching --include")
	}
	evs = jsonEvents(t, stderr)
	start, verified, done := eventsOf(evs, "start"), eventsOf(evs, "verified"), eventsOf(evs, "done")
	if len(start) != 1 || start[0]["files"] != 3.0 || len(verified) != 3 || len(done) != 1 {
		t.Fatalf("events: %s", stderr)
	}
	if !strings.Contains(stdout, "3 files") {
		t.Errorf("stdout %q", stdout)
	}
	var m struct {
		Revision string `json:"revision"`
		Files    []struct {
			Name   string `json:"name"`
			SHA256 string `json:"sha256"`
		} `json:"files"`
	}
	b, err := os.ReadFile(filepath.Join(dest, "leo-manifest.json"))
	if err != nil || json.Unmarshal(b, &m) != nil || m.Revision != testCommit || len(m.Files) != 3 {
		t.Fatalf("manifest %s (%v)", b, err)
	}

	// Usage errors exit 2 and say what is wrong.
	for _, args := range [][]string{{"pull", "hf://leo/tiny"}, {"pull", "ftp://x/y", dest}, {"pull", "hf://leo/tiny", "-", "--allow-http"}} {
		if code, _, stderr := cli(t, args...); code != 2 || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
}

// TestPullKilled kills a pull (SIGKILL, as a node's OOM killer or an
// evicted pod does) half way, then runs it again: the second run fetches
// only what the first did not save.
func TestPullKilled(t *testing.T) {
	repo, files := checkpointRepo(t, "")
	s := hubtest.NewPlain(repo)
	defer s.Close()
	s.Fault = func(hubtest.Request) hubtest.Fault { return hubtest.Fault{Delay: 50 * time.Millisecond} } // a slow link
	var size int64
	for _, f := range files {
		size += int64(len(f.Data))
	}
	dest := t.TempDir()
	cmd := exec.Command(os.Args[0], "pull", "hf://leo/tiny", dest, "--allow-http", "--part-size-mib", "1")
	cmd.Env = append(os.Environ(), "LEO_RUNTIME_MAIN=1", "HF_ENDPOINT="+s.URL)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once it has saved the state of a partial download (it
	// does so every second), with more than a third of the bytes sent.
	deadline := time.Now().Add(time.Minute)
	for (s.Sent() < size/3 || !savedPartial(dest)) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if s.Sent() >= size {
		t.Fatalf("the first pull finished (%d of %d bytes) before it was killed: the link is too fast for this test", s.Sent(), size)
	}
	s.Fault = nil
	t.Setenv("HF_ENDPOINT", s.URL)
	_, stderr := mustCLI(t, "pull", "hf://leo/tiny", dest, "--allow-http", "--part-size-mib", "1")
	checkFiles(t, dest, files)
	evs := jsonEvents(t, stderr)
	start, done := eventsOf(evs, "start"), eventsOf(evs, "done")
	if len(start) != 1 || len(done) != 1 {
		t.Fatalf("events: %s", stderr)
	}
	present, _ := start[0]["bytes_present"].(float64)
	fetched, _ := done[0]["bytes_done"].(float64)
	if present <= 0 || int64(present)+int64(fetched) != size {
		t.Errorf("the second pull found %.0f bytes and fetched %.0f; the files are %d", present, fetched, size)
	}
	t.Logf("killed after the server sent over a third; the restart found %.0f of %d bytes on disk and fetched %.0f", present, size, fetched)
}

// savedPartial: dest holds a partial download's saved state with bytes.
func savedPartial(dest string) bool {
	states, _ := filepath.Glob(filepath.Join(dest, ".leo-partial", "*.part.json"))
	for _, p := range states {
		var st struct{ Done []int64 }
		if b, err := os.ReadFile(p); err == nil && json.Unmarshal(b, &st) == nil {
			for _, d := range st.Done {
				if d > 0 {
					return true
				}
			}
		}
	}
	return false
}

// TestWeightsPipeline runs what a LlamaModel's Job runs: pull a Hugging
// Face checkpoint from the Hub, convert it, quantize it, inspect it; then
// generates from the result.
func TestWeightsPipeline(t *testing.T) {
	s := smallCheckpointHub(t)
	defer s.Close()
	t.Setenv("HF_ENDPOINT", s.URL)
	dir := t.TempDir()
	ck := filepath.Join(dir, "checkpoint")
	mustCLI(t, "pull", "hf://leo/small-gqa", ck, "--allow-http", "--include", "*.safetensors", "--include", "*.json", "--include", "tokenizer.model")
	bf16 := filepath.Join(dir, "model-bf16.gguf")
	mustCLI(t, "convert", "--hf", ck, "-o", bf16)
	q8 := filepath.Join(dir, "model-q8_0.gguf")
	report, _ := mustCLI(t, "quantize", bf16, q8, "--type", "q8_0")
	if !strings.Contains(report, "BF16   Q8_0") {
		t.Errorf("quantize report:\n%s", report)
	}
	out, _ := mustCLI(t, "inspect", "--json", q8)
	var facts modelFacts
	if err := json.Unmarshal([]byte(out), &facts); err != nil {
		t.Fatal(err)
	}
	if facts.FileType != "Q8_0" || facts.Heads != 4 || facts.KVHeads != 2 || facts.Layers != 2 || facts.VocabSize != 32000 {
		t.Errorf("facts %+v", facts)
	}
	gen, _ := mustCLI(t, "generate", "--model", q8, "--prompt", "Once upon a time", "--max-new-tokens", "8", "--ignore-eos")
	if strings.TrimSpace(gen) == "" {
		t.Error("the converted model generated nothing")
	}
}

// smallCheckpointHub serves a small Hugging Face Llama checkpoint (BF16
// safetensors, GQA) as the Hub repository leo/small-gqa at testCommit.
func smallCheckpointHub(t *testing.T) *hubtest.Server {
	t.Helper()
	src := t.TempDir()
	if err := hfgen.Small(11, false).Write(src, "BF16"); err != nil {
		t.Fatal(err)
	}
	var files []hubtest.File
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, hubtest.File{Path: e.Name(), Data: b})
	}
	return hubtest.NewPlain(&hubtest.Repo{ID: "leo/small-gqa", Commit: testCommit, Files: files})
}
