package sample

import (
	"errors"
	"fmt"
	"math"
)

// Limits on stop strings. A request names them, so they are untrusted: the
// matcher holds back up to MaxStopBytes-1 bytes and its work per pushed
// piece of text grows with MaxStops × MaxStopBytes², so both are bounded.
// (OpenAI's API and TGI allow 4 stop sequences by default.)
const (
	MaxStops     = 16
	MaxStopBytes = 256
)

// Params are the generation parameters of one request, named and meant as
// in Hugging Face transformers' GenerationConfig. The JSON names are the
// ones users write, and the ones Validate's messages use.
type Params struct {
	// DoSample picks multinomial sampling over the warped distribution;
	// false picks greedy decoding (argmax), and the warpers (temperature,
	// top-k, top-p) are then not applied.
	DoSample bool `json:"do_sample"`
	// Temperature divides the scores before sampling. 1 is off. It must
	// be > 0 when DoSample is set, and is ignored otherwise.
	Temperature float64 `json:"temperature"`
	// TopK keeps the tokens whose score is at least the k-th largest (ties
	// at the threshold stay). 0 is off. Unlike GenerationConfig, whose
	// default is 50, the default here is off: set 50 to match HF's
	// defaults exactly.
	TopK int `json:"top_k"`
	// TopP keeps the smallest set of most probable tokens whose probability
	// adds up to at least TopP. 1 is off.
	TopP float64 `json:"top_p"`
	// RepetitionPenalty divides positive (multiplies negative) scores of
	// every token already in the sequence, prompt included. 1 is off.
	RepetitionPenalty float64 `json:"repetition_penalty"`
	// MinNewTokens masks the EOS tokens until this many tokens were
	// generated.
	MinNewTokens int `json:"min_new_tokens"`
	// MaxNewTokens ends generation after this many generated tokens.
	MaxNewTokens int `json:"max_new_tokens"`
	// Seed makes sampling reproducible: the same seed, logits and
	// sequence give the same tokens, in this process and in any other.
	// Nil draws a random seed (Sampler.Seed reports it).
	Seed *uint64 `json:"seed,omitempty"`
	// IgnoreEOS keeps generating after an EOS token, until MaxNewTokens or
	// a stop string. EOS is not masked: it may be sampled, and is then an
	// ordinary token (as vLLM's and TGI's ignore_eos do).
	IgnoreEOS bool `json:"ignore_eos"`
	// Stop strings end generation when the decoded text contains one; the
	// returned text ends before it. See StopMatcher.
	Stop []string `json:"stop,omitempty"`
}

// DefaultMaxNewTokens is DefaultParams' MaxNewTokens. GenerationConfig's
// own default (max_length 20, prompt included) is too short to be useful
// for a server.
const DefaultMaxNewTokens = 256

// DefaultParams returns greedy decoding with every processor off and
// MaxNewTokens = DefaultMaxNewTokens: GenerationConfig's defaults, except
// top_k (off here, 50 there; it matters only when sampling) and the length.
func DefaultParams() Params {
	return Params{
		Temperature:       1,
		TopP:              1,
		RepetitionPenalty: 1,
		MaxNewTokens:      DefaultMaxNewTokens,
	}
}

// Validate reports every parameter that is out of range, all of them at
// once (joined with errors.Join, one per line), so that a user fixes a
// request in one go. Each message names the parameter as users write it
// (snake_case) and the value it got.
func (p Params) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	finite := func(name string, v float64) bool {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			bad("%s must be a finite number (got %v)", name, v)
			return false
		}
		return true
	}

	if finite("temperature", p.Temperature) {
		switch {
		case p.Temperature < 0:
			bad("temperature must be >= 0 (got %v)", p.Temperature)
		case p.Temperature == 0 && p.DoSample:
			// HF's TemperatureLogitsWarper refuses 0 too; OpenAI's
			// "temperature 0" means greedy, which is do_sample false.
			bad("temperature must be > 0 when do_sample is true (got 0); set do_sample to false for greedy decoding")
		}
	}
	if finite("top_p", p.TopP) && (p.TopP <= 0 || p.TopP > 1) {
		bad("top_p must be in (0, 1] (got %v); 1 turns top-p off", p.TopP)
	}
	if p.TopK < 0 {
		bad("top_k must be >= 0 (got %d); 0 turns top-k off", p.TopK)
	}
	if finite("repetition_penalty", p.RepetitionPenalty) && p.RepetitionPenalty <= 0 {
		bad("repetition_penalty must be > 0 (got %v); 1 turns it off", p.RepetitionPenalty)
	}
	if p.MaxNewTokens < 1 {
		bad("max_new_tokens must be >= 1 (got %d)", p.MaxNewTokens)
	}
	if p.MinNewTokens < 0 {
		bad("min_new_tokens must be >= 0 (got %d)", p.MinNewTokens)
	} else if p.MaxNewTokens >= 1 && p.MinNewTokens > p.MaxNewTokens {
		bad("min_new_tokens must be <= max_new_tokens (got min_new_tokens %d, max_new_tokens %d)", p.MinNewTokens, p.MaxNewTokens)
	}
	if len(p.Stop) > MaxStops {
		bad("stop has %d strings; at most %d are allowed", len(p.Stop), MaxStops)
	}
	for i, s := range p.Stop {
		switch {
		case s == "":
			// An empty stop string would match before the first token.
			bad("stop[%d] must not be empty", i)
		case len(s) > MaxStopBytes:
			bad("stop[%d] is %d bytes long; at most %d are allowed", i, len(s), MaxStopBytes)
		}
	}
	return errors.Join(errs...)
}
