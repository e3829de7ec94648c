package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestPrune(t *testing.T) {
	root := t.TempDir()
	keep := filepath.Join(root, "leo-models", "hf-a-1", "q8_0", "model.gguf")
	gone := filepath.Join(root, "leo-models", "hf-a-1", "q4_0", "source", "model.safetensors")
	alone := filepath.Join(root, "leo-models", "hf-b-2", "none", "model.gguf")
	user := filepath.Join(root, "users-own", "data.csv")
	for _, f := range []string{keep, gone, alone, user} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	prune := func(dir string) (int, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), []string{"prune", "--root", root, dir}, &out, &errb)
		return code, out.String() + errb.String()
	}
	if code, out := prune(filepath.Join(root, "leo-models", "hf-a-1", "q4_0")); code != 0 {
		t.Fatalf("prune: %d %s", code, out)
	}
	if _, err := os.Stat(filepath.Dir(filepath.Dir(gone))); !os.IsNotExist(err) {
		t.Error("the quantization's directory is still there")
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("the other quantization's file went: %v", err)
	}
	// The last quantization of a source: its empty parent goes too.
	if code, out := prune(filepath.Join(root, "leo-models", "hf-b-2", "none")); code != 0 {
		t.Fatalf("prune: %d %s", code, out)
	}
	if _, err := os.Stat(filepath.Join(root, "leo-models", "hf-b-2")); !os.IsNotExist(err) {
		t.Error("the emptied source directory is still there")
	}
	if _, err := os.Stat(filepath.Join(root, "leo-models")); err != nil {
		t.Error("leo-models itself must stay")
	}
	// Again: nothing to do is success.
	if code, out := prune(filepath.Join(root, "leo-models", "hf-b-2", "none")); code != 0 {
		t.Errorf("pruning a directory already gone: %d %s", code, out)
	}
	// Anything outside leo-models is refused, and stays.
	for _, dir := range []string{root, filepath.Join(root, "leo-models"), filepath.Join(root, "users-own"),
		filepath.Join(root, "leo-models", "..", "users-own"), "/etc"} {
		if code, out := prune(dir); code != 2 {
			t.Errorf("prune %s: exit %d (%s), want 2 (refused)", dir, code, out)
		}
	}
	if _, err := os.Stat(user); err != nil {
		t.Errorf("a user's file went: %v", err)
	}
}
