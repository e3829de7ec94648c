package batch

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ListFiles returns the input files under root, relative to it with
// slashes, sorted by byte order: every regular file of the folder,
// recursively, hidden files and folders (a leading '.') skipped, and any
// path under skip (the output folder, when it lies inside the input).
// When root is a file, it is the one input, named by its base name.
func ListFiles(root string, skip ...string) ([]string, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return []string{filepath.Base(root)}, nil
	}
	skipAbs := make([]string, 0, len(skip))
	for _, s := range skip {
		if a, err := filepath.Abs(s); err == nil {
			skipAbs = append(skipAbs, a)
		}
	}
	var files []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if a, err := filepath.Abs(p); err == nil && slices.Contains(skipAbs, a) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() && !isFile(p) {
			return nil // a dangling link, a socket...: not an input
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing the input %s: %w", root, err)
	}
	slices.Sort(files) // byte order of the slash-separated paths, as docs/batch.md says
	return files, nil
}

// MiniBatch is one mini-batch of a shard: its position j in the shard and
// its files (relative paths), in input order.
type MiniBatch struct {
	Index int
	Files []string
}

// ID is the mini-batch's name in the journal, the logs and the summary:
// "<instance>-<j>".
func (m MiniBatch) ID(instance int) string { return fmt.Sprintf("%d-%d", instance, m.Index) }

// Plan returns worker index's shard of files (file k belongs to worker
// k mod count) cut into mini-batches of size files each, in order. Every
// worker computes the same plan from the same sorted list, so the shards
// never overlap and need no coordination.
func Plan(files []string, count, index, size int) []MiniBatch {
	var shard []string
	for k, f := range files {
		if k%count == index {
			shard = append(shard, f)
		}
	}
	var mbs []MiniBatch
	for j := 0; j*size < len(shard); j++ {
		mbs = append(mbs, MiniBatch{Index: j, Files: shard[j*size : min((j+1)*size, len(shard))]})
	}
	return mbs
}

// isFile reports whether p is a regular file, after links: a link to a
// file counts (mounted Secrets and ConfigMaps are links).
func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
