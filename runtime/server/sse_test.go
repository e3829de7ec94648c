package server

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/leo-operator/leo/runtime/engine"
)

// stream posts a streaming request and returns its events' payloads,
// checking the framing and headers.
func stream(t *testing.T, v *env, path, body string) []string {
	t.Helper()
	resp, b := v.do(context.Background(), http.MethodPost, path, body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if ct, cc := resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"); ct != "text/event-stream" || cc != "no-cache" {
		t.Errorf("Content-Type %q, Cache-Control %q", ct, cc)
	}
	events := parseSSE(t, string(b))
	if events[len(events)-1] != "[DONE]" {
		t.Fatalf("the stream ends with %q, not [DONE]", events[len(events)-1])
	}
	return events[:len(events)-1]
}

func TestStreamCompletions(t *testing.T) {
	v := newEnv(t, envConfig{})
	const req = `"prompt": ["Once upon a time", "Hello"], "n": 2, "max_tokens": 30, "temperature": 0, "ignore_eos": true`
	got, _ := v.post("/v1/completions", "{"+req+"}", http.StatusOK)
	var want []string
	for _, c := range got.(map[string]any)["choices"].([]any) {
		want = append(want, c.(map[string]any)["text"].(string))
	}

	events := stream(t, v, "/v1/completions", `{`+req+`, "stream": true, "stream_options": {"include_usage": true}}`)
	texts := make([]string, 4)
	finished := make([]bool, 4)
	var id string
	for i, ev := range events[:len(events)-1] {
		m := wantKeys(t, "chunk", decodeJSON(t, []byte(ev)), "id", "object", "created", "model", "choices", "usage")
		if m["object"] != "text_completion" || m["usage"] != nil || m["model"] != "tiny" {
			t.Fatalf("chunk %d: %v", i, m)
		}
		if i == 0 {
			id = wantString(t, "id", m["id"])
		} else if m["id"] != id {
			t.Errorf("chunk %d has id %v, the first %q", i, m["id"], id)
		}
		c := wantKeys(t, "choice", wantList(t, "choices", m["choices"], 1)[0], "text", "index", "logprobs", "finish_reason")
		k := wantInt(t, "index", c["index"])
		if finished[k] {
			t.Fatalf("chunk %d for choice %d after its end", i, k)
		}
		texts[k] += wantString(t, "text", c["text"])
		if c["finish_reason"] != nil {
			if c["finish_reason"] != "length" || c["text"] != "" {
				t.Errorf("last chunk of choice %d: %v", k, c)
			}
			finished[k] = true
		}
	}
	for k := range texts {
		if !finished[k] || texts[k] != want[k] {
			t.Errorf("choice %d: streamed %q (finished %v), not streamed %q", k, texts[k], finished[k], want[k])
		}
	}
	// The usage chunk: no choices.
	last := wantKeys(t, "usage chunk", decodeJSON(t, []byte(events[len(events)-1])), "id", "object", "created", "model", "choices", "usage")
	wantList(t, "choices", last["choices"], 0)
	u := wantKeys(t, "usage", last["usage"], "prompt_tokens", "completion_tokens", "total_tokens")
	if wantInt(t, "completion_tokens", u["completion_tokens"]) != 4*30 {
		t.Errorf("usage %v", u)
	}

	// Without include_usage, chunks have no usage key.
	plain := stream(t, v, "/v1/completions", `{"prompt": "Hi", "max_tokens": 3, "stream": true, "echo": true, "temperature": 0}`)
	first := wantKeys(t, "chunk", decodeJSON(t, []byte(plain[0])), "id", "object", "created", "model", "choices")
	if text := first["choices"].([]any)[0].(map[string]any)["text"]; text != "Hi" {
		t.Errorf("echo: the first chunk is %q, want the prompt", text)
	}
}

func TestStreamChat(t *testing.T) {
	v := newEnv(t, envConfig{})
	const req = `"messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 25, "temperature": 0, "ignore_eos": true`
	got, _ := v.post("/v1/chat/completions", "{"+req+"}", http.StatusOK)
	want := got.(map[string]any)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"]

	events := stream(t, v, "/v1/chat/completions", `{`+req+`, "stream": true}`)
	var text string
	for i, ev := range events {
		m := wantKeys(t, "chunk", decodeJSON(t, []byte(ev)), "id", "object", "created", "model", "choices")
		if m["object"] != "chat.completion.chunk" {
			t.Fatalf("object %v", m["object"])
		}
		c := wantKeys(t, "choice", wantList(t, "choices", m["choices"], 1)[0], "index", "delta", "logprobs", "finish_reason")
		switch i {
		case 0:
			d := wantKeys(t, "first delta", c["delta"], "role", "content")
			if d["role"] != "assistant" || d["content"] != "" || c["finish_reason"] != nil {
				t.Errorf("first chunk %v", c)
			}
		case len(events) - 1:
			wantKeys(t, "last delta", c["delta"])
			if c["finish_reason"] != "length" {
				t.Errorf("last chunk %v", c)
			}
		default:
			d := wantKeys(t, "delta", c["delta"], "content")
			text += wantString(t, "content", d["content"])
			if c["finish_reason"] != nil {
				t.Errorf("chunk %d: finish_reason %v", i, c["finish_reason"])
			}
		}
	}
	if text != want {
		t.Errorf("streamed %q, not streamed %q", text, want)
	}
}

func TestClientDisconnectFreesTheSlot(t *testing.T) {
	v := newEnv(t, envConfig{model: long, engine: engine.Config{MaxConcurrent: 2}})
	const max = 8000 // seconds of generation
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, v.srv.URL+"/v1/completions",
		strings.NewReader(`{"prompt": "Once", "max_tokens": 8000, "ignore_eos": true, "stream": true}`))
	resp, err := v.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if st := v.e.Stats(); st.Running != 1 {
		t.Fatalf("Stats.Running %d while streaming, want 1", st.Running)
	}
	cancel()
	eventually(t, "the slot is freed", func() bool { return v.e.Stats().Running == 0 })
	if n := v.e.Stats().GeneratedTokens; n >= max {
		t.Errorf("the engine generated all %d tokens for a client that went away", n)
	}
	eventually(t, "the request is logged as 499", func() bool { return strings.Contains(v.log.String(), "status=499") })
}
