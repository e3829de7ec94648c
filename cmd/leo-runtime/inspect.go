package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/leo-operator/leo/runtime/gguf"
	"github.com/leo-operator/leo/runtime/model"
)

// modelFacts is what inspect --json prints: the facts about a model file
// that the operator records in a LlamaModel's status.
type modelFacts struct {
	File          string  `json:"file"`
	SizeBytes     int64   `json:"size_bytes"`
	GGUFVersion   uint32  `json:"gguf_version"`
	Architecture  string  `json:"architecture"`
	Name          string  `json:"name,omitempty"`
	Parameters    int64   `json:"parameters"`
	FileType      string  `json:"file_type"` // the type of most weight bytes
	ContextLength int     `json:"context_length"`
	Embedding     int     `json:"embedding_length"`
	FeedForward   int     `json:"feed_forward_length"`
	Layers        int     `json:"block_count"`
	Heads         int     `json:"head_count"`
	KVHeads       int     `json:"head_count_kv"`
	RopeBase      float32 `json:"rope_freq_base"`
	VocabSize     int     `json:"vocab_size"`
	Tokenizer     string  `json:"tokenizer"`
	ChatTemplate  bool    `json:"chat_template"`
	// TensorTypes maps each weight type to its tensors' count and bytes.
	TensorTypes map[string]typeUse `json:"tensor_types"`
	// KVBytesPerToken is the F16 KV cache's bytes per position.
	KVBytesPerToken int64 `json:"kv_cache_bytes_per_token_f16"`
}

type typeUse struct {
	Tensors int   `json:"tensors"`
	Bytes   int64 `json:"bytes"`
}

func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the model's facts as JSON (for the operator)")
	pos, err := parseInterspersed(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("inspect takes one GGUF file")
	}
	f, err := gguf.Open(pos[0])
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // read only
	facts, err := inspectFacts(pos[0], f)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(facts)
	}
	if err := printFacts(stdout, facts); err != nil {
		return err
	}
	_, _ = fmt.Fprintln(stdout)
	return f.Describe(stdout) // every metadata key and tensor
}

func inspectFacts(path string, f *gguf.File) (*modelFacts, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	c, err := model.ConfigFromGGUF(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	facts := &modelFacts{
		File: path, SizeBytes: fi.Size(), GGUFVersion: f.Version, Architecture: "llama",
		ContextLength: c.ContextLength, Embedding: c.Dim, FeedForward: c.HiddenDim, Layers: c.Layers,
		Heads: c.Heads, KVHeads: c.KVHeads, RopeBase: c.RopeBase, VocabSize: c.VocabSize,
		TensorTypes:     map[string]typeUse{},
		KVBytesPerToken: int64(2 * 2 * c.Layers * c.KVDim()),
	}
	facts.Name, _ = f.String("general.name")
	facts.Tokenizer, _ = f.String("tokenizer.ggml.model")
	_, facts.ChatTemplate = f.Lookup("tokenizer.chat_template")
	matrices := map[string]int{}
	for _, t := range f.Tensors {
		facts.Parameters += int64(t.Elements()) //nolint:gosec // element counts of a parsed file fit
		u := facts.TensorTypes[t.Type.String()]
		u.Tensors++
		u.Bytes += int64(t.Size) //nolint:gosec // as above
		facts.TensorTypes[t.Type.String()] = u
		if len(t.Shape) == 2 {
			matrices[t.Type.String()]++
		}
	}
	most := 0
	for typ, n := range matrices {
		if n > most || (n == most && typ < facts.FileType) {
			most, facts.FileType = n, typ
		}
	}
	return facts, nil
}

func printFacts(w io.Writer, m *modelFacts) error {
	var types []string
	for t, u := range m.TensorTypes {
		types = append(types, fmt.Sprintf("%s: %d tensors, %s", t, u.Tensors, mib(u.Bytes)))
	}
	sort.Strings(types)
	name := m.Name
	if name == "" {
		name = "(no name)"
	}
	_, err := fmt.Fprintf(w, `%s: %s
  %s, %.2fB parameters, mostly %s, %s on disk (GGUF v%d)
  layers %d, embedding %d, feed-forward %d, heads %d (key/value heads %d), rope base %g
  context %d tokens; KV cache %.1f KiB per token in F16
  tokenizer %q, %d tokens; chat template: %v
  tensor types: %s
`, m.File, name, m.Architecture, float64(m.Parameters)/1e9, m.FileType, mib(m.SizeBytes), m.GGUFVersion,
		m.Layers, m.Embedding, m.FeedForward, m.Heads, m.KVHeads, m.RopeBase,
		m.ContextLength, float64(m.KVBytesPerToken)/1024, m.Tokenizer, m.VocabSize, m.ChatTemplate, strings.Join(types, "; "))
	return err
}
