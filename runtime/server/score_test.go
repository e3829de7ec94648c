package server

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// scoreBody is a /score request for prompts with parameters params (a
// JSON object's members, without braces).
func scoreBody(params string, prompts ...string) string {
	q := make([]string, len(prompts))
	for i, p := range prompts {
		q[i] = fmt.Sprintf("%q", p)
	}
	return fmt.Sprintf(`{"input_data": {"input_string": [%s], "parameters": {%s}}}`, strings.Join(q, ", "), params)
}

// scoreTexts posts a text-generation request and returns the record's
// values, checking the shape: one record keyed "0".."N-1".
func scoreTexts(t *testing.T, v *env, body string, prompts int) []any {
	t.Helper()
	got, _ := v.post("/score", body, http.StatusOK)
	rec := wantList(t, "response", got, 1)[0]
	keys := make([]string, prompts)
	for i := range keys {
		keys[i] = fmt.Sprint(i)
	}
	m := wantKeys(t, "record", rec, keys...)
	out := make([]any, prompts)
	for i, k := range keys {
		out[i] = m[k]
	}
	return out
}

func TestScoreTextGeneration(t *testing.T) {
	v := newEnv(t, envConfig{})
	const prompt = "I believe the meaning of life is"

	// The model card's example, as Azure ML's docs give it.
	body := scoreBody(`"top_p": 0.8, "temperature": 0.8, "max_new_tokens": 20, "do_sample": true`, prompt)
	wantString(t, "record[0]", scoreTexts(t, v, body, 1)[0])

	// Greedy decoding (do_sample defaults to false) is deterministic.
	greedy := scoreBody(`"max_new_tokens": 24, "ignore_eos": true`, prompt)
	a := wantString(t, "first", scoreTexts(t, v, greedy, 1)[0])
	b := wantString(t, "second", scoreTexts(t, v, greedy, 1)[0])
	if a != b || a == "" {
		t.Fatalf("greedy outputs differ or are empty: %q, %q", a, b)
	}

	// Several prompts: one record keyed by the prompts' indexes, each
	// answered as alone.
	many := make([]string, 12)
	for i := range many {
		many[i] = prompt
	}
	many[3] = "Once upon a time"
	texts := scoreTexts(t, v, scoreBody(`"max_new_tokens": 24, "ignore_eos": true`, many...), len(many))
	for i, x := range texts {
		if i != 3 && x != a {
			t.Errorf("record[%d] = %q, want the single prompt's %q", i, x, a)
		}
	}

	// return_full_text: the prompt, then the same generated text.
	full := wantString(t, "full text", scoreTexts(t, v, scoreBody(`"max_new_tokens": 24, "ignore_eos": true, "return_full_text": true`, prompt), 1)[0])
	if full != prompt+a {
		t.Errorf("return_full_text gave %q, want %q", full, prompt+a)
	}

	// null is the default.
	nulls := scoreBody(`"max_new_tokens": 24, "ignore_eos": true, "temperature": null, "top_k": null, "top_p": null, "do_sample": null, "stop": null, "seed": null`, prompt)
	if got := scoreTexts(t, v, nulls, 1)[0]; got != a {
		t.Errorf("with null parameters: %q, want %q", got, a)
	}

	// num_return_sequences k: each key's value is a list of k texts.
	seqs := scoreTexts(t, v, scoreBody(`"max_new_tokens": 8, "do_sample": true, "num_return_sequences": 3, "seed": 5`, prompt, "Hello"), 2)
	for i, x := range seqs {
		for j, s := range wantList(t, fmt.Sprintf("record[%d]", i), x, 3) {
			wantString(t, fmt.Sprintf("record[%d][%d]", i, j), s)
		}
	}
}

func TestScoreMaxNewTokensAndIgnoreEOS(t *testing.T) {
	v := newEnv(t, envConfig{})
	for _, n := range []int{1, 7, 30} {
		body := fmt.Sprintf(`{"prompt": "Hello", "max_tokens": %d, "ignore_eos": true, "temperature": 0}`, n)
		got, _ := v.post("/v1/completions", body, http.StatusOK)
		m := got.(map[string]any)
		if c := wantInt(t, "completion_tokens", m["usage"].(map[string]any)["completion_tokens"]); c != n {
			t.Errorf("max_tokens %d with ignore_eos: %d completion tokens", n, c)
		}
		if f := m["choices"].([]any)[0].(map[string]any)["finish_reason"]; f != "length" {
			t.Errorf("max_tokens %d: finish_reason %v, want length", n, f)
		}
	}
}

func TestScoreSeed(t *testing.T) {
	v := newEnv(t, envConfig{})
	sample := func(seed int) string {
		body := scoreBody(fmt.Sprintf(`"max_new_tokens": 12, "ignore_eos": true, "do_sample": true, "temperature": 1.5, "seed": %d`, seed), "The weather today")
		return wantString(t, "text", scoreTexts(t, v, body, 1)[0])
	}
	a, b := sample(42), sample(42)
	if a != b {
		t.Fatalf("the same seed gave %q and %q", a, b)
	}
	differ := false
	for seed := 43; seed < 48 && !differ; seed++ {
		differ = sample(seed) != a
	}
	if !differ {
		t.Errorf("seeds 43..47 all gave seed 42's text %q", a)
	}

	// num_return_sequences with a seed: sequence j uses seed+j, so the
	// first of seed 42 is seed 42's text and the second seed 43's.
	body := scoreBody(`"max_new_tokens": 12, "ignore_eos": true, "do_sample": true, "temperature": 1.5, "seed": 42, "num_return_sequences": 2`, "The weather today")
	l := wantList(t, "sequences", scoreTexts(t, v, body, 1)[0], 2)
	if l[0] != a || l[1] != sample(43) {
		t.Errorf("num_return_sequences 2 with seed 42 gave %q, want [%q, seed 43's]", l, a)
	}
}

