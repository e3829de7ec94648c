package cuda_test

import (
	"path/filepath"
	"testing"

	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
	"github.com/leo-operator/leo/runtime/sample"
	"github.com/leo-operator/leo/runtime/synth"
)

// synthBatch is a two-token prompt of one sequence.
var synthBatch = model.Batch{Tokens: []int32{1, 450}, Pos: []int{0, 1}, Seq: []int{0, 0}}

func argmax(x []float32) int32 { return sample.Argmax(x) }

// writeModel writes a synthetic model (random weights, seed 7, the real
// vocabulary) of shape and type to a temporary file.
func writeModel(t testing.TB, shape string, typ quant.Type) string {
	t.Helper()
	vocab, err := synth.Llama2Vocab()
	if err != nil {
		t.Fatal(err)
	}
	c, err := synth.Shape(shape)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), shape+"-"+typ.String()+".gguf")
	if err := synth.Write(path, synth.Options{Name: shape, Config: c, Type: typ, Seed: 7, Vocab: vocab}); err != nil {
		t.Fatal(err)
	}
	return path
}
