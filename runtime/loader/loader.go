// Package loader opens a GGUF model file and makes it ready to run: the
// tokenizer from its metadata, the weights on the GPU (runtime/cuda) when
// the kernel library and a GPU are there, else on the CPU. Every
// leo-runtime command that runs a model starts here.
package loader

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/leo-operator/leo/runtime/cpu"
	"github.com/leo-operator/leo/runtime/cuda"
	"github.com/leo-operator/leo/runtime/gguf"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/tokenizer"
)

// Loaded is a model ready to run. Close releases the file's mapping, the
// worker threads and the GPU's memory.
type Loaded struct {
	File      *gguf.File
	Pool      *cpu.Pool
	Model     *model.Model
	Tokenizer *tokenizer.Tokenizer
	// Name is the file's general.name, or its base name without
	// extension when it has none.
	Name string
	// ChatTemplate is the file's tokenizer.chat_template (Jinja), "" when
	// it has none.
	ChatTemplate string
	// Backend says where the model runs: "cpu", or "cuda" with the GPU's
	// name. CPUReason says why a model asked to run on the GPU if it can
	// (Options.Backend "auto") runs on the CPU.
	Backend, CPUReason string
	gpu                *cuda.Backend
}

// Close releases the model.
func (l *Loaded) Close() {
	if l.gpu != nil {
		_ = l.gpu.Close() // freeing device memory fails only with a broken device, which nothing here can mend
	}
	l.Pool.Close()
	_ = l.File.Close() // unmapping a mapping made by Open fails only on a bug; nothing to do then
}

// Backends are the values of Options.Backend.
const (
	Auto = "auto" // the GPU when the kernel library and a GPU are there, else the CPU
	CPU  = "cpu"
	CUDA = "cuda" // the GPU or an error
)

// Options say how to load a model.
type Options struct {
	Threads int    // CPU threads (for the CPU backend, and host work beside a GPU)
	Backend string // Auto (""), CPU or CUDA
	CUDA    cuda.Options
}

// Open loads the GGUF model at path onto a CPU backend of threads threads.
func Open(path string, threads int) (*Loaded, error) {
	return OpenWith(path, Options{Threads: threads, Backend: CPU})
}

// OpenWith loads the GGUF model at path as o says.
func OpenWith(path string, o Options) (*Loaded, error) {
	if o.Threads < 1 {
		return nil, fmt.Errorf("threads must be at least 1 (got %d)", o.Threads)
	}
	switch o.Backend {
	case "", Auto, CPU, CUDA:
	default:
		return nil, fmt.Errorf("backend %q is not one of auto, cpu, cuda", o.Backend)
	}
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		_ = f.Close() // err says why Open fails
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pool := cpu.NewPool(o.Threads)
	l := &Loaded{File: f, Pool: pool, Tokenizer: tok, Backend: CPU}
	var b model.Backend = cpu.Backend{Pool: pool}
	if o.Backend != CPU {
		g, err := cuda.Open(cpu.Backend{Pool: pool}, o.CUDA)
		switch {
		case err == nil:
			b, l.gpu = g, g
			l.Backend = fmt.Sprintf("cuda (GPU %d: %s)", g.Info.Index, g.Info.Name)
		case o.Backend == CUDA || !errors.Is(err, cuda.ErrUnavailable):
			pool.Close()
			_ = f.Close() // err says why Open fails
			return nil, err
		default:
			l.CPUReason = err.Error()
		}
	}
	if l.Model, err = model.Load(f, b); err != nil {
		l.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	l.Name, _ = f.String("general.name")
	if l.Name == "" {
		l.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	l.ChatTemplate, _ = f.String("tokenizer.chat_template")
	return l, nil
}