func TestScoreChat(t *testing.T) {
	v := newEnv(t, envConfig{})
	body := `{"input_data": {"input_string": [
		{"role": "system", "content": "You are a helpful assistant."},
		{"role": "user", "content": "What is the capital of France?"}],
		"parameters": {"max_new_tokens": 10, "ignore_eos": true, "return_full_text": true}}}`
	got, _ := v.post("/score", body, http.StatusOK)
	out := wantString(t, "output", wantKeys(t, "response", got, "output")["output"])
	if strings.Contains(out, "capital of France") {
		t.Errorf("return_full_text is ignored for a chat, but the output %q holds the prompt", out)
	}

	// Template errors are 400s naming the message, in /score's words.
	bad := `{"input_data": {"input_string": [{"role": "assistant", "content": "hi"}]}}`
	got, _ = v.post("/score", bad, http.StatusBadRequest)
	wantError(t, got, typeInvalid, "input_data.input_string[0].role", "input_data.input_string[0].role")
	// Only the path is /score's: the prose keeps its words.
	bad = `{"input_data": {"input_string": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}}`
	got, _ = v.post("/score", bad, http.StatusBadRequest)
	msg := wantError(t, got, typeInvalid, "input_data.input_string[1].role", "input_data.input_string[1].role is \"user\"", "user and assistant messages to alternate")
	if strings.Count(msg, "input_data") != 1 {
		t.Errorf("message %q", msg)
	}

	two := `{"input_data": {"input_string": [{"role": "user", "content": "hi"}], "parameters": {"num_return_sequences": 2}}}`
	got, _ = v.post("/score", two, http.StatusBadRequest)
	wantError(t, got, typeInvalid, "input_data.parameters.num_return_sequences", "chat")
}

func TestStopString(t *testing.T) {
	v := newEnv(t, envConfig{})
	req := func(extra string) map[string]any {
		got, _ := v.post("/v1/completions", `{"prompt": "Once upon a time", "max_tokens": 40, "ignore_eos": true, "temperature": 0`+extra+`}`, http.StatusOK)
		return got.(map[string]any)["choices"].([]any)[0].(map[string]any)
	}
	full := req("")
	text := full["text"].(string)
	// A stop string from the middle of the greedy output (on rune
	// boundaries): the next output ends before its first occurrence.
	r := []rune(text)
	if len(r) < 10 {
		t.Fatalf("greedy output too short to cut: %q", text)
	}
	stop := string(r[len(r)/2 : len(r)/2+3])
	want, _, _ := strings.Cut(text, stop)
	stopped := req(fmt.Sprintf(`, "stop": %q`, stop))
	if stopped["text"] != want || stopped["finish_reason"] != "stop" {
		t.Errorf("with stop %q: text %q finish %v, want %q and stop (full output %q)", stop, stopped["text"], stopped["finish_reason"], want, text)
	}
	// /score takes a list.
	texts := scoreTexts(t, v, scoreBody(fmt.Sprintf(`"max_new_tokens": 40, "ignore_eos": true, "stop": ["zzzzzz", %q]`, stop), "Once upon a time"), 1)
	if texts[0] != want {
		t.Errorf("/score with stop %q: %q, want %q", stop, texts[0], want)
	}
}

// max_length counts the prompt, as in Hugging Face's generate();
// max_new_tokens wins when both are given.
func TestScoreMaxLength(t *testing.T) {
	v := newEnv(t, envConfig{})
	const prompt = "Once upon a time"
	n := len(v.tok.Encode(prompt, true))
	text := func(params string) string {
		return wantString(t, "text", scoreTexts(t, v, scoreBody(params+`, "ignore_eos": true`, prompt), 1)[0])
	}
	three, four := text(`"max_new_tokens": 3`), text(`"max_new_tokens": 4`)
	if three == four {
		t.Fatalf("3 and 4 tokens give the same text %q", three)
	}
	if got := text(fmt.Sprintf(`"max_length": %d`, n+3)); got != three {
		t.Errorf("max_length %d (prompt %d + 3): %q, want the 3 tokens' %q", n+3, n, got, three)
	}
	if got := text(fmt.Sprintf(`"max_length": %d, "max_new_tokens": 3`, n+20)); got != three {
		t.Errorf("max_new_tokens 3 with max_length %d: %q, want %q", n+20, got, three)
	}
	// Each prompt gets what max_length leaves after its own tokens.
	long := prompt + " far"
	m := len(v.tok.Encode(long, true))
	if m <= n || m >= n+8 {
		t.Fatalf("the second prompt has %d tokens, the first %d", m, n)
	}
	texts := scoreTexts(t, v, scoreBody(fmt.Sprintf(`"max_length": %d, "ignore_eos": true`, n+8), prompt, long), 2)
	want := []string{
		text(`"max_new_tokens": 8`),
		wantString(t, "text", scoreTexts(t, v, scoreBody(fmt.Sprintf(`"max_new_tokens": %d, "ignore_eos": true`, n+8-m), long), 1)[0]),
	}
	for i := range texts {
		if texts[i] != want[i] {
			t.Errorf("max_length %d, prompt %d: %q, want %q", n+8, i, texts[i], want[i])
		}
	}
}
