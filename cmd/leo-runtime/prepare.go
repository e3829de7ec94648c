package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/leo-operator/leo/runtime/convert"
	"github.com/leo-operator/leo/runtime/fetch"
	"github.com/leo-operator/leo/runtime/gguf"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/synth"
	"github.com/leo-operator/leo/runtime/tokenizer"
)

// prepare is the one command of a LlamaModel's download Job: pull, convert
// (when the source is not GGUF), quantize (when asked), inspect, and report
// the artifact and the model's facts where the operator reads them (the
// container's termination message, and a last JSON line on stderr).

// The reasons a prepare fails with, in its result. The first six are
// permanent: prepare exits with exitPermanent, and the Job's
// podFailurePolicy fails the Job at once instead of retrying.
const (
	reasonUnauthorized     = "Unauthorized"     // 401/403 from the Hub, an https server or S3
	reasonNotFound         = "NotFound"         // 404, or no such path
	reasonChecksumMismatch = "ChecksumMismatch" // the bytes are not the ones the source (or --sha256) names
	reasonNoSpace          = "NoSpace"          // the volume is too small
	reasonUnsupported      = "Unsupported"      // a format or quantization leo does not handle
	reasonInvalidModel     = "InvalidModel"     // files that do not parse as the model they claim to be
	reasonDownloadFailed   = "DownloadFailed"   // retries used up, the network
	reasonTimeout          = "Timeout"          // --timeout passed
	reasonFailed           = "Failed"           // anything else (an I/O error, a signal)
)

// exitPermanent is the exit status of a failure no retry can fix.
const exitPermanent = 3

// The steps of a prepare, as its phase events name them.
const (
	phaseDownloading = "downloading"
	phaseConverting  = "converting"
	phaseQuantizing  = "quantizing"
	phaseInspecting  = "inspecting"
)

// Limits of what prepare reports: the termination message Kubernetes keeps
// is at most 4096 bytes, and each progress line should stay under 1 KiB
// (the result event is the result with a time and an event name added).
const maxResultBytes = 900

// prepareError is a failed prepare: the reason its result gives, and the
// error.
type prepareError struct {
	reason string
	err    error
}

func (e *prepareError) Error() string { return e.err.Error() }
func (e *prepareError) Unwrap() error { return e.err }

func (e *prepareError) permanent() bool {
	switch e.reason {
	case reasonUnauthorized, reasonNotFound, reasonChecksumMismatch, reasonNoSpace, reasonUnsupported, reasonInvalidModel:
		return true
	}
	return false
}

func failf(reason, format string, args ...any) error {
	return &prepareError{reason, fmt.Errorf(format, args...)}
}

// exitCode is the exit status of a command that failed with err (not a
// usage error): exitPermanent for a failure no retry can fix (prepare's
// and batch's errors say so with a permanent method), 1 otherwise.
func exitCode(err error) int {
	var p interface{ permanent() bool }
	if errors.As(err, &p) && p.permanent() {
		return exitPermanent
	}
	return 1
}

// prepareResult is what prepare writes to --result-file and as its last
// event: the artifact and the model's facts (field names as the operator's
// ModelArtifact and ModelFacts in api/v1alpha1), or why it failed.
type prepareResult struct {
	Artifact *resultArtifact `json:"artifact,omitempty"`
	Model    *resultModel    `json:"model,omitempty"`
	// Steps are the steps that made the artifact (download, convert,
	// quantize), also when an earlier run made it.
	Steps   []string `json:"steps,omitempty"`
	Reason  string   `json:"reason,omitempty"`
	Message string   `json:"message,omitempty"`
}

type resultArtifact struct {
	Path         string `json:"path"`
	SizeBytes    int64  `json:"sizeBytes"`
	SHA256       string `json:"sha256"`
	Format       string `json:"format"`
	Quantization string `json:"quantization"`
}

