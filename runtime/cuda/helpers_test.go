package cuda_test

import (
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/sample"
)

// synthBatch is a two-token prompt of one sequence.
var synthBatch = model.Batch{Tokens: []int32{1, 450}, Pos: []int{0, 1}, Seq: []int{0, 0}}

func argmax(x []float32) int32 { return sample.Argmax(x) }
