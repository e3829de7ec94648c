package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/leo-operator/leo/runtime/fetch"
)

func runPull(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	fs.Usage = func() {
		_, _ = fmt.Fprint(fs.Output(), `usage: leo-runtime pull SOURCE DEST [flags]

Downloads a model's files into the directory DEST, resuming what an earlier
run left, checking each file against its source's checksum, and records
them with their SHA-256 in DEST/leo-manifest.json.

SOURCE is one of
  hf://ORG/REPO[@REVISION]   a Hugging Face Hub repository (REVISION: a branch,
                             tag or commit; main by default), pinned to the
                             commit the revision names when the pull starts
  https://HOST/PATH/FILE     one file (http:// only with --allow-http)
  s3://BUCKET[/PREFIX]       the objects under PREFIX/ (or the one object PREFIX)
  pvc://PATH or PATH         a file or directory on a mounted volume: copied
                             into DEST, or checked in place when DEST is "-"
                             or the same directory

Environment: HF_TOKEN (a Hub token, for gated and private repositories),
HF_ENDPOINT (a Hub mirror); AWS_ENDPOINT_URL (an S3-compatible store),
AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
AWS_SHARED_CREDENTIALS_FILE; and LEO_<FLAG> for each flag below.

flags:
`)
		fs.PrintDefaults()
	}
	var include stringList
	fs.Var(&include, "include", "keep only files matching this glob (path.Match; repeatable; without '/' it also matches base names); default: all files")
	allowHTTP := fs.Bool("allow-http", false, "allow plain-http sources and Hub endpoints")
	connections := fs.Int("connections", 4, "parallel ranged requests per file")
	partMiB := fs.Int("part-size-mib", 64, "MiB per ranged request")
	retries := fs.Int("retries", 8, "failed attempts in a row a part may have before the pull fails (an attempt that got 1 MiB or more resets the count)")
	stall := fs.Duration("stall-timeout", 30*time.Second, "retry a request that brings no byte for this long")
	timeout := fs.Duration("timeout", 0, "give up on the whole pull after this long (0: never)")
	fsync := fs.Bool("fsync", false, "flush each file to disk before renaming it into place (survives a power loss; costs the disk's write time)")
	progress := fs.String("progress", "auto", "progress on stderr: bar, json (JSON lines, for the operator), none, or auto (bar on a terminal, json otherwise)")
	if err := flagsFromEnv(fs); err != nil {
		return err
	}
	pos, err := parseInterspersed(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("pull takes SOURCE and DEST (DEST \"-\": check a local source in place)")
	}
	if *connections < 1 || *partMiB < 1 || *retries < 1 || *stall <= 0 || *timeout < 0 {
		return usagef("--connections, --part-size-mib, --retries and --stall-timeout must be positive")
	}
	src, err := fetch.ParseSource(pos[0], *allowHTTP)
	if err != nil {
		return usageError{err.Error()}
	}
	dest := pos[1]
	if dest == "-" {
		if src.Kind != fetch.Local {
			return usagef("DEST \"-\" (check in place) is for local sources only")
		}
		dest = ""
	}
	var rep fetch.Reporter
	jsonLines := *progress == "json" || (*progress == "auto" && !isTerminal(stderr))
	switch {
	case jsonLines:
		rep = fetch.JSONLines(stderr)
	case *progress == "bar" || *progress == "auto":
		rep = fetch.Bar(stderr)
	case *progress == "none":
	default:
		return usagef("--progress must be auto, bar, json or none")
	}
	o := fetch.Options{
		Include: include, Token: os.Getenv("HF_TOKEN"), Endpoint: os.Getenv("HF_ENDPOINT"), AllowHTTP: *allowHTTP,
		Connections: *connections, PartSize: int64(*partMiB) << 20, Retries: *retries,
		StallTimeout: *stall, Timeout: *timeout, Fsync: *fsync, Report: rep,
	}
	res, err := fetch.Pull(ctx, src, dest, o)
	if err != nil {
		if jsonLines { // the operator reads the reason from the last line
			rep.Event(fetch.Event{Kind: "error", Error: err.Error()})
		}
		return err
	}
	where := dest
	if where == "" {
		where = src.Path
	}
	_, err = fmt.Fprintf(stdout, "%s: %d files in %s (%s fetched, %s already there) in %.1fs\n", src, len(res.Manifest.Files), where,
		mib(res.Transferred), mib(res.Present), res.Elapsed.Seconds())
	return err
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments (pull SOURCE DEST --include X), which the flag
// package alone stops at.
func parseInterspersed(fs *flag.FlagSet, args []string, stderr io.Writer) ([]string, error) {
	fs.SetOutput(stderr)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
