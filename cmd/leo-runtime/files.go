package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/leo-operator/leo/runtime/convert"
	"github.com/leo-operator/leo/runtime/gguf"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/synth"
)

func fileTypeNames() string {
	names := make([]string, len(synth.FileTypes))
	for i, t := range synth.FileTypes {
		names[i] = strings.ToLower(t.String())
	}
	return strings.Join(names, ", ")
}

func parseFileType(s string) (quant.Type, error) {
	t, err := quant.ParseType(s)
	if err == nil {
		for _, ft := range synth.FileTypes {
			if ft == t {
				return t, nil
			}
		}
	}
	return 0, usagef("--type %q is not one of %s", s, fileTypeNames())
}

func runGenModel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gen-model", flag.ContinueOnError)
	shape := fs.String("shape", "", "model shape: "+strings.Join(synth.ShapeNames(), ", "))
	typ := fs.String("type", "f32", "weight type: "+fileTypeNames())
	out := fs.String("o", "", "output GGUF file")
	seed := fs.Uint64("seed", 1, "random seed; the same seed, shape and type give the same file")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := required(map[string]string{"shape": *shape, "o": *out}); err != nil {
		return err
	}
	c, err := synth.Shape(*shape)
	if err != nil {
		return usageError{err.Error()}
	}
	t, err := parseFileType(*typ)
	if err != nil {
		return err
	}
	vocab, err := synth.Llama2Vocab()
	if err != nil {
		return err
	}
	p := newProgress(stderr, "generating "+filepath.Base(*out))
	w, err := synth.NewWriter(synth.Options{Name: *shape, Config: c, Type: t, Seed: *seed, Vocab: vocab, Progress: p.update})
	if err != nil {
		return err
	}
	if err := w.WriteFile(*out); err != nil {
		return err
	}
	p.done()
	return nil
}

func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	l2c := fs.String("llama2c", "", "llama2.c checkpoint (legacy format, e.g. stories260K.bin); written in F32")
	hf := fs.String("hf", "", "Hugging Face Llama checkpoint directory (config.json, *.safetensors, tokenizer.model); matrices keep their type (F32, F16 or BF16)")
	out := fs.String("o", "", "output GGUF file")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := required(map[string]string{"o": *out}); err != nil {
		return err
	}
	if (*l2c == "") == (*hf == "") {
		return usagef("give one of --llama2c FILE and --hf DIR")
	}
	if *hf != "" {
		ck, err := convert.OpenHF(*hf)
		if err != nil {
			return err
		}
		defer func() { _ = ck.Close() }()
		w, err := ck.Writer(filepath.Base(filepath.Clean(*hf)))
		if err != nil {
			return err
		}
		return w.WriteFile(*out)
	}
	w, closeCk, err := convert.Llama2CFile(*l2c, llama2cVocab, strings.TrimSuffix(filepath.Base(*l2c), filepath.Ext(*l2c)))
	if err != nil {
		return err
	}
	defer func() { _ = closeCk() }()
	return w.WriteFile(*out)
}

func runQuantize(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("quantize", flag.ContinueOnError)
	fs.Usage = func() {
		_, _ = fmt.Fprintf(fs.Output(), "usage: leo-runtime quantize IN OUT --type TYPE   (or --model IN -o OUT)\n\n"+
			"Writes the GGUF model IN with its weights in TYPE (norms and other vectors stay F32), over all\n"+
			"CPUs, one tensor at a time; the output is the same whatever the thread count. Prints each kind\n"+
			"of tensor's error against IN (RMSE, and relative to the values' norm) at the end.\n\nflags:\n")
		fs.PrintDefaults()
	}
	in := fs.String("model", "", "input GGUF model (or the first argument)")
	typ := fs.String("type", "", "weight type: "+fileTypeNames())
	out := fs.String("o", "", "output GGUF file (or the second argument)")
	threads := fs.Int("threads", 0, "threads (0: all CPUs)")
	pos, err := parseInterspersed(fs, args, stderr)
	if err != nil {
		return err
	}
	switch {
	case len(pos) == 2 && *in == "" && *out == "":
		*in, *out = pos[0], pos[1]
	case len(pos) != 0:
		return usagef("quantize takes IN OUT, or --model IN -o OUT")
	}
	if err := required(map[string]string{"model": *in, "type": *typ, "o": *out}); err != nil {
		return err
	}
	t, err := parseFileType(*typ)
	if err != nil {
		return err
	}
	f, err := gguf.Open(*in)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // read only
	var report convert.Report
	bar := newProgress(stderr, "quantize")
	w, err := convert.QuantizeWith(f, t, convert.QuantizeOptions{Threads: *threads, Report: &report, Progress: bar.update})
	if err != nil {
		return err
	}
	if err := w.WriteFile(*out); err != nil {
		return err
	}
	bar.done()
	_, _ = fmt.Fprintf(stdout, "%s → %s (%s)\n", *in, *out, t)
	return report.WriteTable(stdout)
}

// progress draws a one-line progress bar on stderr, at most a few times
// a second.
type progress struct {
	w     io.Writer
	label string
	start time.Time
	last  time.Time
}

func newProgress(w io.Writer, label string) *progress {
	return &progress{w: w, label: label, start: time.Now()}
}

func (p *progress) update(done, total int64) {
	if time.Since(p.last) < 200*time.Millisecond && done < total {
		return
	}
	p.last = time.Now()
	frac := float64(done) / float64(max(total, 1))
	const width = 30
	bar := strings.Repeat("=", int(frac*width)) + strings.Repeat(" ", width-int(frac*width))
	_, _ = fmt.Fprintf(p.w, "\r%s [%s] %3.0f%% %s / %s", p.label, bar, 100*frac, mib(done), mib(total))
}

func (p *progress) done() {
	_, _ = fmt.Fprintf(p.w, " in %.1fs\n", time.Since(p.start).Seconds())
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
