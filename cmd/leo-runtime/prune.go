package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// artifactsDir is the folder of a cache volume under which the operator's
// prepare Jobs write (leo-models/<source>-<hash>/<quantization>).
const artifactsDir = "leo-models"

// runPrune removes a deleted LlamaModel's artifact directory from a cache
// volume: the operator's cleanup Job runs it. It refuses any directory that
// is not strictly inside ROOT/leo-models, so that a wrong argument cannot
// remove a user's files, and then removes the parents it emptied.
func runPrune(_ context.Context, args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("prune", flag.ContinueOnError)
	root := flags.String("root", "/models", "the cache volume's mount point")
	pos, err := parseInterspersed(flags, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("prune takes one directory: prune --root ROOT ROOT/%s/...", artifactsDir)
	}
	top := filepath.Join(filepath.Clean(*root), artifactsDir)
	dir := filepath.Clean(pos[0])
	rel, err := filepath.Rel(top, dir)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return usagef("prune removes directories inside %s only, not %s", top, dir)
	}
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		_, err = fmt.Fprintf(stdout, "%s: already gone\n", dir)
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	// Parents left empty go too (the source folder of the last
	// quantization), up to leo-models itself, which stays.
	for p := filepath.Dir(dir); p != top && strings.HasPrefix(p, top+string(filepath.Separator)); p = filepath.Dir(p) {
		if os.Remove(p) != nil {
			break // not empty: another model's files
		}
	}
	_, err = fmt.Fprintf(stdout, "%s: removed\n", dir)
	return err
}
