package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/leo-operator/leo/runtime/chat"
)

func TestModels(t *testing.T) {
	v := newEnv(t, envConfig{opts: Options{ModelName: "llama-2-7b"}})
	resp, b := v.do(context.Background(), http.MethodGet, "/v1/models", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	top := wantKeys(t, "models", decodeJSON(t, b), "object", "data")
	if top["object"] != "list" {
		t.Errorf("object %v, want list", top["object"])
	}
	m := wantKeys(t, "data[0]", wantList(t, "data", top["data"], 1)[0], "id", "object", "created", "owned_by")
	if m["id"] != "llama-2-7b" || m["object"] != "model" || m["owned_by"] != "leo" || wantInt(t, "created", m["created"]) != int(v.s.created) {
		t.Errorf("model %v", m)
	}
}

func TestCompletions(t *testing.T) {
	v := newEnv(t, envConfig{})
	prompts := []string{"Once upon a time", "The quick brown fox"}
	body := `{"model": "tiny", "prompt": ["Once upon a time", "The quick brown fox"], "n": 2, "max_tokens": 6, "seed": 3, "temperature": 0.9, "user": "someone"}`
	got, resp := v.post("/v1/completions", body, http.StatusOK)
	if h := resp.Header.Get("X-Leo-Ignored-Fields"); h != "" {
		t.Errorf("user is known; X-Leo-Ignored-Fields %q", h)
	}
	m := wantKeys(t, "completion", got, "id", "object", "created", "model", "choices", "usage")
	if id := wantString(t, "id", m["id"]); !strings.HasPrefix(id, "cmpl-") || len(id) < 15 {
		t.Errorf("id %q", id)
	}
	if m["object"] != "text_completion" || m["model"] != "tiny" {
		t.Errorf("object %v model %v", m["object"], m["model"])
	}
	wantInt(t, "created", m["created"])
	completion := 0
	for i, c := range wantList(t, "choices", m["choices"], 4) {
		ch := wantKeys(t, "choice", c, "text", "index", "logprobs", "finish_reason")
		wantString(t, "text", ch["text"])
		if wantInt(t, "index", ch["index"]) != i || ch["logprobs"] != nil {
			t.Errorf("choice %d: %v", i, ch)
		}
		if f := ch["finish_reason"]; f != "stop" && f != "length" {
			t.Errorf("finish_reason %v", f)
		}
	}
	u := wantKeys(t, "usage", m["usage"], "prompt_tokens", "completion_tokens", "total_tokens")
	wantPrompt := len(v.tok.Encode(prompts[0], true)) + len(v.tok.Encode(prompts[1], true))
	if p := wantInt(t, "prompt_tokens", u["prompt_tokens"]); p != wantPrompt {
		t.Errorf("prompt_tokens %d, want %d", p, wantPrompt)
	}
	completion = wantInt(t, "completion_tokens", u["completion_tokens"])
	if completion < 4 || completion > 4*6 || wantInt(t, "total_tokens", u["total_tokens"]) != wantPrompt+completion {
		t.Errorf("usage %v", u)
	}

	// The same seed reproduces every choice; n > 1 choices differ (seed+j).
	again, _ := v.post("/v1/completions", body, http.StatusOK)
	texts := func(v any) (out []string) {
		for _, c := range v.(map[string]any)["choices"].([]any) {
			out = append(out, c.(map[string]any)["text"].(string))
		}
		return out
	}
	if a, b := texts(got), texts(again); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("seed 3 twice: %q then %q", a, b)
	}

	// echo prepends the prompt; temperature 0 is greedy.
	greedy, _ := v.post("/v1/completions", `{"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, "ignore_eos": true}`, http.StatusOK)
	echo, _ := v.post("/v1/completions", `{"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, "ignore_eos": true, "echo": true}`, http.StatusOK)
	if g, e := texts(greedy)[0], texts(echo)[0]; e != "Once upon a time"+g {
		t.Errorf("echo gave %q, want the prompt then %q", e, g)
	}

	// max_tokens defaults to 16, as OpenAI's does.
	def, _ := v.post("/v1/completions", `{"prompt": "Hi", "temperature": 0, "ignore_eos": true}`, http.StatusOK)
	if c := wantInt(t, "completion_tokens", def.(map[string]any)["usage"].(map[string]any)["completion_tokens"]); c != 16 {
		t.Errorf("default max_tokens: %d tokens, want 16", c)
	}
}