type resultModel struct {
	Architecture    string `json:"architecture"`
	ParameterCount  int64  `json:"parameterCount"`
	ContextLength   int    `json:"contextLength"`
	VocabSize       int    `json:"vocabSize"`
	EmbeddingLength int    `json:"embeddingLength"`
	Layers          int    `json:"layers"`
	ChatTemplate    bool   `json:"chatTemplate"`
}

// encode marshals r compactly, cutting its message so that the whole stays
// within maxResultBytes.
func (r prepareResult) encode() []byte {
	b, _ := marshalCompact(r)
	for len(b) > maxResultBytes && r.Message != "" {
		// Each pass drops the excess, or half when escapes make the
		// excess more than the message.
		cut := len(r.Message) - (len(b) - maxResultBytes) - len("…")
		if cut <= 0 {
			cut = len(r.Message) / 2
		}
		for cut > 0 && !utf8.RuneStart(r.Message[cut]) {
			cut--
		}
		if cut == 0 {
			r.Message = ""
		} else {
			r.Message = strings.TrimSuffix(r.Message[:cut], "…") + "…"
		}
		b, _ = marshalCompact(r)
	}
	return b
}

func marshalCompact(v any) ([]byte, error) {
	var sb strings.Builder
	enc := json.NewEncoder(&sb)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return []byte(strings.TrimSuffix(sb.String(), "\n")), nil
}

// artifactRecord is DIR/artifact.json: what a finished prepare made, so
// that a repeated one (a retried or re-created Job) only checks it.
type artifactRecord struct {
	Source       string         `json:"source"`
	Include      []string       `json:"include,omitempty"`
	Format       string         `json:"format"`
	Quantization string         `json:"quantization"`
	Artifact     resultArtifact `json:"artifact"`
	Steps        []string       `json:"steps"`
}

const artifactRecordName = "artifact.json"

// prepareEvent is one of prepare's own JSON lines on stderr, shaped as the
// pull's (fetch.Event): phase, quantizing progress, cached.
type prepareEvent struct {
	Time         time.Time `json:"time"`
	Kind         string    `json:"event"`
	Phase        string    `json:"phase,omitempty"`
	Format       string    `json:"format,omitempty"`
	Quantization string    `json:"quantization,omitempty"`
	File         string    `json:"file,omitempty"`
	BytesDone    int64     `json:"bytes_done,omitempty"`
	BytesTotal   int64     `json:"bytes_total,omitempty"`
	SHA256       string    `json:"sha256,omitempty"`
}

// lockedWriter serializes whole writes: the pull's reporter and prepare's
// own events share stderr, a line per write.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (l *lockedWriter) event(e prepareEvent) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if b, err := json.Marshal(e); err == nil {
		_, _ = l.Write(append(b, '\n'))
	}
}

// result writes the result as an event: {"time":…,"event":"result", …}.
func (l *lockedWriter) result(b []byte) {
	head, _ := json.Marshal(struct {
		Time time.Time `json:"time"`
		Kind string    `json:"event"`
	}{time.Now().UTC(), "result"})
	line := string(head[:len(head)-1])
	if len(b) > 2 {
		line += "," + string(b[1:])
	} else {
		line += "}"
	}
	_, _ = l.Write([]byte(line + "\n"))
}

// quantizations are --quantization's values (as the API's Quantization).
var quantizations = []string{"none", "f16", "q8_0", "q4_0", "q4_k"}

// defaultResultFile is Kubernetes' termination message file when the
// process runs in a container that has one.
func defaultResultFile() string {
	const k8s = "/dev/termination-log"
	if _, err := os.Stat(k8s); err == nil {
		return k8s
	}
	return ""
}

