package batch

import (
	"bytes"
	"encoding/json"

	"github.com/leo-operator/leo/runtime/batchio"

	"github.com/leo-operator/leo/runtime/sample"
)

// The bodies of OpenAI batch output lines: the chat.completion and
// text_completion objects that leo-runtime serve answers with (the same
// fields, in the same order), with ids and created derived from the row
// instead of the clock.

type openAIUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type textCompletion struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   openAIUsage        `json:"usage"`
}

type completionChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason string    `json:"finish_reason"`
}

type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   openAIUsage  `json:"usage"`
}

type chatChoice struct {
	Index        int         `json:"index"`
	Message      chatMessage `json:"message"`
	Logprobs     *struct{}   `json:"logprobs"`
	FinishReason string      `json:"finish_reason"`
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// openAIBody is the response body of a row that succeeded.
func openAIBody(url, id string, created int64, model, text string, r Result) json.RawMessage {
	u := openAIUsage{r.PromptTokens, r.CompletionTokens, r.PromptTokens + r.CompletionTokens}
	finish := "stop" // an EOS token or a stop string, as OpenAI says
	if r.Finish == sample.FinishLength {
		finish = "length"
	}
	var v any
	if url == batchio.URLChat {
		v = chatCompletion{ID: "chatcmpl-" + id, Object: "chat.completion", Created: created, Model: model,
			Choices: []chatChoice{{Message: chatMessage{"assistant", text}, FinishReason: finish}}, Usage: u}
	} else {
		v = textCompletion{ID: "cmpl-" + id, Object: "text_completion", Created: created, Model: model,
			Choices: []completionChoice{{Text: text, FinishReason: finish}}, Usage: u}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // "<" in generated text stays "<"
	if err := enc.Encode(v); err != nil {
		panic(err) // plain data
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
