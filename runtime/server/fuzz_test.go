package server

import (
	"net/http"
	"slices"
	"testing"
)

// The fuzz targets feed arbitrary bytes to the pure request decoders:
// they must never panic, every refusal must be a well-formed 400, and
// every accepted request must be one the engine can run: valid sampling
// parameters (for each sequence's seed), n in range, something to say,
// and a header value for the ignored keys that net/http can send.

func FuzzDecodeScore(f *testing.F) {
	for _, s := range []string{
		`{"input_data": {"input_string": ["I believe the meaning of life is"], "parameters": {"top_p": 0.8, "temperature": 0.8, "max_new_tokens": 100, "do_sample": true}}}`,
		`{"input_data": {"input_string": [{"role": "user", "content": "hi"}], "parameters": {"num_return_sequences": 1, "stop": "x"}}}`,
		`{"input_data": {"input_string": "a", "parameters": {"seed": -5, "top_k": null, "min_new_tokens": 1e1, "num_return_sequences": 16}}, "x": 1}`,
		`{"input_data": {"input_string": ["a", {"role": "user"}]}}`,
		`{"input_data": {"input_string": [], "parameters": []}}`,
		`{"input_data": {"input_string": ["a"], "parameters": {"max_length": 20, "min_new_tokens": 2}}}`,
		`{"input_data": {"input_string": ["a"], "parameters": {"max_length": 20, "max_new_tokens": 4}}}`,
		`{"input_data": {"input_string": ["a"], "parameters": {"num_return_sequences": 2, "do_sample": true, "seed": 1.8e19}}}`,
		`null`, `[]`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		j, err := decodeScore(body, 64)
		checkDecoded(t, j, err)
		if j != nil && j.messages != nil && j.n != 1 {
			t.Errorf("a chat with num_return_sequences %d", j.n)
		}
	})
}

func FuzzDecodeCompletion(f *testing.F) {
	for _, s := range []string{
		`{"model": "m", "prompt": ["a", "b"], "max_tokens": 5, "n": 2, "stream": true, "stream_options": {"include_usage": true}, "stop": ["\n"], "seed": 1}`,
		`{"prompt": "a", "temperature": 0, "top_p": 0.5, "top_k": -1, "echo": true, "logprobs": null, "best_of": 1, "suffix": "", "logit_bias": {}}`,
		`{"prompt": "a", "min_tokens": 3, "repetition_penalty": 1.2, "ignore_eos": true, "presence_penalty": 0, "user": "u"}`,
		`{"prompt": [1, 2]}`, `{"prompt": [[1, 2], [3]], "echo": true}`, `{"prompt": [[1], 2]}`, `{"prompt": "a", "n": 17}`, `{}`,
		`{"prompt": "a", "response_format": {"type": "json_object"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		j, err := decodeCompletion(body)
		checkDecoded(t, j, err)
	})
}

func FuzzDecodeChat(f *testing.F) {
	for _, s := range []string{
		`{"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "t"}]}], "max_completion_tokens": 5, "n": 3}`,
		`{"messages": [{"role": "user", "content": null, "name": "x"}], "max_tokens": 1, "logprobs": false, "top_logprobs": 0, "tools": []}`,
		`{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}`,
		`{"messages": [{"role": "developer", "content": "d"}, {"role": "user", "content": "u"}], "response_format": {"type": "text"}}`,
		`{"messages": [{"role": "user", "content": "u"}], "tools": [{"type": "function"}], "tool_choice": "none", "parallel_tool_calls": false}`,
		`{"messages": [{"role": "user", "content": "u"}], "tools": [{"type": "function"}], "tool_choice": "required", "parallel_tool_calls": true}`,
		`{"messages": [{"role": "user", "content": "u"}], "response_format": {"type": "json_schema", "json_schema": {}}}`,
		`{"messages": []}`, `{"messages": {}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		j, err := decodeChat(body, 64)
		checkDecoded(t, j, err)
	})
}

func checkDecoded(t *testing.T, j *job, err *apiError) {
	t.Helper()
	if (j == nil) == (err == nil) {
		t.Fatalf("job %v and error %v", j, err)
	}
	if err != nil {
		if err.Status != http.StatusBadRequest || err.Type != typeInvalid || err.Message == "" {
			t.Fatalf("refusal %+v", err)
		}
		return
	}
	if j.n < 1 || j.n > maxChoices {
		t.Errorf("n %d", j.n)
	}
	if given := btoi(len(j.prompts) > 0) + btoi(len(j.tokens) > 0) + btoi(len(j.messages) > 0); given != 1 {
		t.Errorf("prompts %q, tokens %v and messages %v", j.prompts, j.tokens, j.messages)
	}
	for _, ids := range j.tokens {
		if len(ids) == 0 || slices.Min(ids) < 0 {
			t.Errorf("token prompt %v", ids)
		}
	}
	if j.maxLength < 0 {
		t.Errorf("maxLength %d", j.maxLength)
	}
	if j.includeUsage && !j.stream {
		t.Errorf("include_usage without stream")
	}
	for k := range j.n {
		if err := seeded(j.params, k).Validate(); err != nil {
			t.Errorf("accepted parameters %+v of sequence %d: %v", j.params, k, err)
		}
	}
	for _, c := range []byte(ignoredHeader(j.ignored)) {
		if c < 0x20 || c >= 0x7f {
			t.Fatalf("X-Leo-Ignored-Fields %q has byte %#x", ignoredHeader(j.ignored), c)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
