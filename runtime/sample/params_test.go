package sample

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

func TestDefaultParamsValid(t *testing.T) {
	p := DefaultParams()
	if err := p.Validate(); err != nil {
		t.Fatalf("DefaultParams().Validate() = %v", err)
	}
	if p.DoSample || p.Temperature != 1 || p.TopK != 0 || p.TopP != 1 || p.RepetitionPenalty != 1 ||
		p.MinNewTokens != 0 || p.MaxNewTokens != DefaultMaxNewTokens || p.Seed != nil || p.IgnoreEOS || p.Stop != nil {
		t.Errorf("DefaultParams() = %+v: not greedy with every processor off", p)
	}
}

func TestValidateMessages(t *testing.T) {
	sampling := func(f func(*Params)) Params {
		p := DefaultParams()
		p.DoSample = true
		f(&p)
		return p
	}
	cases := []struct {
		name string
		p    Params
		want []string // every message, in order
	}{
		{"temperature 0 sampling", sampling(func(p *Params) { p.Temperature = 0 }),
			[]string{"temperature must be > 0 when do_sample is true (got 0); set do_sample to false for greedy decoding"}},
		{"temperature negative", sampling(func(p *Params) { p.Temperature = -0.5 }),
			[]string{"temperature must be >= 0 (got -0.5)"}},
		{"temperature NaN", sampling(func(p *Params) { p.Temperature = math.NaN() }),
			[]string{"temperature must be a finite number (got NaN)"}},
		{"temperature +Inf", sampling(func(p *Params) { p.Temperature = math.Inf(1) }),
			[]string{"temperature must be a finite number (got +Inf)"}},
		{"top_p above 1", sampling(func(p *Params) { p.TopP = 1.5 }),
			[]string{"top_p must be in (0, 1] (got 1.5); 1 turns top-p off"}},
		{"top_p 0", sampling(func(p *Params) { p.TopP = 0 }),
			[]string{"top_p must be in (0, 1] (got 0); 1 turns top-p off"}},
		{"top_p NaN", sampling(func(p *Params) { p.TopP = math.NaN() }),
			[]string{"top_p must be a finite number (got NaN)"}},
		{"top_k negative", sampling(func(p *Params) { p.TopK = -1 }),
			[]string{"top_k must be >= 0 (got -1); 0 turns top-k off"}},
		{"repetition_penalty 0", sampling(func(p *Params) { p.RepetitionPenalty = 0 }),
			[]string{"repetition_penalty must be > 0 (got 0); 1 turns it off"}},
		{"repetition_penalty -Inf", sampling(func(p *Params) { p.RepetitionPenalty = math.Inf(-1) }),
			[]string{"repetition_penalty must be a finite number (got -Inf)"}},
		{"max_new_tokens 0", sampling(func(p *Params) { p.MaxNewTokens = 0 }),
			[]string{"max_new_tokens must be >= 1 (got 0)"}},
		{"min_new_tokens negative", sampling(func(p *Params) { p.MinNewTokens = -3 }),
			[]string{"min_new_tokens must be >= 0 (got -3)"}},
		{"min above max", sampling(func(p *Params) { p.MinNewTokens, p.MaxNewTokens = 10, 5 }),
			[]string{"min_new_tokens must be <= max_new_tokens (got min_new_tokens 10, max_new_tokens 5)"}},
		{"empty stop", sampling(func(p *Params) { p.Stop = []string{"\n", ""} }),
			[]string{"stop[1] must not be empty"}},
		{"long stop", sampling(func(p *Params) { p.Stop = []string{strings.Repeat("x", MaxStopBytes+1)} }),
			[]string{"stop[0] is 257 bytes long; at most 256 are allowed"}},
		{"too many stops", sampling(func(p *Params) {
			p.Stop = make([]string, MaxStops+1)
			for i := range p.Stop {
				p.Stop[i] = "s"
			}
		}), []string{"stop has 17 strings; at most 16 are allowed"}},
		{"all at once", Params{DoSample: true, Temperature: 0, TopP: 2, TopK: -5, RepetitionPenalty: -1, MaxNewTokens: 0, MinNewTokens: -1},
			[]string{
				"temperature must be > 0 when do_sample is true (got 0); set do_sample to false for greedy decoding",
				"top_p must be in (0, 1] (got 2); 1 turns top-p off",
				"top_k must be >= 0 (got -5); 0 turns top-k off",
				"repetition_penalty must be > 0 (got -1); 1 turns it off",
				"max_new_tokens must be >= 1 (got 0)",
				"min_new_tokens must be >= 0 (got -1)",
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.p.Validate()
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", c.want)
			}
			if got := strings.Split(err.Error(), "\n"); strings.Join(got, "|") != strings.Join(c.want, "|") {
				t.Errorf("Validate() =\n%s\nwant\n%s", err, strings.Join(c.want, "\n"))
			}
			// The errors are joined, so each one can be inspected.
			var joined interface{ Unwrap() []error }
			if !errors.As(err, &joined) || len(joined.Unwrap()) != len(c.want) {
				t.Errorf("Validate() does not join %d errors: %#v", len(c.want), err)
			}
			// New refuses the same parameters with the same error.
			if _, nerr := New(c.p, 10, nil); nerr == nil || nerr.Error() != err.Error() {
				t.Errorf("New() error = %v, want %v", nerr, err)
			}
		})
	}
}

func TestValidateAcceptsEdges(t *testing.T) {
	ok := []Params{
		// Greedy ignores the temperature, so OpenAI's "temperature 0" can
		// pass through unchanged with do_sample false.
		{Temperature: 0, TopP: 1, RepetitionPenalty: 1, MaxNewTokens: 1},
		{DoSample: true, Temperature: 1e-6, TopP: 1e-9, TopK: 1, RepetitionPenalty: 1e-3, MaxNewTokens: 5, MinNewTokens: 5},
		{DoSample: true, Temperature: 100, TopP: 1, TopK: 1 << 30, RepetitionPenalty: 100, MaxNewTokens: 1 << 20,
			Stop: []string{"a", strings.Repeat("b", MaxStopBytes)}},
	}
	for i, p := range ok {
		if err := p.Validate(); err != nil {
			t.Errorf("case %d: Validate() = %v, want nil", i, err)
		}
	}
}

func TestParamsJSONNames(t *testing.T) {
	// The JSON names are the snake_case names Validate's messages use.
	p := DefaultParams()
	in := `{"do_sample":true,"temperature":0.7,"top_k":40,"top_p":0.9,"repetition_penalty":1.1,
		"min_new_tokens":2,"max_new_tokens":64,"seed":42,"ignore_eos":true,"stop":["\n\n"]}`
	if err := json.Unmarshal([]byte(in), &p); err != nil {
		t.Fatal(err)
	}
	if !p.DoSample || p.Temperature != 0.7 || p.TopK != 40 || p.TopP != 0.9 || p.RepetitionPenalty != 1.1 ||
		p.MinNewTokens != 2 || p.MaxNewTokens != 64 || p.Seed == nil || *p.Seed != 42 || !p.IgnoreEOS ||
		len(p.Stop) != 1 || p.Stop[0] != "\n\n" {
		t.Errorf("decoded %+v", p)
	}
	// top_k null leaves it off.
	p = DefaultParams()
	if err := json.Unmarshal([]byte(`{"top_k":null}`), &p); err != nil || p.TopK != 0 {
		t.Errorf("top_k null: TopK = %d, err %v", p.TopK, err)
	}
}
