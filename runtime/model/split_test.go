package model_test

import (
	"math"
	"testing"

	"github.com/leo-operator/leo/internal/testmodel"
	"github.com/leo-operator/leo/runtime/loader"
	"github.com/leo-operator/leo/runtime/model"
	"github.com/leo-operator/leo/runtime/quant"
)

// A batch of several sequences that runs in parts, one per thread, gives
// the bits each sequence gets when it runs alone (unsplit): the prompts of
// 16 sequences together, then a decode step of one token each, with all
// logits wanted and with only the last token's. (Q8_0 and Q4_0: the CPU's
// kernels for them give a token the same bits in any batch. For F16 and
// F32 weights it has a 4×4 tile kernel for several tokens and another for
// one, which round differently: there a token's last bits depend on its
// batch, split or not, as a run of this test with F16 weights showed.)
func TestSplitBatchMatchesSequencesAlone(t *testing.T) {
	for _, kv := range []quant.Type{quant.F16, quant.F32} {
		for _, wt := range []quant.Type{quant.Q8_0, quant.Q4_0} {
			t.Run(kv.String()+"/"+wt.String(), func(t *testing.T) {
				testSplit(t, wt, kv)
			})
		}
	}
}

func testSplit(t *testing.T, wt, kv quant.Type) {
	l, err := loader.Open(testmodel.Path(t, testmodel.Tiny, wt), 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	const seqs, promptLen = 16, 3
	together, err := l.Model.NewStateKV(seqs, 64, 64, kv)
	if err != nil {
		t.Fatal(err)
	}
	alone, err := l.Model.NewStateKV(seqs, 64, 64, kv)
	if err != nil {
		t.Fatal(err)
	}
	vocab := l.Model.Config.VocabSize
	tok := func(s, p int) int32 { return int32(1 + (s*131+p*17)%(vocab-1)) }

	// check runs b on together (in parts) and each sequence of b alone on
	// alone, and compares the logits bit for bit.
	check := func(what string, b *model.Batch) {
		t.Helper()
		if !model.Splits(together, b) {
			t.Fatalf("%s: a batch of %d tokens of %d sequences does not run in parts", what, len(b.Tokens), seqs)
		}
		got, err := together.Forward(b)
		if err != nil {
			t.Fatal(err)
		}
		got = append([]float32(nil), got...)
		var want []float32
		for start := 0; start < len(b.Tokens); {
			end := start + 1
			for end < len(b.Tokens) && b.Seq[end] == b.Seq[start] {
				end++
			}
			one := &model.Batch{Tokens: b.Tokens[start:end], Pos: b.Pos[start:end], Seq: b.Seq[start:end]}
			if b.Logits != nil {
				one.Logits = b.Logits[start:end]
			} else {
				one.Logits = make([]bool, end-start)
				one.Logits[end-start-1] = end == len(b.Tokens)
			}
			if model.Splits(alone, one) {
				t.Fatalf("%s: one sequence's %d tokens would run in parts", what, end-start)
			}
			out, err := alone.Forward(one)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, out...)
			start = end
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d logits in parts, %d alone", what, len(got), len(want))
		}
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s: logit %d (row %d) is %v in parts, %v alone", what, i, i/vocab, got[i], want[i])
			}
		}
	}

	var prompts model.Batch
	for s := range seqs {
		for p := range promptLen {
			prompts.Tokens = append(prompts.Tokens, tok(s, p))
			prompts.Pos = append(prompts.Pos, p)
			prompts.Seq = append(prompts.Seq, s)
			prompts.Logits = append(prompts.Logits, p == promptLen-1)
		}
	}
	check("prompts", &prompts)
	for step := range 2 {
		var d model.Batch
		for s := range seqs {
			d.Tokens = append(d.Tokens, tok(s, promptLen+step))
			d.Pos = append(d.Pos, promptLen+step)
			d.Seq = append(d.Seq, s)
		}
		if step == 0 {
			d.Logits = make([]bool, seqs)
			for i := range d.Logits {
				d.Logits[i] = true
			}
			check("decode, every sequence's logits", &d)
		} else {
			check("decode, the last token's logits", &d) // Logits nil
		}
	}
}

// A batch is cut only at sequence boundaries, into parts of at least 8
// tokens; one that cannot be is not split.
func TestSplitOnlyBetweenSequences(t *testing.T) {
	l, s := tinyState(t, 4)
	batch := func(lens ...int) *model.Batch {
		b := &model.Batch{}
		for seq, n := range lens {
			for p := range n {
				b.Tokens, b.Pos, b.Seq = append(b.Tokens, 1), append(b.Pos, p), append(b.Seq, seq)
			}
		}
		return b
	}
	for _, c := range []struct {
		lens  []int // tokens of each sequence, in batch order
		split bool
	}{
		{[]int{8, 8}, true},
		{[]int{4, 4, 4, 4}, true},  // cut after the second
		{[]int{12, 4, 9}, true},    // cut after the first: 12 | 13
		{[]int{1, 1, 1, 1}, false}, // too few tokens
		{[]int{9, 7}, false},       // the cut must come after 9, which leaves 7
		{[]int{30, 1, 1}, false},   // the long prompt leaves 2 tokens for a second part
		{[]int{20}, false},         // one sequence
	} {
		if got := model.Splits(s, batch(c.lens...)); got != c.split {
			t.Errorf("sequences of %v tokens: split %v, want %v", c.lens, got, c.split)
		}
	}
	// Slot 0's tokens on both sides of slot 1's: a cut anywhere would put
	// slot 0 in two parts.
	b := batch(8, 8)
	for p := range 8 {
		b.Tokens, b.Pos, b.Seq = append(b.Tokens, 1), append(b.Pos, 8+p), append(b.Seq, 0)
	}
	if model.Splits(s, b) {
		t.Error("a batch with slot 0's tokens before and after slot 1's is split")
	}
	if got, err := s.Forward(b); err != nil || len(got) != l.Model.Config.VocabSize {
		t.Errorf("that batch, unsplit: %d logits, %v", len(got), err)
	}
}

// The cut balances tokens (the classifier, whose work is by far the
// bigger for Tiny, runs after the parts on all threads): a new prompt of
// 8 tokens then 16 decode tokens, one per sequence, is cut after 12.
func TestSplitBalancesTokens(t *testing.T) {
	_, s := tinyState(t, 17)
	b := &model.Batch{}
	for p := range 8 {
		b.Tokens, b.Pos, b.Seq, b.Logits = append(b.Tokens, 1), append(b.Pos, p), append(b.Seq, 16), append(b.Logits, p == 7)
	}
	for seq := range 16 {
		b.Tokens, b.Pos, b.Seq, b.Logits = append(b.Tokens, 1), append(b.Pos, 5), append(b.Seq, seq), append(b.Logits, true)
	}
	if got := model.Cuts(s, b); len(got) != 2 || got[0] != 12 || got[1] != 24 {
		t.Errorf("cuts %v, want [12 24]", got)
	}
}

// tinyState loads Tiny in Q8_0 on two threads (so that its states have
// parts on any machine) and makes a state of slots sequences.
func tinyState(t *testing.T, slots int) (*loader.Loaded, *model.State) {
	t.Helper()
	l, err := loader.Open(testmodel.Path(t, testmodel.Tiny, quant.Q8_0), 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	s, err := l.Model.NewStateKV(slots, 64, 64, quant.F16)
	if err != nil {
		t.Fatal(err)
	}
	return l, s
}
