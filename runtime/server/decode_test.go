package server

import (
	"fmt"
	"strings"
	"testing"
)

func TestDecodeScoreDefaults(t *testing.T) {
	j, err := decodeScore([]byte(`{"input_data": {"input_string": "one prompt"}}`), 77)
	if err != nil {
		t.Fatal(err)
	}
	p := j.params
	if len(j.prompts) != 1 || j.prompts[0] != "one prompt" || j.n != 1 || j.echo || j.messages != nil {
		t.Errorf("job %+v", j)
	}
	if p.DoSample || p.Temperature != 1 || p.TopP != 1 || p.TopK != 0 || p.RepetitionPenalty != 1 ||
		p.MaxNewTokens != 77 || p.MinNewTokens != 0 || p.IgnoreEOS || p.Seed != nil || p.Stop != nil {
		t.Errorf("defaults %+v", p)
	}
}

func TestDecodeScoreParameters(t *testing.T) {
	body := `{"input_data": {"input_string": ["a", "b"], "parameters": {"temperature": 0.5, "top_p": 0.9, "top_k": 40,
		"do_sample": true, "max_new_tokens": 1e2, "min_new_tokens": 3.0, "repetition_penalty": 1.1, "ignore_eos": true,
		"stop": "###", "seed": -1, "num_return_sequences": 4, "return_full_text": true}}}`
	j, err := decodeScore([]byte(body), 1)
	if err != nil {
		t.Fatal(err)
	}
	p := j.params
	if !p.DoSample || p.Temperature != 0.5 || p.TopP != 0.9 || p.TopK != 40 || p.MaxNewTokens != 100 || p.MinNewTokens != 3 ||
		p.RepetitionPenalty != 1.1 || !p.IgnoreEOS || len(p.Stop) != 1 || p.Stop[0] != "###" || *p.Seed != 1<<64-1 {
		t.Errorf("params %+v", p)
	}
	if j.n != 4 || !j.echo || j.sequences() != 8 {
		t.Errorf("job %+v", j)
	}
	// Sequence k of a prompt gets seed+k (wrapping).
	if s := seeded(p, 2).Seed; *s != 1 || *p.Seed != 1<<64-1 {
		t.Errorf("seeded: %d, and the job's seed became %d", *s, *p.Seed)
	}
}

func TestDecodeNumbers(t *testing.T) {
	for _, c := range []struct {
		value string
		ok    bool
	}{
		{"5", true}, {"5.0", true}, {"5e0", true}, {"-0", true}, {"5.5", false}, {"1e30", false},
		{`"5"`, false}, {"true", false}, {"[5]", false}, {"9223372036854775807", true}, {"9223372036854775808", false},
	} {
		_, err := decodeScore([]byte(scoreBody(`"max_new_tokens": `+c.value+`, "min_new_tokens": 0`, "x")), 10)
		integral := err == nil || !strings.Contains(err.Message, "integer") && !strings.Contains(err.Message, "out of range")
		if integral != c.ok {
			t.Errorf("max_new_tokens %s: error %v, want accepted as an integer %v", c.value, err, c.ok)
		}
	}
	if _, err := decodeScore([]byte(scoreBody(`"temperature": 1e999`, "x")), 10); err == nil || !strings.Contains(err.Message, "out of range") {
		t.Errorf("temperature 1e999: %v", err)
	}
	for _, seed := range []string{"18446744073709551615", "-9223372036854775808", "0"} {
		if _, err := decodeScore([]byte(scoreBody(`"seed": `+seed, "x")), 10); err != nil {
			t.Errorf("seed %s: %v", seed, err)
		}
	}
	for _, seed := range []string{"18446744073709551616", "1.8446744073709552e19", "1e30", "-9.3e18", "2.5"} {
		if _, err := decodeScore([]byte(scoreBody(`"seed": `+seed, "x")), 10); err == nil {
			t.Errorf("seed %s was accepted", seed)
		}
	}
	// A whole float at or above 2^63, as a client may write a uint64.
	j, err := decodeScore([]byte(scoreBody(`"seed": 1.8e19`, "x")), 10)
	if err != nil || *j.params.Seed != 18_000_000_000_000_000_000 {
		t.Errorf("seed 1.8e19: %v", err)
	}
}

