// Package sample picks the next token from a model's logits with the
// semantics of Hugging Face transformers' generate() for a causal LM, and
// finds stop strings in the decoded text (StopMatcher).
//
// Sampler.Next applies, in generate()'s order:
//
//  1. the logits processors, always:
//     repetition penalty (RepetitionPenaltyLogitsProcessor): every distinct
//     token id already in the sequence, prompt included, gets
//     score<0 ? score*penalty : score/penalty;
//     min new tokens (MinNewTokensLengthLogitsProcessor): the EOS ids get
//     -inf while fewer than min_new_tokens tokens were generated;
//  2. then greedy decoding (argmax, the first index on ties, as
//     torch.argmax) when do_sample is false, or else the warpers:
//     temperature (divide), top-k (TopKLogitsWarper: keep the scores ≥ the
//     k-th largest, so ties at the threshold stay), top-p
//     (TopPLogitsWarper: in ascending order, remove the tokens whose
//     cumulative probability is ≤ 1-top_p, keeping at least one), and a
//     multinomial draw from the softmax of what is left.
//
// Arithmetic on scores is float32, as torch does on a float32 tensor (so
// the penalty and temperature give the same bits). Where this package has
// to choose, it chooses as follows:
//
//   - Top-p's cumulative probabilities are float64 (torch's are float32
//     with its own summation order, which cannot be copied), so a token
//     within rounding of the 1-top_p boundary may fall the other way.
//     Among equal scores, top-p removes the lower token id first, as a
//     stable ascending sort orders them (torch.sort promises no order
//     among equal values; on CPU it is stable in practice).
//   - A NaN score counts as -inf: it is never picked (torch.argmax would
//     pick it). +inf scores share all the probability equally.
//   - If every score is -inf (or NaN), there is no distribution to draw
//     from (torch.multinomial raises); Next returns the argmax, token 0.
//   - Token ids in the sequence outside the vocabulary are skipped by the
//     repetition penalty, not a panic.
//   - The random stream is rand.NewPCG(seed, seedStream) from math/rand/v2,
//     whose algorithm Go keeps fixed, and each sampled token consumes
//     exactly one Float64; greedy decoding consumes none. So a seed gives
//     the same tokens in every process, on every machine.
package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// seedStream is the PCG stream constant paired with the user's seed. It is
// part of what a seed means: changing it changes every seeded output.
const seedStream = 0x6c656f2d73616d70 // "leo-samp"

// FinishReason says why generation ended, with TGI's names.
type FinishReason string

// The reasons generation ends.
const (
	// FinishNone: generation goes on.
	FinishNone FinishReason = ""
	// FinishEOS: the model produced an EOS token (and ignore_eos is off).
	FinishEOS FinishReason = "eos_token"
	// FinishLength: max_new_tokens tokens were generated.
	FinishLength FinishReason = "length"
	// FinishStop: the decoded text reached a stop string (StopMatcher
	// says so; Sampler.Finish never returns it).
	FinishStop FinishReason = "stop_sequence"
)

// Sampler picks the tokens of one sequence. It holds the random stream
// and scratch buffers sized to the vocabulary, so Next does not allocate.
// It is not safe for concurrent use; use one per sequence.
type Sampler struct {
	p     Params
	vocab int
	eos   []int32
	seed  uint64
	rng   *rand.Rand

	temperature float32 // float32, as torch divides a float32 tensor
	penalty     float32

	// seen marks the token ids already penalized in this call: seen[id]
	// == mark. Bumping mark clears it in O(1).
	seen []uint32
	mark uint32

	heap  []float32   // top-k: min-heap of the k largest scores
	cands []candidate // sampling: the tokens still in the running
}

// candidate is a token that can still be sampled: its warped score v and
// its unnormalized probability w = exp(v - max).
type candidate struct {
	w  float64
	v  float32
	id int32
}

// New returns a Sampler for a vocabulary of vocabSize tokens whose EOS
// tokens are eos (none is allowed: then only max_new_tokens and stop
// strings end generation). It returns p.Validate's error for bad
// parameters.
func New(p Params, vocabSize int, eos []int32) (*Sampler, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if vocabSize < 1 || vocabSize > math.MaxInt32 {
		return nil, fmt.Errorf("sample: vocabulary size must be in [1, %d] (got %d)", math.MaxInt32, vocabSize)
	}
	for _, id := range eos {
		if id < 0 || int(id) >= vocabSize {
			return nil, fmt.Errorf("sample: EOS token id %d is outside the vocabulary [0, %d)", id, vocabSize)
		}
	}
	s := &Sampler{
		p:           p,
		vocab:       vocabSize,
		eos:         slices.Clone(eos),
		temperature: float32(p.Temperature),
		penalty:     float32(p.RepetitionPenalty),
	}
	s.p.Stop = slices.Clone(p.Stop)
	if p.Seed != nil {
		s.seed = *p.Seed
	} else {
		s.seed = rand.Uint64()
	}
	s.rng = rand.New(rand.NewPCG(s.seed, seedStream))
	// Allocate only what the parameters use: a server holds one Sampler
	// per running sequence.
	if s.penalty != 1 {
		s.seen = make([]uint32, vocabSize)
	}
	if p.DoSample {
		if p.TopK > 0 && p.TopK < vocabSize {
			s.heap = make([]float32, p.TopK)
		}
		s.cands = make([]candidate, 0, vocabSize)
	}
	return s, nil
}

