package ggmlref

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPeerLib(t *testing.T) {
	path, err := PeerLib()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "libggml-base.so" {
		t.Errorf("PeerLib() = %s, want a libggml-base.so", path)
	}
	if _, err := os.Stat(path); err != nil {
		t.Error(err)
	}
	if !strings.Contains(path, string(filepath.Separator)+"node-llama-cpp-") {
		t.Errorf("PeerLib() = %s, want it inside the pinned node-llama-cpp install", path)
	}
}