// TestDecodeMessages pins the exact message and field of wrong values, the
// same words batchio uses for batch rows (jsonvalue.Object).
func TestDecodeMessages(t *testing.T) {
	for _, c := range []struct {
		decode       func([]byte) (*job, *apiError)
		body         string
		param, value string
	}{
		{scoreOf, scoreBody(`"max_new_tokens": 1.5`, "x"), "input_data.parameters.max_new_tokens",
			"input_data.parameters.max_new_tokens must be an integer (got 1.5)"},
		{scoreOf, scoreBody(`"max_new_tokens": 1e30`, "x"), "input_data.parameters.max_new_tokens",
			"input_data.parameters.max_new_tokens is out of range (got 1e30)"},
		{scoreOf, scoreBody(`"seed": "x"`, "x"), "input_data.parameters.seed",
			"input_data.parameters.seed must be an integer (got a string)"},
		{scoreOf, scoreBody(`"seed": true`, "x"), "input_data.parameters.seed",
			"input_data.parameters.seed must be an integer (got a boolean)"},
		{scoreOf, scoreBody(`"seed": 2.5`, "x"), "input_data.parameters.seed",
			"input_data.parameters.seed must be an integer in [-2^63, 2^64-1] (got 2.5)"},
		{decodeCompletion, `{"prompt": "hi", "n": 1.5}`, "n", "n must be an integer (got 1.5)"},
		{decodeCompletion, `{"prompt": "hi", "stop": ["a", 1]}`, "stop[1]", "stop[1] must be a string (got a number)"},
	} {
		_, err := c.decode([]byte(c.body))
		if err == nil || err.Param != c.param || err.Message != c.value {
			t.Errorf("%s: %+v, want param %q, message %q", c.body, err, c.param, c.value)
		}
	}
}

func scoreOf(body []byte) (*job, *apiError) { return decodeScore(body, 10) }