func runPrepare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("prepare", flag.ContinueOnError)
	fs.Usage = func() {
		_, _ = fmt.Fprint(fs.Output(), `usage: leo-runtime prepare --source URI --dir DIR --artifact FILE [flags]

What a LlamaModel's download Job runs: downloads the source into DIR/source
(resuming what an earlier run left), converts it to GGUF when it is a Hugging
Face (safetensors) or llama2.c checkpoint, quantizes it when asked, inspects
it, and writes the artifact to FILE (by way of FILE.tmp). When DIR/artifact.json
says FILE is already made from the same source, nothing is fetched again.

Progress is JSON lines on stderr, the last one {"event":"result",...}; the same
result goes to --result-file: {"artifact":{...},"model":{...}} or
{"reason":"...","message":"..."}. Exit status: 0 done, 3 a failure no retry can
fix (Unauthorized, NotFound, ChecksumMismatch, NoSpace, Unsupported,
InvalidModel), 1 other failures (DownloadFailed, Timeout, Failed), 2 bad usage.

SOURCE (--source) is as pull takes it: hf://ORG/REPO[@REVISION], https://HOST/PATH,
s3://BUCKET[/PREFIX], pvc://PATH or PATH. Environment: HF_TOKEN, HF_ENDPOINT,
AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_SHARED_CREDENTIALS_FILE; and LEO_<FLAG> for each flag.

flags:
`)
		fs.PrintDefaults()
	}
	source := fs.String("source", "", "where the weights are: hf://ORG/REPO[@REV], https://…, s3://BUCKET/PREFIX, pvc://PATH or a path")
	dir := fs.String("dir", "", "working directory for this source and quantization: the download goes to DIR/source, the conversion to DIR/converted.gguf")
	artifactPath := fs.String("artifact", "", "the GGUF file to make (written as FILE.tmp, then renamed)")
	var include stringList
	fs.Var(&include, "include", "fetch only files matching this glob (repeatable; as pull's --include); default: all files")
	format := fs.String("format", "auto", "the source's format: auto, gguf, safetensors or llama2c")
	quantization := fs.String("quantization", "none", "weight type of the artifact: "+strings.Join(quantizations, ", ")+" (none keeps the source's)")
	wantSHA := fs.String("sha256", "", "expected SHA-256 (hex) of the downloaded file (a one-file source, or its one .gguf or llama2.c file)")
	allowHTTP := fs.Bool("allow-http", false, "allow plain-http sources and endpoints")
	stall := fs.Duration("stall-timeout", 60*time.Second, "retry a request that brings no byte for this long")
	timeout := fs.Duration("timeout", 2*time.Hour, "give up on the whole prepare (download, conversion, quantization) after this long (0: never)")
	threads := fs.Int("threads", 0, "quantization threads (0: all CPUs)")
	resultFile := fs.String("result-file", defaultResultFile(), "write the result JSON here (default /dev/termination-log when it exists; empty: nowhere)")
	if err := flagsFromEnv(fs); err != nil {
		return err
	}
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := required(map[string]string{"source": *source, "dir": *dir, "artifact": *artifactPath}); err != nil {
		return err
	}
	if !slices.Contains([]string{"auto", "gguf", "safetensors", "llama2c"}, *format) {
		return usagef("--format must be auto, gguf, safetensors or llama2c")
	}
	if *stall <= 0 || *timeout < 0 || *threads < 0 {
		return usagef("--stall-timeout must be positive, --timeout and --threads not negative")
	}
	*wantSHA, *quantization = strings.ToLower(*wantSHA), strings.ToLower(*quantization)
	if b, err := hex.DecodeString(*wantSHA); *wantSHA != "" && (err != nil || len(b) != sha256.Size) {
		return usagef("--sha256 must be 64 hex digits")
	}
	src, err := fetch.ParseSource(*source, *allowHTTP)
	if err != nil {
		return usageError{err.Error()}
	}
	if _, err := quant.ParseType(*quantization); err != nil && *quantization != "none" {
		return usagef("--quantization must be one of %s", strings.Join(quantizations, ", "))
	}
	if filepath.Clean(*artifactPath) == filepath.Clean(*dir) {
		return usagef("--artifact must be a file, not --dir")
	}

	log := &lockedWriter{w: stderr}
	p := &preparer{
		src: src, dir: *dir, artifact: *artifactPath, include: include, format: *format, quantization: *quantization,
		sha256: *wantSHA, allowHTTP: *allowHTTP, stall: *stall, threads: *threads, log: log,
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, *timeout, fmt.Errorf("%w (%s)", errPrepareTimeout, *timeout))
		defer cancel()
	}
	start := time.Now()
	res, cached, err := p.run(ctx)
	if err != nil {
		pe := p.classify(ctx, err)
		res = &prepareResult{Reason: pe.reason, Message: pe.err.Error()}
		b := res.encode()
		log.result(b)
		if werr := writeResult(*resultFile, b); werr != nil {
			return errors.Join(pe, werr)
		}
		return pe
	}
	b := res.encode()
	log.result(b)
	if err := writeResult(*resultFile, b); err != nil {
		return err
	}
	how := fmt.Sprintf("in %.1fs", time.Since(start).Seconds())
	if cached {
		how = "already prepared"
	}
	a := res.Artifact
	_, err = fmt.Fprintf(stdout, "%s → %s: %s %s, %.2fB parameters, %s, sha256 %s (%s)\n", src, a.Path, res.Model.Architecture,
		a.Quantization, float64(res.Model.ParameterCount)/1e9, mib(a.SizeBytes), a.SHA256, how)
	return err
}

