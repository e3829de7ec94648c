package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/internal/hubtest"
	"github.com/leo-operator/leo/runtime/gguf"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/synth"
)

// prepared is one run of leo-runtime prepare: its exit status, output,
// result file and JSON lines.
type prepared struct {
	code           int
	stdout, stderr string
	raw            []byte // the result file
	result         prepareResult
	events         []map[string]any
}

// runPrepareCLI runs leo-runtime prepare with args and a result file, and
// checks what every run must give: each stderr line that is not the final
// error message is a JSON object under 1 KiB, the last of them the result
// event, equal to the result file.
func runPrepareCLI(t *testing.T, args ...string) prepared {
	t.Helper()
	resultFile := filepath.Join(t.TempDir(), "termination-log")
	code, stdout, stderr := cli(t, append([]string{"prepare", "--result-file", resultFile}, args...)...)
	p := prepared{code: code, stdout: stdout, stderr: stderr}
	var err error
	if p.raw, err = os.ReadFile(resultFile); err != nil {
		t.Fatalf("exit %d and no result file (%v); stderr:\n%s", code, err, stderr)
	}
	if len(p.raw) >= 4096 || bytes.ContainsRune(p.raw, '\n') {
		t.Errorf("the result is %d bytes, or not one line: %s", len(p.raw), p.raw)
	}
	dec := json.NewDecoder(bytes.NewReader(p.raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p.result); err != nil {
		t.Fatalf("result file %s: %v", p.raw, err)
	}
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "leo-runtime prepare: ") && code != 0 {
			continue // main's message for a failure
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("a stderr line is not JSON: %q", line)
		}
		if len(line) >= 1024 {
			t.Errorf("a line of %d bytes: %s", len(line), line)
		}
		if _, err := time.Parse(time.RFC3339Nano, e["time"].(string)); err != nil {
			t.Errorf("line without a time: %s", line)
		}
		p.events = append(p.events, e)
	}
	if len(p.events) == 0 || p.events[len(p.events)-1]["event"] != "result" {
		t.Fatalf("the last JSON line is not the result:\n%s", stderr)
	}
	last := p.events[len(p.events)-1]
	delete(last, "time")
	delete(last, "event")
	var fromFile map[string]any
	_ = json.Unmarshal(p.raw, &fromFile)
	if a, b := mustJSON(t, last), mustJSON(t, fromFile); a != b {
		t.Errorf("the result event %s differs from the result file %s", a, b)
	}
	return p
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// phases lists the phase events in order.
func (p prepared) phases() []string {
	var out []string
	for _, e := range eventsOf(p.events, "phase") {
		out = append(out, e["phase"].(string))
	}
	return out
}

