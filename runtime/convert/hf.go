package convert

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/leo-operator/leo/runtime/gguf"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/safetensors"
	"github.com/leo-operator/leo/runtime/tokenizer"
)

// hfConfig is the part of a transformers config.json that describes a
// Llama model.
type hfConfig struct {
	Architectures         []string        `json:"architectures"`
	ModelType             string          `json:"model_type"`
	HiddenSize            int             `json:"hidden_size"`
	IntermediateSize      int             `json:"intermediate_size"`
	NumHiddenLayers       int             `json:"num_hidden_layers"`
	NumAttentionHeads     int             `json:"num_attention_heads"`
	NumKeyValueHeads      int             `json:"num_key_value_heads"`
	HeadDim               int             `json:"head_dim"`
	VocabSize             int             `json:"vocab_size"`
	MaxPositionEmbeddings int             `json:"max_position_embeddings"`
	RMSNormEps            float64         `json:"rms_norm_eps"`
	RopeTheta             float64         `json:"rope_theta"`
	RopeScaling           json.RawMessage `json:"rope_scaling"`
	TieWordEmbeddings     bool            `json:"tie_word_embeddings"`
	AttentionBias         bool            `json:"attention_bias"`
	MLPBias               bool            `json:"mlp_bias"`
}

// HFCheckpoint is an open Hugging Face Llama checkpoint: a directory with
// config.json, safetensors shards (with or without
// model.safetensors.index.json) and tokenizer.model.
type HFCheckpoint struct {
	Config model.Config
	Tied   bool // no lm_head: the classifier is the embedding
	Vocab  tokenizer.Vocab
	shards []*safetensors.File
	where  map[string]*safetensors.File // HF tensor name → its shard
}

// OpenHF reads a checkpoint's configuration, tokenizer and shard headers.
// Tensors are read when the GGUF file is written.
func OpenHF(dir string) (*HFCheckpoint, error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("a Hugging Face checkpoint needs config.json: %w", err)
	}
	var hc hfConfig
	if err := json.Unmarshal(b, &hc); err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	c, err := hc.modelConfig()
	if err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	ck := &HFCheckpoint{Config: c, Tied: hc.TieWordEmbeddings, where: map[string]*safetensors.File{}}
	if err := ck.openShards(dir); err != nil {
		_ = ck.Close()
		return nil, err
	}
	if _, ok := ck.where["lm_head.weight"]; !ok {
		ck.Tied = true // transformers ties the weights when lm_head is absent
	}
	if ck.Vocab, err = hfVocab(dir, c.VocabSize); err != nil {
		_ = ck.Close()
		return nil, err
	}
	return ck, nil
}

func (hc hfConfig) modelConfig() (model.Config, error) {
	llama := hc.ModelType == "llama"
	for _, a := range hc.Architectures {
		llama = llama || a == "LlamaForCausalLM"
	}
	switch {
	case !llama:
		return model.Config{}, fmt.Errorf("model_type %q, architectures %q: leo converts Llama models (LlamaForCausalLM)", hc.ModelType, hc.Architectures)
	case hc.AttentionBias || hc.MLPBias:
		return model.Config{}, errors.New("attention_bias and mlp_bias are not supported (Llama has no biases)")
	case len(hc.RopeScaling) > 0 && string(hc.RopeScaling) != "null":
		return model.Config{}, fmt.Errorf("rope_scaling %s is not supported yet", hc.RopeScaling)
	}
	c := model.Config{
		Dim: hc.HiddenSize, HiddenDim: hc.IntermediateSize, Layers: hc.NumHiddenLayers,
		Heads: hc.NumAttentionHeads, KVHeads: hc.NumKeyValueHeads, VocabSize: hc.VocabSize,
		ContextLength: hc.MaxPositionEmbeddings, RopeBase: float32(hc.RopeTheta), NormEps: float32(hc.RMSNormEps),
	}
	if c.KVHeads == 0 {
		c.KVHeads = c.Heads // transformers' default
	}
	if c.RopeBase == 0 {
		c.RopeBase = 10000
	}
	if c.NormEps == 0 {
		c.NormEps = 1e-6 // LlamaConfig's default
	}
	if c.ContextLength == 0 {
		c.ContextLength = 2048
	}
	if c.Heads > 0 {
		c.RopeDim = c.Dim / c.Heads
		if hc.HeadDim != 0 && hc.HeadDim != c.RopeDim {
			return model.Config{}, fmt.Errorf("head_dim %d differs from hidden_size / num_attention_heads = %d, which leo does not support", hc.HeadDim, c.RopeDim)
		}
	}
	return c, c.Validate()
}

