// Command leo-runtime is leo's inference runtime: it loads Llama models
// from GGUF files, generates text on the CPU and serves it over HTTP.
//
//	leo-runtime serve     --model FILE --addr HOST:PORT        the HTTP API: Azure ML /score, OpenAI /v1
//	leo-runtime generate  --model FILE --prompt TEXT [flags]   stream a completion to stdout
//	leo-runtime batch     --model FILE --input PATH --output DIR   score files exactly once (a BatchDeployment's worker)
//	leo-runtime bench     --model FILE --threads T             prompt and generation speed
//	leo-runtime bench-serve --model FILE                       the server under load (make bench-serve)
//	leo-runtime pull      SOURCE DEST [--include GLOB]         download a model (hf://, https://, pvc://) robustly
//	leo-runtime prepare   --source URI --dir DIR --artifact FILE   a LlamaModel's Job: pull, convert, quantize, inspect
//	leo-runtime prune     --root DIR DIR/leo-models/...           a deleted LlamaModel's files off an existing claim
//	leo-runtime gen-model --shape NAME --type TYPE -o FILE     a Llama-shaped model with random weights
//	leo-runtime convert   --hf DIR | --llama2c FILE -o FILE    a Hugging Face or llama2.c checkpoint as GGUF
//	leo-runtime quantize  --model FILE --type TYPE -o FILE     a GGUF model in another weight type
//	leo-runtime inspect   FILE                                 a GGUF file's metadata and tensors
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand: it parses its own flags from args and writes
// its results to stdout and progress to stderr.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"serve":       {"serve the model over HTTP (Azure ML /score, OpenAI /v1) with continuous batching", runServe},
	"generate":    {"generate text from a prompt, streaming to stdout", runGenerate},
	"batch":       {"score input files exactly once, resumably: a BatchDeployment's worker (docs/batch.md)", runBatch},
	"bench":       {"measure prompt processing and generation speed", runBench},
	"bench-serve": {"measure the HTTP server under load: 1 vs many streams, 429s, time to first token", runBenchServe},
	"pull":        {"download a model's files (hf://, https://, pvc://): resumable, verified, with a manifest", runPull},
	"prune":       {"remove a deleted LlamaModel's artifact directory from a cache volume (the operator's cleanup Job)", runPrune},
	"prepare":     {"a LlamaModel's download Job: pull, convert, quantize and inspect into one GGUF artifact, with a result", runPrepare},
	"gen-model":   {"write a Llama-shaped GGUF model with deterministic random weights", runGenModel},
	"convert":     {"convert a Hugging Face (safetensors) or llama2.c checkpoint to GGUF", runConvert},
	"quantize":    {"convert a GGUF model's weights to another type", runQuantize},
	"inspect":     {"print a GGUF file's metadata and tensors", runInspect},
}

func main() { os.Exit(runWithSignals()) }

// runWithSignals runs the command line under a context that SIGINT or
// SIGTERM cancels and returns the exit status; main exits only after
// its deferred calls have run.
func runWithSignals() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, a second one kills the process at once
	// (e.g. a second Ctrl-C during serve's graceful shutdown).
	context.AfterFunc(ctx, stop)
	return run(ctx, os.Args[1:], os.Stdout, os.Stderr)
}

// run dispatches to a subcommand and returns the exit status: 0 on
// success, 2 for usage errors, 1 for failures (3 for prepare's permanent ones).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		_, _ = fmt.Fprintf(stderr, "leo-runtime: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	err := cmd.run(ctx, args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		_, _ = fmt.Fprintf(stderr, "leo-runtime %s: %v\n", args[0], err)
		return 2
	default:
		_, _ = fmt.Fprintf(stderr, "leo-runtime %s: %v\n", args[0], err)
		return exitCode(err)
	}
}

// usage writes the list of commands to w, stderr. Here and elsewhere,
// errors writing to stderr are ignored: there is nowhere to report them.
func usage(w io.Writer) {
	_, _ = fmt.Fprintln(w, "usage: leo-runtime <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		_, _ = fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	_, _ = fmt.Fprintln(w, "\nRun 'leo-runtime <command> -h' for a command's flags.")
}

// usageError is a mistake in the command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// parse parses a subcommand's flags, refusing stray positional arguments
// (commands that take some use parseInterspersed).
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// required returns a usage error naming the flags that were left empty.
func required(flags map[string]string) error {
	var missing []string
	for name, v := range flags {
		if v == "" {
			missing = append(missing, "--"+name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	return usagef("missing %s", strings.Join(missing, ", "))
}