var errPrepareTimeout = errors.New("the download, conversion and quantization took longer than --timeout")

func writeResult(path string, b []byte) error {
	if path == "" {
		return nil
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("writing the result: %w", err)
	}
	return nil
}

// preparer is one prepare's settings and state.
type preparer struct {
	src                  fetch.Source
	dir, artifact        string
	include              []string
	format, quantization string
	sha256               string
	allowHTTP            bool
	stall                time.Duration
	threads              int
	log                  *lockedWriter
	phase                string // the step under way, for classify
}

func (p *preparer) enter(phase string, e prepareEvent) {
	p.phase = phase
	e.Kind, e.Phase = "phase", phase
	p.log.event(e)
}

// run makes the artifact, or finds it made (cached).
func (p *preparer) run(ctx context.Context) (res *prepareResult, cached bool, err error) {
	// The quantization is checked first: a type leo cannot write fails
	// before anything is fetched.
	var qt quant.Type
	if p.quantization != "none" {
		qt, _ = quant.ParseType(p.quantization)
		if !slices.Contains(quantizations, p.quantization) || !slices.Contains(synth.FileTypes, qt) || !quant.CanConvert(qt) {
			return nil, false, failf(reasonUnsupported, "quantization %q is not supported: leo quantizes to %s (none keeps the weights as they are)",
				p.quantization, strings.Join(quantizations[1:], ", "))
		}
	}
	if res, ok := p.cached(); ok {
		return res, true, nil
	}

	p.enter(phaseDownloading, prepareEvent{})
	sourceDir := filepath.Join(p.dir, "source")
	o := fetch.Options{
		Include: p.include, Token: os.Getenv("HF_TOKEN"), Endpoint: os.Getenv("HF_ENDPOINT"), AllowHTTP: p.allowHTTP,
		StallTimeout: p.stall, Report: fetch.JSONLines(p.log),
	}
	pulled, err := fetch.Pull(ctx, p.src, sourceDir, o)
	if err != nil {
		return nil, false, err
	}
	p.phase = ""
	files := pulled.Manifest.Files
	format, modelFile, err := detectFormat(files, p.format)
	if err != nil {
		return nil, false, err
	}
	if err := p.checkSHA256(files, sourceDir, modelFile); err != nil {
		return nil, false, err
	}

	// The GGUF to quantize or keep: the source's, or a conversion.
	in := ""
	var inSize int64
	var inSHA string
	converted := filepath.Join(p.dir, "converted.gguf")
	switch format {
	case "gguf":
		in = filepath.Join(sourceDir, filepath.FromSlash(modelFile))
		for _, f := range files {
			if f.Name == modelFile {
				inSize, inSHA = f.Size, f.SHA256
			}
		}
	default:
		p.enter(phaseConverting, prepareEvent{Format: format})
		if inSize, inSHA, err = p.convert(ctx, format, sourceDir, modelFile, converted); err != nil {
			return nil, false, err
		}
		in = converted
	}

	if err := os.MkdirAll(filepath.Dir(p.artifact), 0o755); err != nil {
		return nil, false, err
	}
	tmp := p.artifact + ".tmp"
	_ = os.Remove(tmp) // a crashed run's
	art := resultArtifact{Path: p.artifact, Format: "gguf", Quantization: p.quantization}
	switch {
	case p.quantization != "none":
		p.enter(phaseQuantizing, prepareEvent{Quantization: p.quantization})
		if art.SizeBytes, art.SHA256, err = p.quantize(ctx, in, qt, tmp); err != nil {
			return nil, false, err
		}
		if in == converted {
			_ = os.Remove(converted)
		}
	case in == converted:
		if err := os.Rename(converted, tmp); err != nil {
			return nil, false, err
		}
		art.SizeBytes, art.SHA256 = inSize, inSHA
	default:
		// The downloaded GGUF itself (checked first, so that an error
		// names it): a hard link (no second copy on the volume), else a
		// copy.
		p.phase = phaseInspecting
		if _, err := inspectFile(in); err != nil {
			return nil, false, err
		}
		if err := os.Link(in, tmp); err == nil {
			art.SizeBytes, art.SHA256 = inSize, inSHA
		} else if art.SizeBytes, art.SHA256, err = copyHashed(ctx, in, tmp); err != nil {
			return nil, false, err
		}
	}

	p.enter(phaseInspecting, prepareEvent{File: p.artifact})
	facts, err := inspectFile(tmp)
	if err != nil {
		_ = os.Remove(tmp)
		return nil, false, err
	}
	p.phase = ""
	if err := os.Rename(tmp, p.artifact); err != nil {
		return nil, false, err
	}
	syncDir(filepath.Dir(p.artifact))
	steps := []string{"download"}
	if format != "gguf" {
		steps = append(steps, "convert")
	}
	if p.quantization != "none" {
		steps = append(steps, "quantize")
	}
	rec := artifactRecord{Source: p.src.String(), Include: p.include, Format: p.format, Quantization: p.quantization, Artifact: art, Steps: steps}
	if err := writeJSONAtomic(filepath.Join(p.dir, artifactRecordName), rec); err != nil {
		return nil, false, err
	}
	return &prepareResult{Artifact: &art, Model: facts, Steps: steps}, false, nil
}