func TestChatCompletions(t *testing.T) {
	v := newEnv(t, envConfig{opts: Options{DefaultMaxNewTokens: 9}})
	body := `{"model": "tiny", "messages": [
		{"role": "system", "content": "Be brief."},
		{"role": "user", "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "who are you?"}]}],
		"temperature": 0, "ignore_eos": true, "n": 2}`
	got, _ := v.post("/v1/chat/completions", body, http.StatusOK)
	m := wantKeys(t, "chat completion", got, "id", "object", "created", "model", "choices", "usage")
	if id := wantString(t, "id", m["id"]); !strings.HasPrefix(id, "chatcmpl-") {
		t.Errorf("id %q", id)
	}
	if m["object"] != "chat.completion" || m["model"] != "tiny" {
		t.Errorf("object %v model %v", m["object"], m["model"])
	}
	var first string
	for i, c := range wantList(t, "choices", m["choices"], 2) {
		ch := wantKeys(t, "choice", c, "index", "message", "logprobs", "finish_reason")
		msg := wantKeys(t, "message", ch["message"], "role", "content")
		if wantInt(t, "index", ch["index"]) != i || msg["role"] != "assistant" || ch["logprobs"] != nil || ch["finish_reason"] != "length" {
			t.Errorf("choice %d: %v", i, ch)
		}
		content := wantString(t, "content", msg["content"])
		if i == 0 {
			first = content
		} else if content != first {
			t.Errorf("greedy choices differ: %q, %q", first, content)
		}
	}
	u := wantKeys(t, "usage", m["usage"], "prompt_tokens", "completion_tokens", "total_tokens")
	// DefaultMaxNewTokens applies to chat; both choices ran to it.
	if c := wantInt(t, "completion_tokens", u["completion_tokens"]); c != 2*9 {
		t.Errorf("completion_tokens %d, want 18", c)
	}
	// Text parts are joined with "\n".
	ids, err := v.s.chat.Encode(v.tok, []chat.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hello, \nwho are you?"}})
	if err != nil {
		t.Fatal(err)
	}
	if p := wantInt(t, "prompt_tokens", u["prompt_tokens"]); p != len(ids) {
		t.Errorf("prompt_tokens %d, want %d", p, len(ids))
	}

	// max_completion_tokens wins over max_tokens.
	short, _ := v.post("/v1/chat/completions", `{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10, "max_completion_tokens": 3, "ignore_eos": true}`, http.StatusOK)
	if c := wantInt(t, "completion_tokens", short.(map[string]any)["usage"].(map[string]any)["completion_tokens"]); c != 3 {
		t.Errorf("max_completion_tokens 3: %d tokens", c)
	}

	// Unsupported content parts are refused.
	img := `{"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "x"}}]}]}`
	bad, _ := v.post("/v1/chat/completions", img, http.StatusBadRequest)
	wantError(t, bad, typeInvalid, "messages[0].content[1].type", "image_url", "not supported")

	// The template's errors name the message.
	bad, _ = v.post("/v1/chat/completions", `{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}`, http.StatusBadRequest)
	wantError(t, bad, typeInvalid, "messages[1].role", "messages[1].role", "alternate")

	// "developer" is OpenAI's newer name of "system".
	dev, _ := v.post("/v1/chat/completions", `{"messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "max_tokens": 1}`, http.StatusOK)
	ids, err = v.s.chat.Encode(v.tok, []chat.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}})
	if err != nil {
		t.Fatal(err)
	}
	if p := wantInt(t, "prompt_tokens", dev.(map[string]any)["usage"].(map[string]any)["prompt_tokens"]); p != len(ids) {
		t.Errorf("developer message: prompt_tokens %d, want the system message's %d", p, len(ids))
	}
}