func TestDecodeOpenAI(t *testing.T) {
	j, err := decodeCompletion([]byte(`{"prompt": "hi", "top_k": -1, "temperature": 0, "stop": ["a", "b"], "best_of": 1, "logprobs": null,
		"suffix": "", "logit_bias": {}, "presence_penalty": 0, "frequency_penalty": 0.0, "stream": true, "stream_options": {"include_usage": true}}`))
	if err != nil {
		t.Fatal(err)
	}
	if j.params.TopK != 0 || j.params.DoSample || j.params.MaxNewTokens != openAIMaxTokens || len(j.params.Stop) != 2 ||
		!j.stream || !j.includeUsage || j.n != 1 {
		t.Errorf("job %+v params %+v", j, j.params)
	}
	if len(j.ignored) != 0 {
		t.Errorf("ignored %v", j.ignored)
	}
	j, err = decodeCompletion([]byte(`{"prompt": "hi"}`))
	if err != nil || !j.params.DoSample || j.params.Temperature != 1 {
		t.Errorf("OpenAI samples at temperature 1 by default: %+v %v", j.params, err)
	}

	j, err = decodeChat([]byte(`{"messages": [{"role": "user", "content": null}, {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}], "logprobs": false, "top_logprobs": 0}`), 33)
	if err != nil {
		t.Fatal(err)
	}
	// Text parts are joined with "\n", as vLLM does.
	if len(j.messages) != 2 || j.messages[0].Content != "" || j.messages[1].Content != "a\nb" || j.params.MaxNewTokens != 33 {
		t.Errorf("job %+v", j)
	}

	// What does not change the answer is accepted: plain text, tools
	// that may not be called, no parallel calls; "developer" is OpenAI's
	// newer name of "system".
	j, err = decodeChat([]byte(`{"messages": [{"role": "developer", "content": "d"}, {"role": "user", "content": "u"}],
		"response_format": {"type": "text"}, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none",
		"parallel_tool_calls": false}`), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(j.ignored) != 0 || j.messages[0].Role != "system" {
		t.Errorf("ignored %v, messages %v", j.ignored, j.messages)
	}
	for _, body := range []string{`{"messages": [{"role": "user", "content": "u"}], "tools": [], "tool_choice": "auto"}`,
		`{"messages": [{"role": "user", "content": "u"}], "response_format": null, "tools": null}`} {
		if _, err := decodeChat([]byte(body), 10); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
}

// OpenAI's completions take a prompt as token ids, one list or a list
// of lists.
func TestDecodeTokenPrompts(t *testing.T) {
	j, err := decodeCompletion([]byte(`{"prompt": [1, 2, 3.0]}`))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(j.tokens) != "[[1 2 3]]" || !j.tokenList || j.prompts != nil || j.sequences() != 1 {
		t.Errorf("job %+v", j)
	}
	j, err = decodeCompletion([]byte(`{"prompt": [[1, 2], [3]], "n": 2}`))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(j.tokens) != "[[1 2] [3]]" || j.tokenList || j.sequences() != 4 {
		t.Errorf("job %+v", j)
	}
	for body, param := range map[string]string{
		`{"prompt": [1, -2]}`:         "prompt[1]",
		`{"prompt": [1, 2.5]}`:        "prompt[1]",
		`{"prompt": [1, 2147483648]}`: "prompt[1]",
		`{"prompt": [1, "a"]}`:        "prompt[1]",
		`{"prompt": ["a", 1]}`:        "prompt[1]",
		`{"prompt": [[1], []]}`:       "prompt[1]",
		`{"prompt": [[1], 2]}`:        "prompt[1]",
		`{"prompt": [[1], [true]]}`:   "prompt[1][0]",
		`{"prompt": []}`:              "prompt",
		`{"prompt": {}}`:              "prompt",
	} {
		j, err := decodeCompletion([]byte(body))
		if err == nil || err.Param != param {
			t.Errorf("%s: job %+v, error %+v; want one naming %s", body, j, err, param)
		}
	}
}

func TestParamNames(t *testing.T) {
	// Validate's names become the endpoint's.
	j, err := decodeCompletion([]byte(`{"prompt": "x", "max_tokens": 3, "min_tokens": 9, "top_p": 0}`))
	if j != nil || err.Param != "top_p" && err.Param != "min_tokens" {
		t.Fatalf("%v %+v", j, err)
	}
	for _, want := range []string{"min_tokens must be <= max_tokens (got min_tokens 9, max_tokens 3)", "top_p must be in (0, 1]"} {
		if !strings.Contains(err.Message, want) {
			t.Errorf("message %q lacks %q", err.Message, want)
		}
	}
	if strings.Contains(err.Message, "new_tokens") {
		t.Errorf("message %q names sample.Params' fields", err.Message)
	}
}

func TestLineCol(t *testing.T) {
	data := []byte("ab\ncde\nf")
	for _, c := range []struct {
		off       int64
		line, col int
	}{{0, 1, 1}, {1, 1, 2}, {2, 1, 3}, {3, 2, 1}, {5, 2, 3}, {7, 3, 1}, {8, 3, 2}, {99, 3, 2}} {
		if l, col := lineCol(data, c.off); l != c.line || col != c.col {
			t.Errorf("lineCol(%d) = %d:%d, want %d:%d", c.off, l, col, c.line, c.col)
		}
	}
}

func TestIgnoredHeader(t *testing.T) {
	if got := ignoredHeader([]string{"z", "a.b", "a[0].c"}); got != "a.b, a[0].c, z" {
		t.Errorf("got %q", got)
	}
	if got := ignoredHeader([]string{"evil\r\nX-Injected: 1", "é"}); got != `"evil\r\nX-Injected: 1", "\u00e9"` {
		t.Errorf("got %q", got)
	}
	many := make([]string, 40)
	for i := range many {
		many[i] = fmt.Sprintf("k%02d", i)
	}
	if got := ignoredHeader(many); !strings.HasSuffix(got, "k31, (8 more)") {
		t.Errorf("got %q", got)
	}
	if got := ignoredHeader([]string{strings.Repeat("a", 100)}); len(got) > maxIgnoredKey+10 {
		t.Errorf("a long key is not cut: %d bytes", len(got))
	}
}