// checkArtifact checks a successful result against the file itself: its
// size and SHA-256, and the facts inspect reads from it, as the
// operator's API types take them.
func checkArtifact(t *testing.T, p prepared, path, quantization, fileType string) {
	t.Helper()
	if p.code != 0 || p.result.Reason != "" || p.result.Artifact == nil || p.result.Model == nil {
		t.Fatalf("exit %d, result %s\nstderr:\n%s", p.code, p.raw, p.stderr)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := resultArtifact{Path: path, SizeBytes: int64(len(data)), SHA256: hubtest.SHA256(data), Format: "gguf", Quantization: quantization}
	if *p.result.Artifact != want {
		t.Errorf("artifact %+v, want %+v", *p.result.Artifact, want)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	facts, err := inspectFacts(path, f)
	if err != nil {
		t.Fatal(err)
	}
	if facts.FileType != fileType {
		t.Errorf("the artifact is mostly %s, want %s", facts.FileType, fileType)
	}
	// The result is what the operator's status types hold, field for field.
	var status struct {
		Artifact servingv1alpha1.ModelArtifact `json:"artifact"`
		Model    servingv1alpha1.ModelFacts    `json:"model"`
		Steps    []string                      `json:"steps"`
	}
	dec := json.NewDecoder(bytes.NewReader(p.raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&status); err != nil {
		t.Fatalf("the result does not fit the API's types: %v", err)
	}
	wantStatus := servingv1alpha1.ModelFacts{
		Architecture: "llama", ParameterCount: facts.Parameters, ContextLength: int32(facts.ContextLength), //nolint:gosec // small
		VocabSize: int32(facts.VocabSize), EmbeddingLength: int32(facts.Embedding), Layers: int32(facts.Layers), //nolint:gosec // small
		ChatTemplate: facts.ChatTemplate,
	}
	if status.Model != wantStatus || status.Artifact.SHA256 != want.SHA256 || status.Artifact.SizeBytes != want.SizeBytes ||
		status.Artifact.Quantization != servingv1alpha1.Quantization(quantization) || status.Artifact.Format != servingv1alpha1.ModelFormatGGUF {
		t.Errorf("as the API's types: %+v, want facts %+v", status, wantStatus)
	}
	if _, err := os.Stat(path + ".tmp"); err == nil {
		t.Error("the temporary artifact is left")
	}
}

func checkSteps(t *testing.T, p prepared, want ...string) {
	t.Helper()
	if !slices.Equal(p.result.Steps, want) {
		t.Errorf("steps %q, want %q", p.result.Steps, want)
	}
}

var ggufSource struct {
	once sync.Once
	data []byte
	err  error
}

// f16Model is a test-gqa model in F16 (about 33 MB), made once.
func f16Model(t *testing.T) []byte {
	t.Helper()
	ggufSource.once.Do(func() {
		vocab, err := synth.Llama2Vocab()
		if err != nil {
			ggufSource.err = err
			return
		}
		c, _ := synth.Shape("test-gqa")
		w, err := synth.NewWriter(synth.Options{Name: "test-gqa", Config: c, Type: quant.F16, Seed: 5, Vocab: vocab})
		if err != nil {
			ggufSource.err = err
			return
		}
		var buf bytes.Buffer
		if _, ggufSource.err = w.WriteTo(&buf); ggufSource.err == nil {
			ggufSource.data = buf.Bytes()
		}
	})
	if ggufSource.err != nil {
		t.Fatal(ggufSource.err)
	}
	return ggufSource.data
}

// ggufHub serves leo/gguf (model.gguf, a README) and leo/gated (the same,
// with a token).
func ggufHub(t *testing.T) (*hubtest.Server, []byte) {
	t.Helper()
	data := f16Model(t)
	files := []hubtest.File{{Path: "model.gguf", Data: data}, {Path: "README.md", Data: []byte("# test\n")}}
	s := hubtest.NewPlain(
		&hubtest.Repo{ID: "leo/gguf", Commit: testCommit, Files: files},
		&hubtest.Repo{ID: "leo/gated", Commit: testCommit, Files: files, Token: "hf_secret"},
	)
	t.Cleanup(s.Close)
	t.Setenv("HF_ENDPOINT", s.URL)
	t.Setenv("HF_TOKEN", "")
	return s, data
}

// TestPrepareGGUF: a GGUF file by https kept as it is, and one from the
// Hub quantized to Q8_0; then the same Job again, which finds its
// artifact made and asks the server nothing.
func TestPrepareGGUF(t *testing.T) {
	s, data := ggufHub(t)
	models := t.TempDir()

	// https, quantization none: the downloaded file is the artifact.
	file := filepath.Join(models, "plain", "model.gguf")
	p := runPrepareCLI(t, "--source", s.URL+"/leo/gguf/resolve/main/model.gguf", "--allow-http",
		"--dir", filepath.Join(models, "work-plain"), "--artifact", file)
	checkArtifact(t, p, file, "none", "F16")
	checkSteps(t, p, "download")
	if got, _ := os.ReadFile(file); !bytes.Equal(got, data) {
		t.Error("the artifact is not the source's bytes")
	}
	if !slices.Equal(p.phases(), []string{phaseDownloading, phaseInspecting}) {
		t.Errorf("phases %v", p.phases())
	}
	if len(eventsOf(p.events, "verified")) != 1 || len(eventsOf(p.events, "done")) != 1 {
		t.Errorf("the pull's events are missing:\n%s", p.stderr)
	}
	if !strings.Contains(p.stdout, file) || !strings.Contains(p.stdout, p.result.Artifact.SHA256) {
		t.Errorf("stdout %q", p.stdout)
	}

	// The Hub, quantized to Q8_0.
	file = filepath.Join(models, "model-q8_0.gguf")
	args := []string{"--source", "hf://leo/gguf", "--allow-http", "--include", "*.gguf", "--quantization", "q8_0", "--threads", "2",
		"--dir", filepath.Join(models, "work-q8_0"), "--artifact", file}
	p = runPrepareCLI(t, args...)
	checkArtifact(t, p, file, "q8_0", "Q8_0")
	checkSteps(t, p, "download", "quantize")
	if !slices.Equal(p.phases(), []string{phaseDownloading, phaseQuantizing, phaseInspecting}) {
		t.Errorf("phases %v", p.phases())
	}
	progress := eventsOf(p.events, "progress")
	if len(progress) == 0 || progress[len(progress)-1]["phase"] != phaseQuantizing || progress[len(progress)-1]["bytes_done"] != progress[len(progress)-1]["bytes_total"] {
		t.Errorf("no quantizing progress:\n%s", p.stderr)
	}
	first := p.result

	// Again: nothing fetched, nothing asked, the same result.
	asked, sent := len(s.AuthSeen()), s.Sent()
	p = runPrepareCLI(t, args...)
	checkArtifact(t, p, file, "q8_0", "Q8_0")
	if len(s.AuthSeen()) != asked || s.Sent() != sent {
		t.Errorf("the repeated prepare asked the server %d times and got %d bytes", len(s.AuthSeen())-asked, s.Sent()-sent)
	}
	checkSteps(t, p, "download", "quantize") // what made the artifact, not what this run did
	if *p.result.Artifact != *first.Artifact || *p.result.Model != *first.Model {
		t.Errorf("the repeated prepare says %s", p.raw)
	}
	if len(eventsOf(p.events, "cached")) != 1 || slices.Contains(p.phases(), phaseDownloading) || !strings.Contains(p.stdout, "already prepared") {
		t.Errorf("the repeated prepare did not say it found the artifact:\n%s\n%s", p.stderr, p.stdout)
	}

	// Another quantization into the same directory is not the same artifact.
	p = runPrepareCLI(t, "--source", "hf://leo/gguf", "--allow-http", "--include", "*.gguf", "--quantization", "q4_0",
		"--dir", filepath.Join(models, "work-q8_0"), "--artifact", file)
	checkArtifact(t, p, file, "q4_0", "Q4_0")
	if len(eventsOf(p.events, "cached")) != 0 || s.Sent() != sent {
		t.Errorf("q4_0 after q8_0: cached, or fetched %d bytes again", s.Sent()-sent)
	}
}

// TestPrepareHF: a Hugging Face checkpoint (BF16 safetensors) from the
// Hub, converted and quantized to Q4_0.
func TestPrepareHF(t *testing.T) {
	s := smallCheckpointHub(t)
	defer s.Close()
	t.Setenv("HF_ENDPOINT", s.URL)
	dir, file := t.TempDir(), filepath.Join(t.TempDir(), "small-q4_0.gguf")
	p := runPrepareCLI(t, "--source", "hf://leo/small-gqa@main", "--allow-http", "--quantization", "q4_0",
		"--dir", dir, "--artifact", file, "--timeout", "1m", "--stall-timeout", "10s")
	checkArtifact(t, p, file, "q4_0", "Q4_0")
	checkSteps(t, p, "download", "convert", "quantize")
	if !slices.Equal(p.phases(), []string{phaseDownloading, phaseConverting, phaseQuantizing, phaseInspecting}) {
		t.Errorf("phases %v", p.phases())
	}
	if e := eventsOf(p.events, "phase")[1]; e["format"] != "safetensors" {
		t.Errorf("converting event %v", e)
	}
	m := p.result.Model
	if m.Layers != 2 || m.VocabSize != 32000 || m.EmbeddingLength != 64 || m.ContextLength != 2048 || m.Architecture != "llama" || m.ParameterCount < 32000*64 {
		t.Errorf("facts %+v", *m)
	}
	if _, err := os.Stat(filepath.Join(dir, "converted.gguf")); err == nil {
		t.Error("the conversion is left after quantizing")
	}
	if _, err := os.Stat(filepath.Join(dir, "source", "config.json")); err != nil {
		t.Errorf("the download is not in DIR/source: %v", err)
	}
}

// TestPrepareFailures: each failure gives its reason in the result file
// and the last JSON line, and exit status 3 when retrying cannot help.
func TestPrepareFailures(t *testing.T) {
	s, data := ggufHub(t)
	local := t.TempDir()
	junk := filepath.Join(local, "junk.gguf")
	if err := os.WriteFile(junk, []byte("GGUF but not really a model file"), 0o644); err != nil {
		t.Fatal(err)
	}
	readme := filepath.Join(local, "only-readme")
	if err := os.MkdirAll(readme, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(readme, "README.md"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A Hub whose listing names an exabyte file.
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/api/") {
			t.Errorf("unexpected request %s", r.URL)
			return
		}
		_, _ = w.Write([]byte(`{"sha":"` + testCommit + `","siblings":[{"rfilename":"huge.gguf","size":1,"lfs":{"sha256":"` +
			strings.Repeat("0", 64) + `","size":1152921504606846976}}]}`))
	}))
	defer huge.Close()
	url := s.URL + "/leo/gguf/resolve/main/model.gguf"
	wrongSHA := strings.Repeat("ab", 32)

	for _, c := range []struct {
		name     string
		args     []string
		endpoint string
		stall    bool
		reason   string
		code     int
	}{
		{"gated", []string{"--source", "hf://leo/gated"}, "", false, reasonUnauthorized, 3},
		{"no such revision", []string{"--source", "hf://leo/gguf@v9"}, "", false, reasonNotFound, 3},
		{"no such file", []string{"--source", s.URL + "/leo/gguf/resolve/main/missing.gguf"}, "", false, reasonNotFound, 3},
		{"no such path", []string{"--source", "pvc://" + filepath.Join(local, "missing")}, "", false, reasonNotFound, 3},
		{"sha256", []string{"--source", url, "--sha256", wrongSHA}, "", false, reasonChecksumMismatch, 3},
		{"no space", []string{"--source", "hf://leo/huge"}, huge.URL, false, reasonNoSpace, 3},
		{"quantization", []string{"--source", url, "--quantization", "q6_k"}, "", false, reasonUnsupported, 3},
		{"format", []string{"--source", readme}, "", false, reasonUnsupported, 3},
		{"not a model", []string{"--source", junk}, "", false, reasonInvalidModel, 3},
		{"timeout", []string{"--source", url, "--timeout", "500ms"}, "", true, reasonTimeout, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.endpoint != "" {
				t.Setenv("HF_ENDPOINT", c.endpoint)
			}
			if c.stall {
				s.Fault = func(hubtest.Request) hubtest.Fault { return hubtest.Fault{StallAfter: 1000} }
				defer func() { s.Fault = nil }()
			}
			dir, file := t.TempDir(), filepath.Join(t.TempDir(), "model.gguf")
			p := runPrepareCLI(t, append(c.args, "--allow-http", "--dir", dir, "--artifact", file)...)
			if p.code != c.code || p.result.Reason != c.reason || p.result.Message == "" || p.result.Artifact != nil {
				t.Errorf("exit %d, result %s; want exit %d, reason %s\nstderr:\n%s", p.code, p.raw, c.code, c.reason, p.stderr)
			}
			if _, err := os.Stat(file); err == nil {
				t.Error("a failed prepare left an artifact")
			}
			if _, err := os.Stat(filepath.Join(dir, "source", "model.gguf")); c.reason == reasonChecksumMismatch && err == nil {
				t.Error("the file that failed its --sha256 is kept")
			}
			t.Logf("%s", p.raw)
		})
	}
	// The file that failed its --sha256 is not kept; with the right one
	// the same source is fine.
	dir, file := t.TempDir(), filepath.Join(t.TempDir(), "model.gguf")
	p := runPrepareCLI(t, "--source", url, "--allow-http", "--sha256", strings.ToUpper(hubtest.SHA256(data)), "--dir", dir, "--artifact", file)
	checkArtifact(t, p, file, "none", "F16")
}