// cached returns the result of an earlier prepare of the same source into
// the same artifact, when DIR/artifact.json says there was one and the file
// is there with its size and still parses.
func (p *preparer) cached() (*prepareResult, bool) {
	b, err := os.ReadFile(filepath.Join(p.dir, artifactRecordName))
	if err != nil {
		return nil, false
	}
	var rec artifactRecord
	if json.Unmarshal(b, &rec) != nil || rec.Source != p.src.String() || !slices.Equal(rec.Include, p.include) ||
		rec.Format != p.format || rec.Quantization != p.quantization || rec.Artifact.Path != p.artifact {
		return nil, false
	}
	fi, err := os.Stat(p.artifact)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != rec.Artifact.SizeBytes {
		return nil, false
	}
	facts, err := inspectFile(p.artifact)
	if err != nil {
		return nil, false // made again
	}
	p.log.event(prepareEvent{Kind: "cached", File: p.artifact, BytesTotal: fi.Size(), SHA256: rec.Artifact.SHA256})
	art := rec.Artifact
	return &prepareResult{Artifact: &art, Model: facts, Steps: rec.Steps}, true
}

// detectFormat tells the source's format from its files (want "auto"), or
// checks the files fit the format given; modelFile is the one file a GGUF
// or llama2.c source is.
func detectFormat(files []fetch.ManifestFile, want string) (format, modelFile string, err error) {
	var ggufs, bins, safetensors, names []string
	hasConfig := false
	for _, f := range files {
		names = append(names, f.Name)
		switch ext := strings.ToLower(path.Ext(f.Name)); {
		case ext == ".gguf":
			ggufs = append(ggufs, f.Name)
		case ext == ".bin":
			bins = append(bins, f.Name)
		case ext == ".safetensors":
			safetensors = append(safetensors, f.Name)
		case f.Name == "config.json":
			hasConfig = true
		}
	}
	some := func(list []string) string {
		if len(list) > 6 {
			return strings.Join(list[:6], ", ") + fmt.Sprintf(" and %d more", len(list)-6)
		}
		return strings.Join(list, ", ")
	}
	one := func(kind string, list []string) (string, error) {
		switch {
		case len(list) == 1:
			return list[0], nil
		case len(list) == 0 && len(files) == 1:
			return files[0].Name, nil
		case len(list) == 0:
			return "", failf(reasonInvalidModel, "format %s: the source has no %s file among %s", want, kind, some(names))
		}
		return "", failf(reasonUnsupported, "the source has %d %s files (%s): choose one with --include (the LlamaModel's source.files)", len(list), kind, some(list))
	}
	switch want {
	case "gguf":
		modelFile, err = one(".gguf", ggufs)
		return "gguf", modelFile, err
	case "llama2c":
		modelFile, err = one(".bin", bins)
		return "llama2c", modelFile, err
	case "safetensors":
		if !hasConfig || len(safetensors) == 0 {
			return "", "", failf(reasonInvalidModel, "format safetensors needs config.json and *.safetensors files; the source has %s", some(names))
		}
		return "safetensors", "", nil
	}
	switch {
	case len(ggufs) > 0:
		modelFile, err = one(".gguf", ggufs)
		return "gguf", modelFile, err
	case hasConfig && len(safetensors) > 0:
		return "safetensors", "", nil
	case hasConfig && len(bins) > 0:
		return "", "", failf(reasonUnsupported, "the source is a PyTorch checkpoint (%s): leo converts safetensors checkpoints; fetch the repository's *.safetensors files instead", some(bins))
	case len(bins) == 1:
		return "llama2c", bins[0], nil
	}
	return "", "", failf(reasonUnsupported, "cannot tell the model's format from its files (%s): want one .gguf file, a Hugging Face checkpoint (config.json and *.safetensors) or a llama2.c .bin file", some(names))
}

