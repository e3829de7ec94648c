package model_test

import (
	"strings"
	"testing"

	"github.com/leo-operator/leo/internal/testmodel"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
)

// A closed state refuses to run (on a GPU its cache is gone) with an
// error, not a panic.
func TestClosedStateRefuses(t *testing.T) {
	l := testmodel.Load(t, testmodel.Tiny, quant.Q8_0)
	st, err := l.Model.NewState(1, 16, 4)
	if err != nil {
		t.Fatal(err)
	}
	b := &model.Batch{Tokens: []int32{1, 2}, Pos: []int{0, 1}, Seq: []int{0, 0}}
	if _, err := st.Forward(b); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Forward(b); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Forward after Close: %v; want an error saying the state was closed", err)
	}
}