func TestPrepareUsage(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"prepare", "--source", "hf://leo/x", "--dir", dir},
		{"prepare", "--source", "hf://leo/x", "--dir", dir, "--artifact", "m.gguf", "--format", "pickle"},
		{"prepare", "--source", "hf://leo/x", "--dir", dir, "--artifact", "m.gguf", "--sha256", "abc"},
		{"prepare", "--source", "hf://leo/x", "--dir", dir, "--artifact", "m.gguf", "--quantization", "q3"},
		{"prepare", "--source", "ftp://x/y", "--dir", dir, "--artifact", "m.gguf"},
		{"prepare", "--source", "hf://leo/x", "--dir", dir, "--artifact", "m.gguf", "extra"},
	} {
		if code, _, stderr := cli(t, args...); code != 2 || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
	// Flags from the environment, as the Job may set them.
	t.Setenv("LEO_FORMAT", "pickle")
	if code, _, stderr := cli(t, "prepare", "--source", "hf://leo/x", "--dir", dir, "--artifact", "m.gguf"); code != 2 || !strings.Contains(stderr, "--format") {
		t.Errorf("LEO_FORMAT=pickle: exit %d, stderr %q", code, stderr)
	}
}

// TestPrepareResultSize: a long message is cut so that the result stays
// small, whole UTF-8 and valid JSON.
func TestPrepareResultSize(t *testing.T) {
	for _, msg := range []string{strings.Repeat("é\"<\x01", 3000), strings.Repeat("x", 5000), "short"} {
		b := prepareResult{Reason: reasonDownloadFailed, Message: msg}.encode()
		var r prepareResult
		if len(b) > maxResultBytes || json.Unmarshal(b, &r) != nil || !utf8.ValidString(r.Message) || r.Reason != reasonDownloadFailed || r.Message == "" {
			t.Errorf("%d bytes: %s", len(b), b)
		}
		if len(msg) < 100 && r.Message != msg {
			t.Errorf("a short message was cut: %q", r.Message)
		}
	}
}