// checkSHA256 compares the downloaded file with --sha256; a file that
// differs is removed from DIR/source.
func (p *preparer) checkSHA256(files []fetch.ManifestFile, sourceDir, modelFile string) error {
	if p.sha256 == "" {
		return nil
	}
	name := modelFile
	if len(files) == 1 {
		name = files[0].Name
	}
	if name == "" {
		return failf(reasonUnsupported, "--sha256 pins one file, and the source has %d files and no single .gguf or llama2.c file; narrow it with --include", len(files))
	}
	for _, f := range files {
		if f.Name != name {
			continue
		}
		if f.SHA256 != p.sha256 {
			_ = os.Remove(filepath.Join(sourceDir, filepath.FromSlash(f.Name)))
			return failf(reasonChecksumMismatch, "%s: SHA-256 mismatch: --sha256 (the LlamaModel's source.sha256) says %s, the downloaded file has %s", f.Name, p.sha256, f.SHA256)
		}
		return nil
	}
	return failf(reasonInvalidModel, "the downloaded files do not include %s", name)
}

// convert writes the checkpoint in sourceDir as GGUF to out (by way of
// out.tmp) and returns its size and SHA-256.
func (p *preparer) convert(ctx context.Context, format, sourceDir, modelFile, out string) (int64, string, error) {
	var w *gguf.Writer
	switch format {
	case "safetensors":
		ck, err := convert.OpenHF(sourceDir)
		if err != nil {
			return 0, "", err
		}
		defer func() { _ = ck.Close() }()
		if w, err = ck.Writer(p.modelName(modelFile)); err != nil {
			return 0, "", err
		}
	case "llama2c":
		var closeCk func() error
		var err error
		w, closeCk, err = convert.Llama2CFile(filepath.Join(sourceDir, filepath.FromSlash(modelFile)), llama2cVocab, p.modelName(modelFile))
		if err != nil {
			return 0, "", err
		}
		defer func() { _ = closeCk() }()
	default:
		return 0, "", failf(reasonUnsupported, "cannot convert format %q", format)
	}
	size, sum, err := writeHashed(ctx, w, out+".tmp")
	if err != nil {
		return 0, "", err
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		return 0, "", err
	}
	return size, sum, nil
}

