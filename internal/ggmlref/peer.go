package ggmlref

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/leo-operator/leo/internal/peer"
)

// libInPeer is where node-llama-cpp's linux-x64 package keeps GGML's base
// library (the one holding the type traits and the reference quantizers).
const libInPeer = "node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so"

// PeerLib installs the project's llama.cpp peer if needed (internal/peer:
// pinned node-llama-cpp, CPU build, cached under bin/; the first run needs
// npm and its registry) and returns the path of its libggml-base.so.
func PeerLib() (string, error) {
	dir, err := peer.Install(context.Background())
	if err != nil {
		return "", fmt.Errorf("ggmlref: %w", err)
	}
	lib := filepath.Join(dir, libInPeer)
	if _, err := os.Stat(lib); err != nil {
		return "", fmt.Errorf("ggmlref: the peer installed in %s has no %s: %w", dir, libInPeer, err)
	}
	return lib, nil
}
