// Package synth writes Llama-shaped GGUF models with deterministic random
// weights and the real Llama 2 vocabulary, for tests and benchmarks: speed
// does not depend on the weights' values, and correctness is checked by
// running the same file through leo and llama.cpp.
package synth

import (
	"fmt"
	"sort"
	"strings"

	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
)

// Shapes are the model shapes gen-model knows, by name. The public ones
// follow the published configurations; "test-*" ones are small enough for
// unit tests in CI.
var Shapes = map[string]model.Config{
	// Karpathy's tinyllamas (llama2.c), with the Llama 2 vocabulary.
	"stories15M":  llama(288, 768, 6, 6, 6, 256),
	"stories110M": llama(768, 2048, 12, 12, 12, 1024),
	// TinyLlama-1.1B (grouped-query attention: 32 query heads, 4 kv heads).
	"tinyllama-1.1b": llama(2048, 5632, 22, 32, 4, 2048),
	// Meta's Llama 2 7B.
	"llama-2-7b": llama(4096, 11008, 32, 32, 32, 4096),
	// Meta's Llama 2 70B (grouped-query attention: 64 query heads, 8 kv heads).
	"llama-2-70b": llama(8192, 28672, 80, 64, 8, 4096),
	// Small shapes for tests, one with grouped-query attention and one
	// without; widths are multiples of 256 so that k-quants apply.
	"test-gqa": llama(256, 512, 2, 8, 2, 512),
	"test-mha": llama(256, 768, 3, 4, 4, 512),
	// Wide enough that a GPU kernel over the hidden layer takes several
	// waves of thread blocks (runtime/cuda's fused-activation test).
	"test-wide": llama(1024, 8192, 2, 8, 8, 512),
}

func llama(dim, hidden, layers, heads, kvHeads, ctx int) model.Config {
	return model.Config{
		Dim: dim, HiddenDim: hidden, Layers: layers, Heads: heads, KVHeads: kvHeads,
		VocabSize: 32000, ContextLength: ctx, RopeBase: 10000, RopeDim: dim / heads, NormEps: 1e-5,
	}
}

// ShapeNames lists the known shapes, sorted.
func ShapeNames() []string {
	names := make([]string, 0, len(Shapes))
	for n := range Shapes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Shape returns the named shape or an error listing the known ones.
func Shape(name string) (model.Config, error) {
	c, ok := Shapes[name]
	if !ok {
		return model.Config{}, fmt.Errorf("unknown shape %q; known shapes: %s", name, strings.Join(ShapeNames(), ", "))
	}
	return c, nil
}

// FileTypes are the weight types a generated file can have, named as
// llama.cpp names its quantizations.
var FileTypes = []quant.Type{quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q4_0, quant.Q4K, quant.Q6K}

// TensorType is the type a tensor gets in a file of type ft, following
// llama.cpp's quantize: norm gains stay F32, and in files quantized below
// 6 bits (Q4_0, Q4_K) the classifier output.weight is Q6_K because it
// matters most for quality. Matrices whose rows are not a whole number of
// k-quant super-blocks fall back to Q8_0, as llama.cpp falls back too.
func TensorType(ft quant.Type, s model.TensorSpec) quant.Type {
	if s.Vector {
		return quant.F32
	}
	t := ft
	if s.Name == "output.weight" && (ft == quant.Q4_0 || ft == quant.Q4K) {
		t = quant.Q6K
	}
	if t.BlockElems() > 1 && s.Cols%t.BlockElems() != 0 {
		if s.Cols%quant.Q8_0.BlockElems() == 0 {
			return quant.Q8_0
		}
		return quant.F16
	}
	return t
}