// A prompt given as token ids is not tokenized, and echo gives its text.
func TestTokenPrompts(t *testing.T) {
	v := newEnv(t, envConfig{})
	text := func(body string) (string, int) {
		got, _ := v.post("/v1/completions", body, http.StatusOK)
		m := got.(map[string]any)
		return m["choices"].([]any)[0].(map[string]any)["text"].(string),
			wantInt(t, "prompt_tokens", m["usage"].(map[string]any)["prompt_tokens"])
	}
	const prompt = "Once upon a time"
	ids := v.tok.Encode(prompt, true)
	idList := strings.Trim(strings.Join(strings.Fields(fmt.Sprint(ids)), ", "), "[]")
	want, _ := text(fmt.Sprintf(`{"prompt": %q, "max_tokens": 5, "temperature": 0, "ignore_eos": true}`, prompt))
	got, n := text(`{"prompt": [` + idList + `], "max_tokens": 5, "temperature": 0, "ignore_eos": true}`)
	if got != want || n != len(ids) {
		t.Errorf("token prompt: %q with %d prompt tokens, want %q with %d", got, n, want, len(ids))
	}
	got, n = text(`{"prompt": [[` + idList + `], [` + idList + `]], "max_tokens": 5, "temperature": 0, "ignore_eos": true, "echo": true}`)
	if got != prompt+want || n != 2*len(ids) {
		t.Errorf("echoed token prompts: %q with %d prompt tokens, want %q with %d", got, n, prompt+want, 2*len(ids))
	}
	vocab := v.tok.VocabSize()
	bad, _ := v.post("/v1/completions", fmt.Sprintf(`{"prompt": [1, %d]}`, vocab), http.StatusBadRequest)
	wantError(t, bad, typeInvalid, "prompt[1]", fmt.Sprint(vocab), "vocabulary")
	bad, _ = v.post("/v1/completions", fmt.Sprintf(`{"prompt": [[1], [2, %d]], "echo": true}`, vocab+7), http.StatusBadRequest)
	wantError(t, bad, typeInvalid, "prompt[1][1]", fmt.Sprint(vocab+7))
}

func TestModel(t *testing.T) {
	for _, name := range []string{"llama-2-7b", "meta-llama/Llama-2-7b-chat-hf"} {
		v := newEnv(t, envConfig{opts: Options{ModelName: name}})
		resp, b := v.do(context.Background(), http.MethodGet, "/v1/models/"+name, "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/models/%s: %d %s", name, resp.StatusCode, b)
		}
		m := wantKeys(t, "model", decodeJSON(t, b), "id", "object", "created", "owned_by")
		if m["id"] != name || m["object"] != "model" || m["owned_by"] != "leo" {
			t.Errorf("model %v", m)
		}
		resp, b = v.do(context.Background(), http.MethodGet, "/v1/models/gpt-4", "")
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("GET /v1/models/gpt-4: %d", resp.StatusCode)
		}
		got := decodeJSON(t, b)
		wantError(t, got, typeInvalid, "model", "gpt-4")
		if code := got.(map[string]any)["error"].(map[string]any)["code"]; code != "model_not_found" {
			t.Errorf("code %v, want model_not_found", code)
		}
	}
}

func TestModelNotFound(t *testing.T) {
	v := newEnv(t, envConfig{})
	for _, path := range []string{"/v1/completions", "/v1/chat/completions"} {
		body := `{"model": "gpt-4", "prompt": "Hi", "messages": [{"role": "user", "content": "Hi"}]}`
		got, _ := v.post(path, body, http.StatusNotFound)
		wantError(t, got, typeInvalid, "model", "gpt-4", "tiny")
		if code := got.(map[string]any)["error"].(map[string]any)["code"]; code != "model_not_found" {
			t.Errorf("%s: code %v, want model_not_found", path, code)
		}
	}
}

func TestIgnoredFields(t *testing.T) {
	v := newEnv(t, envConfig{})
	body := `{"bar": 1, "input_data": {"input_string": ["Hi"], "foo": 2, "parameters": {"max_new_tokens": 2, "foo": 3, "typical_p": 5}}}`
	_, resp := v.post("/score", body, http.StatusOK)
	if h, want := resp.Header.Get("X-Leo-Ignored-Fields"), "bar, input_data.foo, input_data.parameters.foo, input_data.parameters.typical_p"; h != want {
		t.Errorf("/score: X-Leo-Ignored-Fields %q, want %q", h, want)
	}
	chat := `{"messages": [{"role": "user", "content": "Hi", "name": "me"}], "max_tokens": 2, "tools": [], "stream_options": null, "store": false}`
	_, resp = v.post("/v1/chat/completions", chat, http.StatusOK)
	if h, want := resp.Header.Get("X-Leo-Ignored-Fields"), "messages[0].name, store"; h != want {
		t.Errorf("chat: X-Leo-Ignored-Fields %q, want %q", h, want)
	}
	_, resp = v.post("/v1/completions", `{"prompt": "Hi", "max_tokens": 2}`, http.StatusOK)
	if _, ok := resp.Header["X-Leo-Ignored-Fields"]; ok {
		t.Errorf("no ignored fields, but the header is %q", resp.Header.Get("X-Leo-Ignored-Fields"))
	}
}