// Params returns the parameters the Sampler was made with.
func (s *Sampler) Params() Params {
	p := s.p
	p.Stop = slices.Clone(p.Stop)
	return p
}

// Seed returns the seed of the random stream: Params.Seed, or the one
// drawn when it was nil, so that a response can report it and the user
// can reproduce the output.
func (s *Sampler) Seed() uint64 { return s.seed }

// Next returns the next token, given the logits of the last position,
// seq (every token so far, prompt and generated) and generated (how many
// of them were generated). len(logits) must be the vocabulary size; Next
// panics otherwise, as that is a bug in the caller, not bad input.
//
// Next works on logits in place: on return they hold the processed (and,
// when sampling, warped) scores, with -inf for the tokens filtered out.
func (s *Sampler) Next(logits []float32, seq []int32, generated int) int32 {
	if len(logits) != s.vocab {
		panic(fmt.Sprintf("sample: Next got %d logits for a vocabulary of %d tokens", len(logits), s.vocab))
	}
	// The logits processors.
	if s.penalty != 1 {
		s.repetitionPenalty(logits, seq)
	}
	if generated < s.p.MinNewTokens {
		for _, id := range s.eos {
			logits[id] = float32(math.Inf(-1))
		}
	}
	if !s.p.DoSample {
		return argmax(logits)
	}

	// The warpers, then the draw.
	kth := s.warpTemperature(logits)
	n := s.gather(logits, kth)
	if n == 0 {
		return argmax(logits)
	}
	kept := s.cands[:n]
	if s.p.TopP < 1 {
		kept = s.topP(logits, kept)
	}
	return s.draw(kept)
}

// repetitionPenalty applies RepetitionPenaltyLogitsProcessor. HF gathers
// the scores of seq's ids, penalizes them and scatters them back, so an id
// that occurs many times is penalized once; seen makes that so here.
func (s *Sampler) repetitionPenalty(logits []float32, seq []int32) {
	s.mark++
	if s.mark == 0 { // wrapped after 2³² calls: old marks could match again
		clear(s.seen)
		s.mark = 1
	}
	for _, id := range seq {
		if id < 0 || int(id) >= s.vocab || s.seen[id] == s.mark {
			continue
		}
		s.seen[id] = s.mark
		if v := logits[id]; v < 0 {
			logits[id] = v * s.penalty
		} else {
			logits[id] = v / s.penalty
		}
	}
}

// Argmax returns the index of the largest score, the first on ties (NaN
// never wins): greedy decoding's pick, for callers that decode without a
// Sampler (benchmarks).
func Argmax(logits []float32) int32 { return argmax(logits) }

// argmaxGo returns the index of the largest score, the first on ties; NaN
// never wins, and all -inf (or NaN) gives 0. argmax is this, in assembly
// where the CPU allows (argmax_amd64.go).
func argmaxGo(logits []float32) int32 {
	// Eight running maxima, so that the comparisons do not wait on each
	// other (greedy decoding runs this over the whole vocabulary for every
	// token of every sequence); then the first index holding the largest.
	// NaNs are never larger, as before.
	ninf := float32(math.Inf(-1))
	m := [8]float32{ninf, ninf, ninf, ninf, ninf, ninf, ninf, ninf}
	i := 0
	for ; i+8 <= len(logits); i += 8 {
		v := logits[i : i+8 : i+8]
		for j := range m {
			if v[j] > m[j] {
				m[j] = v[j]
			}
		}
	}
	best := ninf
	for _, v := range m {
		if v > best {
			best = v
		}
	}
	for _, v := range logits[i:] {
		if v > best {
			best = v
		}
	}
	if best == ninf {
		return 0 // every score NaN or -inf: the first, as before
	}
	for j, v := range logits {
		if v == best {
			return int32(j)
		}
	}
	return 0 // not reached
}