// llama2cVocab is the tokenizer of a llama2.c checkpoint: the Llama 2
// vocabulary, cut to the checkpoint's size (as convert --llama2c does).
func llama2cVocab(size int) (tokenizer.Vocab, error) {
	full, err := synth.Llama2Vocab()
	if err != nil {
		return full, err
	}
	v, err := convert.TruncatedVocab(full, size)
	if err != nil {
		return v, fmt.Errorf("no tokenizer for a vocabulary of %d tokens: %w", size, err)
	}
	return v, nil
}

// modelName is general.name of a converted model: the repository's name,
// or the file's or folder's.
func (p *preparer) modelName(modelFile string) string {
	switch {
	case p.src.Kind == fetch.HF:
		return path.Base(p.src.Repo)
	case modelFile != "":
		return strings.TrimSuffix(path.Base(modelFile), path.Ext(modelFile))
	case p.src.Kind == fetch.S3:
		return path.Base("/" + strings.TrimSuffix(p.src.Prefix, "/"))
	}
	return filepath.Base(filepath.Clean(p.src.Path))
}

// quantize writes the GGUF model in to out in type t and returns its size
// and SHA-256, reporting progress (source bytes done) at most once a
// second.
func (p *preparer) quantize(ctx context.Context, in string, t quant.Type, out string) (int64, string, error) {
	f, err := gguf.Open(in)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = f.Close() }() // read only
	for _, ti := range f.Tensors {
		if !quant.CanConvert(ti.Type) {
			return 0, "", failf(reasonUnsupported, "tensor %s is %s, which leo cannot convert to %s; use quantization none, or a source in F16, BF16 or F32", ti.Name, ti.Type, p.quantization)
		}
	}
	var last time.Time
	progress := func(done, total int64) {
		if now := time.Now(); now.Sub(last) >= time.Second || done == total {
			last = now
			p.log.event(prepareEvent{Kind: "progress", Phase: phaseQuantizing, BytesDone: done, BytesTotal: total})
		}
	}
	w, err := convert.QuantizeWith(f, t, convert.QuantizeOptions{Threads: p.threads, Progress: progress})
	if err != nil {
		return 0, "", err
	}
	return writeHashed(ctx, w, out)
}

// inspectFile reads the facts the operator records from a GGUF file.
func inspectFile(file string) (*resultModel, error) {
	f, err := gguf.Open(file)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // read only
	facts, err := inspectFacts(file, f)
	if err != nil {
		return nil, err
	}
	return &resultModel{
		Architecture: facts.Architecture, ParameterCount: facts.Parameters, ContextLength: facts.ContextLength,
		VocabSize: facts.VocabSize, EmbeddingLength: facts.Embedding, Layers: facts.Layers, ChatTemplate: facts.ChatTemplate,
	}, nil
}