func (ck *HFCheckpoint) openShards(dir string) error {
	var files []string
	if b, err := os.ReadFile(filepath.Join(dir, "model.safetensors.index.json")); err == nil {
		var idx struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(b, &idx); err != nil {
			return fmt.Errorf("model.safetensors.index.json: %w", err)
		}
		seen := map[string]bool{}
		for _, f := range idx.WeightMap {
			if !seen[f] && filepath.Base(f) == f {
				seen[f] = true
				files = append(files, f)
			}
		}
		sort.Strings(files)
	}
	if len(files) == 0 {
		m, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
		for _, p := range m {
			files = append(files, filepath.Base(p))
		}
	}
	if len(files) == 0 {
		return fmt.Errorf("%s has no safetensors files (PyTorch .bin checkpoints are not read: convert them to safetensors)", dir)
	}
	for _, name := range files {
		f, err := safetensors.Open(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		ck.shards = append(ck.shards, f)
		for t := range f.Tensors {
			if _, dup := ck.where[t]; dup {
				return fmt.Errorf("tensor %s is in two shards", t)
			}
			ck.where[t] = f
		}
	}
	return nil
}

// hfVocab reads tokenizer.model, or else a SentencePiece-style
// tokenizer.json, padding the vocabulary to the model's size
// (checkpoints often have embedding rows for tokens the tokenizer never
// produces) as llama.cpp's converter does.
func hfVocab(dir string, size int) (tokenizer.Vocab, error) {
	var v tokenizer.Vocab
	b, err := os.ReadFile(filepath.Join(dir, "tokenizer.model"))
	if err == nil {
		if v, err = tokenizer.ParseSentencePiece(b); err != nil {
			return v, fmt.Errorf("tokenizer.model: %w", err)
		}
	} else {
		j, jerr := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
		if jerr != nil {
			return v, fmt.Errorf("a Llama checkpoint needs tokenizer.model or tokenizer.json: %w", err)
		}
		if v, err = tokenizer.ParseHFTokenizerJSON(j); err != nil {
			return v, err
		}
	}
	switch n := len(v.Tokens); {
	case n > size:
		return v, fmt.Errorf("the tokenizer has %d tokens, more than the model's vocab_size %d", n, size)
	case n < size:
		v.Tokens = append([]string(nil), v.Tokens...)
		scores := make([]float32, size)
		copy(scores, v.Scores)
		types := make([]tokenizer.TokenType, size)
		for i := range types {
			switch {
			case i >= n:
				types[i] = tokenizer.Unused // never produced, decodes to nothing
			case v.Types != nil:
				types[i] = v.Types[i]
			default:
				types[i] = tokenizer.Normal
			}
		}
		for i := n; i < size; i++ {
			v.Tokens = append(v.Tokens, fmt.Sprintf("[PAD%d]", i))
		}
		v.Scores, v.Types = scores, types
	}
	return v, nil
}

// Close closes the shards.
func (ck *HFCheckpoint) Close() error {
	var errs []error
	for _, f := range ck.shards {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

// hfName is the transformers name of a GGUF tensor, and how many heads
// its rows are permuted in (0: none).
func hfName(ggufName string, c model.Config) (string, int) {
	var layer int
	var rest string
	if n, _ := fmt.Sscanf(ggufName, "blk.%d.%s", &layer, &rest); n == 2 {
		p := fmt.Sprintf("model.layers.%d.", layer)
		switch rest {
		case "attn_norm.weight":
			return p + "input_layernorm.weight", 0
		case "attn_q.weight":
			return p + "self_attn.q_proj.weight", c.Heads
		case "attn_k.weight":
			return p + "self_attn.k_proj.weight", c.KVHeads
		case "attn_v.weight":
			return p + "self_attn.v_proj.weight", 0
		case "attn_output.weight":
			return p + "self_attn.o_proj.weight", 0
		case "ffn_norm.weight":
			return p + "post_attention_layernorm.weight", 0
		case "ffn_gate.weight":
			return p + "mlp.gate_proj.weight", 0
		case "ffn_up.weight":
			return p + "mlp.up_proj.weight", 0
		case "ffn_down.weight":
			return p + "mlp.down_proj.weight", 0
		}
	}
	switch ggufName {
	case "token_embd.weight":
		return "model.embed_tokens.weight", 0
	case "output_norm.weight":
		return "model.norm.weight", 0
	case "output.weight":
		return "lm_head.weight", 0
	}
	return "", 0
}

// Writer returns a GGUF writer of the checkpoint: matrices in their own
// type (F32, F16 or BF16), norms in F32, the query and key rows put back
// in the order of adjacent rotary pairs that GGUF (and Meta's original
// checkpoints) use. Tensors are read as the writer writes them, one piece
// at a time; the checkpoint must stay open until then.
func (ck *HFCheckpoint) Writer(name string) (*gguf.Writer, error) {
	c := ck.Config
	w := gguf.NewWriter()
	w.SetString("general.architecture", "llama")
	w.SetString("general.name", name)
	model.WriteConfig(w, c)
	tokenizer.WriteGGUF(w, ck.Vocab)
	fileType := uint32(0) // all F32
	for _, s := range model.Tensors(c) {
		if s.Name == "output.weight" && ck.Tied {
			continue
		}
		hn, heads := hfName(s.Name, c)
		src, ok := ck.where[hn]
		if !ok {
			return nil, fmt.Errorf("the checkpoint has no tensor %s (for %s)", hn, s.Name)
		}
		t := src.Tensors[hn]
		want := []int64{int64(s.Rows), int64(s.Cols)}
		if s.Vector {
			want = []int64{int64(s.Cols)}
		}
		if !equalShape(t.Shape, want) {
			return nil, fmt.Errorf("tensor %s has shape %v; config.json makes it %v", hn, t.Shape, want)
		}
		in, err := dtypeOf(t.DType)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", hn, err)
		}
		out := in
		if s.Vector {
			out = quant.F32
		} else if in != quant.F32 {
			fileType = map[quant.Type]uint32{quant.F16: 1, quant.BF16: 32}[in]
		}
		rows := s.Rows
		if s.Vector {
			rows = 1
		}
		err = w.AddTensor(s.Name, out, shapeOf(s), func(dst io.Writer) error {
			return copyRows(dst, src, t, in, out, rows, s.Cols, heads)
		})
		if err != nil {
			return nil, err
		}
	}
	w.SetUint32("general.file_type", fileType)
	return w, nil
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func dtypeOf(s string) (quant.Type, error) {
	switch s {
	case "F32":
		return quant.F32, nil
	case "F16":
		return quant.F16, nil
	case "BF16":
		return quant.BF16, nil
	}
	return 0, fmt.Errorf("dtype %s is not converted (F32, F16 and BF16 are)", s)
}

// copyRows writes tensor t's rows (each cols elements of type in) as type
// out, a block of rows at a time. With heads > 0 the rows of each head are
// reordered from transformers' rotate-half layout (the first half of a
// head's rotary pairs, then the second half) to adjacent pairs: GGUF row
// h·d + 2j + i is transformers row h·d + i·d/2 + j, as llama.cpp's
// convert_hf_to_gguf.py permutes them.
func copyRows(dst io.Writer, src *safetensors.File, t safetensors.TensorInfo, in, out quant.Type, rows, cols, heads int) error {
	inRow, _ := in.RowBytes(cols)
	block := max(1, (1<<20)/max(inRow, 1)) // about 1 MiB read at a time
	if heads > 0 {
		if rows%heads != 0 || (rows/heads)%2 != 0 {
			return fmt.Errorf("tensor %s: %d rows do not split into %d heads of an even size", t.Name, rows, heads)
		}
		block = rows / heads // one head at a time
	}
	buf := make([]byte, block*inRow)
	perm := make([]byte, block*inRow)
	var f32 []float32
	var outBuf []byte
	for r := 0; r < rows; r += block {
		n := min(block, rows-r)
		piece := buf[:n*inRow]
		if err := src.ReadAt(t, piece, int64(r*inRow)); err != nil {
			return err
		}
		if heads > 0 {
			d := n
			for j := 0; j < d/2; j++ {
				for i := 0; i < 2; i++ {
					copy(perm[(2*j+i)*inRow:(2*j+i+1)*inRow], piece[(i*d/2+j)*inRow:(i*d/2+j+1)*inRow])
				}
			}
			piece = perm[:n*inRow]
		}
		if in == out {
			if _, err := dst.Write(piece); err != nil {
				return err
			}
			continue
		}
		// A norm vector (or any other type change): through float32.
		if cap(f32) < n*cols {
			f32 = make([]float32, n*cols)
			outBuf = make([]byte, 4*n*cols)
		}
		if err := quant.Dequantize(in, piece, f32[:n*cols]); err != nil {
			return err
		}
		if out != quant.F32 {
			return fmt.Errorf("tensor %s: converting %s to %s is not supported here", t.Name, in, out)
		}
		for i, x := range f32[:n*cols] {
			binary.LittleEndian.PutUint32(outBuf[4*i:], math.Float32bits(x))
		}
		if _, err := dst.Write(outBuf[:4*n*cols]); err != nil {
			return err
		}
	}
	return nil
}
