// Package loader opens a GGUF model file and makes it ready to run on the
// CPU: the tokenizer from its metadata, the weights on the CPU backend.
// Every leo-runtime command that runs a model starts here.
package loader

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/leo-operator/leo/runtime/cpu"
	"github.com/leo-operator/leo/runtime/gguf"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/tokenizer"
)

// Loaded is a model ready to run. Close releases the file's mapping and
// the worker threads.
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
}

// Close releases the model.
func (l *Loaded) Close() {
	l.Pool.Close()
	_ = l.File.Close() // unmapping a mapping made by Open fails only on a bug; nothing to do then
}

// Open loads the GGUF model at path onto a CPU backend of threads threads.
func Open(path string, threads int) (*Loaded, error) {
	if threads < 1 {
		return nil, fmt.Errorf("threads must be at least 1 (got %d)", threads)
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
	pool := cpu.NewPool(threads)
	m, err := model.Load(f, cpu.Backend{Pool: pool})
	if err != nil {
		pool.Close()
		_ = f.Close() // err says why Open fails
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	l := &Loaded{File: f, Pool: pool, Model: m, Tokenizer: tok}
	l.Name, _ = f.String("general.name")
	if l.Name == "" {
		l.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	l.ChatTemplate, _ = f.String("tokenizer.chat_template")
	return l, nil
}