// warpTemperature turns NaN into -inf, divides by the temperature and,
// when top-k is on, finds the k-th largest score, which it returns (-inf
// when top-k is off). One pass over the vocabulary does all three.
func (s *Sampler) warpTemperature(logits []float32) float32 {
	ninf := float32(math.Inf(-1))
	t := s.temperature
	h := s.heap
	k := len(h)
	for i, v := range logits {
		if v != v {
			v = ninf
		}
		if t != 1 { // HF skips the warper at 1; dividing by 1 is exact anyway
			v /= t
		}
		logits[i] = v
		// The k largest so far are a min-heap, h[0] the smallest of them:
		// O(V log k), and O(V) in practice, as most scores lose to h[0].
		switch {
		case i < k:
			h[i] = v
			if i == k-1 {
				for j := k/2 - 1; j >= 0; j-- {
					siftDownMin(h, j)
				}
			}
		case k > 0 && v > h[0]:
			h[0] = v
			siftDownMin(h, 0)
		}
	}
	if k == 0 {
		return ninf
	}
	return h[0]
}

func siftDownMin(h []float32, i int) {
	n := len(h)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if c+1 < n && h[c+1] < h[c] {
			c++
		}
		if h[i] <= h[c] {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

// gather applies top-k (scores below kth become -inf) and collects the
// tokens left, with their weights exp(v - max), into s.cands; it returns
// how many there are.
func (s *Sampler) gather(logits []float32, kth float32) int {
	ninf := float32(math.Inf(-1))
	c := s.cands[:0]
	maxv := ninf
	for i, v := range logits {
		if v < kth {
			logits[i] = ninf
			continue
		}
		if v == ninf {
			continue
		}
		maxv = max(maxv, v)
		c = append(c, candidate{v: v, id: int32(i)}) // within capacity
	}
	if math.IsInf(float64(maxv), 1) {
		// exp(+inf - +inf) is NaN: the limit is that the +inf scores
		// share everything.
		for i := range c {
			c[i].w = 0
			if math.IsInf(float64(c[i].v), 1) {
				c[i].w = 1
			}
		}
	} else {
		m := float64(maxv)
		for i := range c {
			c[i].w = math.Exp(float64(c[i].v) - m)
		}
	}
	s.cands = c
	return len(c)
}

// topP applies TopPLogitsWarper to the candidates c and returns those
// kept. HF sorts ascending and removes the tokens whose cumulative
// probability is ≤ 1-top_p. Since that cumulative probability is 1 minus
// the mass strictly above the token, this is the same as taking tokens in
// descending order while the mass taken so far is < top_p: a max-heap
// does that and stops early, instead of sorting the whole vocabulary.
func (s *Sampler) topP(logits []float32, c []candidate) []candidate {
	var z float64
	for _, x := range c {
		z += x.w
	}
	for i := len(c)/2 - 1; i >= 0; i-- {
		siftDownMax(c, i)
	}
	end := len(c) // c[:end] is the heap; c[end:] the kept, ascending
	var taken float64
	for end > 0 && (end == len(c) || taken < s.p.TopP) {
		top := c[0]
		end--
		c[0], c[end] = c[end], top
		siftDownMax(c[:end], 0)
		taken += top.w / z
	}
	ninf := float32(math.Inf(-1))
	for _, x := range c[:end] {
		logits[x.id] = ninf
	}
	return c[end:]
}

// above orders candidates as the top-p heap wants them: by score, and
// among equal scores the higher id first (a stable ascending sort puts it
// last, where it is kept longest).
func above(a, b candidate) bool {
	return a.v > b.v || a.v == b.v && a.id > b.id
}

func siftDownMax(h []candidate, i int) {
	n := len(h)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if c+1 < n && above(h[c+1], h[c]) {
			c++
		}
		if !above(h[c], h[i]) {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

// draw makes the multinomial draw: one Float64 u from the stream, then the
// first candidate whose cumulative weight exceeds u × total.
func (s *Sampler) draw(c []candidate) int32 {
	var total float64
	for _, x := range c {
		total += x.w
	}
	u := s.rng.Float64() * total
	var acc float64
	last := c[len(c)-1].id
	for _, x := range c {
		if x.w == 0 {
			continue
		}
		acc += x.w
		last = x.id
		if u < acc {
			return x.id
		}
	}
	// u rounded up to total: the last token with any weight.
	return last
}

// IsEOS reports whether id is one of the EOS tokens.
func (s *Sampler) IsEOS(id int32) bool { return slices.Contains(s.eos, id) }

// Finish says whether generation ends after the token tok, which made
// generated tokens in all: FinishEOS if tok is an EOS token (unless
// ignore_eos), else FinishLength once max_new_tokens were generated, else
// FinishNone. EOS wins when both hold, since the model chose to stop.
func (s *Sampler) Finish(tok int32, generated int) FinishReason {
	if !s.p.IgnoreEOS && s.IsEOS(tok) {
		return FinishEOS
	}
	if generated >= s.p.MaxNewTokens {
		return FinishLength
	}
	return FinishNone
}
