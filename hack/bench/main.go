// Command bench is `make bench`: leo-runtime against llama.cpp (the npm
// package node-llama-cpp, installed by hack/peer/install.sh) on the same
// GGUF files, with the same thread counts, side by side in one run. It
// prints prompt-processing and generation speed, leo's ratio to llama.cpp,
// and each generation figure as a percent of the memory-bandwidth bound
// (file bytes per token over measured bandwidth).
//
//	go run ./hack/bench [-shape tinyllama-1.1b] [-types q4_0,q8_0] [-threads 1,2] [-rounds 2]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/leo-operator/leo/internal/hfgen"
	"github.com/leo-operator/leo/internal/peer"
	"github.com/leo-operator/leo/internal/stats"
	"github.com/leo-operator/leo/runtime/synth"
)

type result struct {
	PromptTokS   float64 `json:"prompt_tok_s"`
	GenTokS      float64 `json:"gen_tok_s"`
	BandwidthGBs float64 `json:"bandwidth_gb_s"`
	FileBytes    int64   `json:"file_bytes"`
}

func main() {
	shape := flag.String("shape", "tinyllama-1.1b", "model shape (leo-runtime gen-model --shape)")
	types := flag.String("types", "q4_0,q8_0", "comma-separated weight types")
	threadList := flag.String("threads", "1,2", "comma-separated thread counts")
	rounds := flag.Int("rounds", 2, "alternating rounds of leo and llama.cpp per setting; medians are reported")
	prompt := flag.Int("prompt", 128, "prompt tokens")
	gen := flag.Int("gen", 64, "generated tokens")
	speed := flag.Bool("speed", true, "run the speed comparison with llama.cpp")
	pipeline := flag.Bool("pipeline", true, "measure the peak memory of converting and quantizing a checkpoint of the shape")
	flag.Parse()
	if *speed {
		if err := run(*shape, strings.Split(*types, ","), *threadList, *rounds, *prompt, *gen); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
	if *pipeline {
		if err := pipelineMemory(*shape); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
}

func run(shape string, types []string, threadList string, rounds, prompt, gen int) error {
	ctx := context.Background()
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	dir := filepath.Join(root, "bin", "bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	bin := filepath.Join(dir, "leo-runtime")
	if err := sh("go", "build", "-trimpath", "-o", bin, "./cmd/leo-runtime"); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "installing llama.cpp (node-llama-cpp)…")
	if _, err := peer.Install(ctx); err != nil {
		return err
	}
	var threads []int
	for _, s := range strings.Split(threadList, ",") {
		t, err := strconv.Atoi(s)
		if err != nil || t < 1 {
			return fmt.Errorf("bad thread count %q", s)
		}
		threads = append(threads, t)
	}

	type row struct {
		file                 string
		threads              int
		leo                  result
		leoPrompt, cppPrompt []float64
		leoGen, cppGen       []float64
	}
	var rows []row
	for _, typ := range types {
		file := filepath.Join(dir, fmt.Sprintf("%s-%s.gguf", shape, typ))
		if _, err := os.Stat(file); err != nil {
			if err := sh(bin, "gen-model", "--shape", shape, "--type", typ, "-o", file); err != nil {
				return err
			}
		}
		for _, t := range threads {
			r := row{file: filepath.Base(file), threads: t}
			for i := 0; i < rounds; i++ {
				var out bytes.Buffer
				cmd := exec.Command(bin, "bench", "--model", file, "--threads", strconv.Itoa(t),
					"--prompt", strconv.Itoa(prompt), "--gen", strconv.Itoa(gen), "--json")
				cmd.Stdout, cmd.Stderr = &out, os.Stderr
				if err := cmd.Run(); err != nil {
					return fmt.Errorf("leo-runtime bench: %w", err)
				}
				if err := json.Unmarshal(out.Bytes(), &r.leo); err != nil {
					return err
				}
				r.leoPrompt, r.leoGen = append(r.leoPrompt, r.leo.PromptTokS), append(r.leoGen, r.leo.GenTokS)

				fmt.Fprintf(os.Stderr, "llama.cpp bench %s, %d threads\n", r.file, t)
				b, err := peer.Bench(ctx, file, t, prompt, gen)
				if err != nil {
					return err
				}
				r.cppPrompt, r.cppGen = append(r.cppPrompt, b.PromptTokS), append(r.cppGen, b.GenTokS)
			}
			rows = append(rows, r)
		}
	}

	fmt.Printf("\nleo-runtime vs llama.cpp (node-llama-cpp), %s shape, prompt %d tokens, generation %d tokens, medians of %d rounds\n\n", shape, prompt, gen, rounds)
	fmt.Println("| file | threads | prompt tok/s leo | llama.cpp | ratio | gen tok/s leo | llama.cpp | ratio | bound tok/s | leo % of bound | llama.cpp % of bound |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		lp, cp, lg, cg := stats.Median(r.leoPrompt), stats.Median(r.cppPrompt), stats.Median(r.leoGen), stats.Median(r.cppGen)
		bound := r.leo.BandwidthGBs * 1e9 / float64(r.leo.FileBytes)
		fmt.Printf("| %s | %d | %.1f | %.1f | %.2f× | %.1f | %.1f | %.2f× | %.1f | %.0f%% | %.0f%% |\n",
			r.file, r.threads, lp, cp, lp/cp, lg, cg, lg/cg, bound, 100*lg/bound, 100*cg/bound)
	}
	fmt.Printf("\nmemory bandwidth measured by leo-runtime bench (GB/s): ")
	for _, r := range rows {
		fmt.Printf("%s@%d=%.1f ", r.file, r.threads, r.leo.BandwidthGBs)
	}
	fmt.Println()
	return nil
}

func sh(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

// pipelineMemory converts a Hugging Face checkpoint of the shape (F16,
// random weights, generated once into bin/bench) to GGUF, then quantizes
// that to Q8_0 and Q4_0, each under /usr/bin/time -v, and prints each
// step's peak resident memory against the checkpoint's size.
func pipelineMemory(shape string) error {
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	dir := filepath.Join(root, "bin", "bench")
	bin := filepath.Join(dir, "leo-runtime")
	if err := sh("go", "build", "-trimpath", "-o", bin, "./cmd/leo-runtime"); err != nil {
		return err
	}
	if _, err := exec.LookPath("/usr/bin/time"); err != nil {
		if err := sh("sh", "-c", "apt-get update -qq && apt-get install -y -qq time"); err != nil {
			return fmt.Errorf("/usr/bin/time is missing and could not be installed: %w", err)
		}
	}
	c, err := synth.Shape(shape)
	if err != nil {
		return err
	}
	ck := filepath.Join(dir, "hf-"+shape)
	if _, err := os.Stat(filepath.Join(ck, "config.json")); err != nil {
		fmt.Fprintf(os.Stderr, "writing a %s-shaped Hugging Face checkpoint (F16) to %s…\n", shape, ck)
		if err := os.MkdirAll(ck, 0o755); err != nil {
			return err
		}
		if err := hfgen.WriteShape(ck, c, "F16", 1); err != nil {
			return err
		}
	}
	var ckBytes int64
	shards, _ := filepath.Glob(filepath.Join(ck, "*.safetensors"))
	for _, p := range shards {
		if fi, err := os.Stat(p); err == nil {
			ckBytes += fi.Size()
		}
	}
	f16 := filepath.Join(dir, "hf-"+shape+"-f16.gguf")
	steps := []struct {
		name string
		args []string
	}{
		{"convert --hf (safetensors F16 → GGUF F16)", []string{"convert", "--hf", ck, "-o", f16}},
		{"quantize F16 → Q8_0", []string{"quantize", f16, filepath.Join(dir, "hf-"+shape+"-q8_0.gguf"), "--type", "q8_0"}},
		{"quantize F16 → Q4_0", []string{"quantize", f16, filepath.Join(dir, "hf-"+shape+"-q4_0.gguf"), "--type", "q4_0"}},
	}
	fmt.Printf("\nweights pipeline, %s shape: checkpoint %.2f GB in %d safetensors shards; peak RSS by /usr/bin/time -v\n\n", shape, float64(ckBytes)/1e9, len(shards))
	fmt.Println("| step | wall s | peak RSS MB | RSS / checkpoint |")
	fmt.Println("|---|---|---|---|")
	for _, st := range steps {
		var errOut bytes.Buffer
		cmd := exec.Command("/usr/bin/time", append([]string{"-v", bin}, st.args...)...)
		cmd.Stdout, cmd.Stderr = io.Discard, &errOut
		start := time.Now()
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w\n%s", st.name, err, errOut.String())
		}
		wall := time.Since(start).Seconds()
		kb := 0
		for _, line := range strings.Split(errOut.String(), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Maximum resident set size (kbytes): "); ok {
				kb, _ = strconv.Atoi(v)
			}
		}
		if kb == 0 {
			return fmt.Errorf("%s: no peak RSS in /usr/bin/time's output:\n%s", st.name, errOut.String())
		}
		fmt.Printf("| %s | %.1f | %.0f | %.3f |\n", st.name, wall, float64(kb)/1e3, float64(kb)*1e3/float64(ckBytes))
	}
	return nil
}
