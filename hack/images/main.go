// Command images builds leo's container images without Docker: each is one
// reproducible layer (files owned by root, modification time 0) holding a
// static Go binary, written as a docker-archive tarball that
// `ctr images import` (and `docker load`) reads. The local cluster
// (hack/cluster) imports them into containerd. The runtime's image is
// CPU-only here; GPU nodes use build/leo-runtime.Dockerfile, which adds the
// CUDA kernel library and NVIDIA's CUDA runtime base.
//
//	go run ./hack/images -out bin/images [-tag dev] [name ...]
//
// Names: pause (the pod sandbox), leo-manager, leo-runtime, leo-gateway
// (default: all). Each image is tagged leo.local/<name>:<tag> and
// leo.local/<name>:sha-<digest>, the latter also written to <name>.tag.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Registry is the made-up registry of the local images: never pulled from
// (the pods that use them say imagePullPolicy: Never or IfNotPresent).
const Registry = "leo.local"

// image is one image: the Go package of its binary and what else it holds.
type image struct {
	pkg  string
	user string // "" runs as root (the pause container), else uid:gid
	// caCerts adds the build machine's CA bundle (the runtime fetches
	// weights over https).
	caCerts bool
}

var images = map[string]image{
	"pause":       {pkg: "./hack/images/pause"},
	"leo-manager": {pkg: "./cmd/manager", user: "65532:65532"},
	"leo-runtime": {pkg: "./cmd/leo-runtime", user: "65532:65532", caCerts: true},
	"leo-gateway": {pkg: "./cmd/leo-gateway", user: "65532:65532"},
}

func main() {
	out := flag.String("out", "bin/images", "directory for the <name>.tar archives")
	tag := flag.String("tag", "dev", "tag of the images")
	flag.Parse()
	names := flag.Args()
	if len(names) == 0 {
		names = []string{"pause", "leo-manager", "leo-runtime", "leo-gateway"}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fail(err)
	}
	for _, n := range names {
		im, ok := images[n]
		if !ok {
			fail(fmt.Errorf("no image %q (known: pause, leo-manager, leo-runtime, leo-gateway)", n))
		}
		start := time.Now()
		path, err := build(n, im, *tag, *out)
		if err != nil {
			fail(fmt.Errorf("%s: %w", n, err))
		}
		fmt.Printf("%s/%s:%s  %s  (%v)\n", Registry, n, *tag, path, time.Since(start).Round(time.Millisecond))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "images:", err)
	os.Exit(1)
}

// build compiles the binary and writes the image's archive.
func build(n string, im image, tag, out string) (string, error) {
	tmp, err := os.MkdirTemp("", "leo-image-")
	if err != nil {
		return "", err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	bin := filepath.Join(tmp, n)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, im.pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s: %w", im.pkg, err)
	}
	files := []file{{path: "/" + n, src: bin, mode: 0o755}, {path: "/tmp/", mode: 0o1777}}
	if im.caCerts {
		files = append(files, file{path: "/etc/ssl/certs/ca-certificates.crt", src: "/etc/ssl/certs/ca-certificates.crt", mode: 0o644})
	}
	layerTar, err := tarOf(files)
	if err != nil {
		return "", err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil })
	if err != nil {
		return "", err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return "", err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cfg.Config = v1.Config{Entrypoint: []string{"/" + n}, User: im.user, WorkingDir: "/",
		Env: []string{"PATH=/", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return "", err
	}
	// Tagged twice: <tag>, and its content (the image's digest), which
	// changes with the binary, so that a Deployment naming it rolls out
	// a rebuilt image (the local images are never pulled: a reused tag
	// would leave running pods on the old one).
	digest, err := img.Digest()
	if err != nil {
		return "", err
	}
	refs := map[name.Reference]v1.Image{}
	for _, t := range []string{tag, contentTag(digest)} {
		ref, err := name.NewTag(Registry + "/" + n + ":" + t)
		if err != nil {
			return "", err
		}
		refs[ref] = img
	}
	path := filepath.Join(out, n+".tar")
	if err := tarball.MultiRefWriteToFile(path+".tmp", refs); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(out, n+".tag"), []byte(contentTag(digest)+"\n"), 0o644); err != nil {
		return "", err
	}
	return path, os.Rename(path+".tmp", path)
}

// contentTag is the tag naming an image by its content.
func contentTag(d v1.Hash) string { return "sha-" + d.Hex[:16] }

// file is one entry of a layer: a directory (path ends in /) or a copy of src.
type file struct {
	path, src string
	mode      int64
}

// tarOf writes a layer whose entries are owned by root with time 0, so
// that the same binaries always give the same digest.
func tarOf(files []file) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// Parent directories first, parents before children.
	dirs := map[string]bool{}
	for _, f := range files {
		for d := filepath.Dir(filepath.Clean(f.path)); d != "/" && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	var parents []string
	for d := range dirs {
		parents = append(parents, d)
	}
	sortByDepth(parents)
	for _, d := range parents {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		if f.src == "" {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: f.path[1:], Mode: f.mode, ModTime: time.Unix(0, 0)}); err != nil {
				return nil, err
			}
			continue
		}
		b, err := os.ReadFile(f.src)
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.path[1:], Mode: f.mode, Size: int64(len(b)), ModTime: time.Unix(0, 0)}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// sortByDepth orders directories so that parents come before children.
func sortByDepth(dirs []string) {
	for i := 1; i < len(dirs); i++ {
		for j := i; j > 0 && (depth(dirs[j]) < depth(dirs[j-1]) || depth(dirs[j]) == depth(dirs[j-1]) && dirs[j] < dirs[j-1]); j-- {
			dirs[j], dirs[j-1] = dirs[j-1], dirs[j]
		}
	}
}

func depth(p string) int {
	n := 0
	for _, c := range p {
		if c == '/' {
			n++
		}
	}
	return n
}