// ctxWriter fails writes once ctx is done: conversion and quantization
// take no context, but they write all the time.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(b []byte) (int, error) {
	if c.ctx.Err() != nil {
		return 0, context.Cause(c.ctx)
	}
	return c.w.Write(b)
}

// writeHashed writes w's file to path, synced, hashing it on the way; on
// failure path is removed.
func writeHashed(ctx context.Context, w *gguf.Writer, path string) (size int64, sum string, err error) {
	return createHashed(path, func(out io.Writer) (int64, error) { return w.WriteTo(ctxWriter{ctx, out}) })
}

// copyHashed copies the file src to dst, synced, hashing it on the way.
func copyHashed(ctx context.Context, src, dst string) (int64, string, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = in.Close() }() // read only
	return createHashed(dst, func(out io.Writer) (int64, error) {
		return io.Copy(ctxWriter{ctx, out}, struct{ io.Reader }{in}) // no ReadFrom: every byte passes the hash
	})
}

func createHashed(path string, write func(io.Writer) (int64, error)) (size int64, sum string, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, "", err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(path)
		}
	}()
	h := sha256.New()
	if size, err = write(io.MultiWriter(f, h)); err != nil {
		return 0, "", err
	}
	if err = f.Sync(); err != nil {
		return 0, "", err
	}
	if err = f.Close(); err != nil {
		return 0, "", err
	}
	return size, hex.EncodeToString(h.Sum(nil)), nil
}

// writeJSONAtomic writes v as JSON to path by way of a renamed temporary
// file.
func writeJSONAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // not every platform can; the rename stands either way
		_ = d.Close()
	}
}

// classify gives a failure its reason: by the errors' types and values
// (fetch.HTTPStatus, fetch.ErrNoSpace, ENOSPC, ...) and the step that
// failed, never by their messages.
func (p *preparer) classify(ctx context.Context, err error) *prepareError {
	var pe *prepareError
	if errors.As(err, &pe) {
		return pe
	}
	reason := reasonFailed
	switch {
	case ctx.Err() != nil && errors.Is(context.Cause(ctx), errPrepareTimeout):
		reason = reasonTimeout
		if !errors.Is(err, errPrepareTimeout) {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
	case ctx.Err() != nil:
		reason = reasonFailed // stopped (SIGTERM): another attempt may finish
	case errors.Is(err, fetch.ErrNoSpace), errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		reason = reasonNoSpace
	case p.phase == phaseDownloading:
		reason = reasonDownloadFailed
		status, ok := fetch.HTTPStatus(err)
		switch {
		case ok && (status == 401 || status == 403):
			reason = reasonUnauthorized
			if os.Getenv("AUTHORIZATION") != "" && p.src.Kind == fetch.HTTPS {
				err = fmt.Errorf("%w (AUTHORIZATION is set, but leo-runtime does not send it to https sources yet)", err)
			}
		case ok && status == 404:
			reason = reasonNotFound
		case errors.Is(err, fetch.ErrChecksumMismatch):
			reason = reasonChecksumMismatch
		case p.src.Kind == fetch.Local && errors.Is(err, fs.ErrNotExist):
			reason = reasonNotFound
		}
	case p.phase == phaseConverting || p.phase == phaseQuantizing || p.phase == phaseInspecting:
		// What does not parse is invalid; an I/O error (other than a
		// missing file, which is a checkpoint's fault) may pass.
		reason = reasonInvalidModel
		if ioError(err) {
			reason = reasonFailed
		}
	}
	return &prepareError{reason, err}
}

// ioError: err is the file system's (but a missing file), not a parser's.
func ioError(err error) bool {
	var pathErr *fs.PathError
	var linkErr *os.LinkError
	var sysErr *os.SyscallError
	if errors.As(err, &pathErr) || errors.As(err, &linkErr) || errors.As(err, &sysErr) {
		return !errors.Is(err, fs.ErrNotExist)
	}
	return errors.Is(err, syscall.EIO)
}
