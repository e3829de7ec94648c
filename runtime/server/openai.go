package server

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
)

// OpenAI's API: GET /v1/models, POST /v1/completions and POST
// /v1/chat/completions, with their response and stream chunk shapes.

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// nullUsage is the "usage": null of the chunks before the last one of a
// stream with include_usage (OpenAI's shape); without it, chunks have no
// usage key (a nil any with omitempty).
var nullUsage = json.RawMessage("null")

type completion struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   any                `json:"usage,omitempty"`
}

type completionChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"` // always null: not supported
	FinishReason *string   `json:"finish_reason"`
}

type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   any          `json:"usage,omitempty"`
}

type chatChoice struct {
	Index        int          `json:"index"`
	Message      *chatMessage `json:"message,omitempty"` // a response's
	Delta        *chatDelta   `json:"delta,omitempty"`   // a chunk's
	Logprobs     *struct{}    `json:"logprobs"`
	FinishReason *string      `json:"finish_reason"`
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	writeJSON(w, http.StatusOK, struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{"list", []model{{s.model, "model", s.created, "leo"}}})
}

// checkModel refuses a request for a model this server does not serve.
func (s *Server) checkModel(j *job) *apiError {
	if j.model == "" || j.model == s.model {
		return nil
	}
	return &apiError{Status: http.StatusNotFound, Type: typeInvalid, Param: "model", Code: "model_not_found",
		Message: fmt.Sprintf("The model %q does not exist; this endpoint serves %q", j.model, s.model)}
}

// decodeOpenAI reads and decodes an OpenAI request, and answers its
// errors; nil when it did.
func (s *Server) decodeOpenAI(w http.ResponseWriter, r *http.Request, decode func([]byte) (*job, *apiError)) *job {
	body, aerr := s.readBody(w, r)
	if aerr == nil {
		var j *job
		if j, aerr = decode(body); aerr == nil {
			setIgnored(w, j.ignored)
			if aerr = s.checkModel(j); aerr == nil {
				return j
			}
		}
	}
	writeError(w, r, aerr)
	return nil
}

func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request) {
	j := s.decodeOpenAI(w, r, decodeCompletion)
	if j == nil {
		return
	}
	c := completionChunks{id: "cmpl-" + rand.Text(), created: unix(), model: s.model, job: j}
	if j.stream {
		s.streamJob(w, r, j, c)
		return
	}
	results, aerr := s.generate(r, j)
	if aerr != nil {
		writeError(w, r, aerr)
		return
	}
	resp := c.chunk(nil)
	resp.Usage = s.usage(r)
	for i, res := range results { // i is prompt i/n's sequence i%n
		text := res.Text
		if j.echo {
			text = j.prompts[i/j.n] + text
		}
		f := finishReason(res.Finish)
		resp.Choices = append(resp.Choices, completionChoice{Text: text, Index: i, FinishReason: &f})
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	j := s.decodeOpenAI(w, r, func(b []byte) (*job, *apiError) { return decodeChat(b, s.defaultMax) })
	if j == nil {
		return
	}
	c := chatChunks{id: "chatcmpl-" + rand.Text(), created: unix(), model: s.model, includeUsage: j.includeUsage}
	if j.stream {
		s.streamJob(w, r, j, c)
		return
	}
	results, aerr := s.generate(r, j)
	if aerr != nil {
		writeError(w, r, aerr)
		return
	}
	resp := chatCompletion{ID: c.id, Object: "chat.completion", Created: c.created, Model: c.model, Usage: s.usage(r)}
	for i, res := range results {
		f := finishReason(res.Finish)
		resp.Choices = append(resp.Choices, chatChoice{Index: i, Message: &chatMessage{Role: "assistant", Content: res.Text}, FinishReason: &f})
	}
	writeJSON(w, http.StatusOK, resp)
}

// usage is the token counts of a finished request.
func (s *Server) usage(r *http.Request) usage {
	ri := info(r)
	return usage{ri.promptTokens, ri.completionTokens, ri.promptTokens + ri.completionTokens}
}

// completionChunks are /v1/completions' stream events.
type completionChunks struct {
	id      string
	created int64
	model   string
	job     *job
}

func (c completionChunks) chunk(choice *completionChoice) completion {
	ch := completion{ID: c.id, Object: "text_completion", Created: c.created, Model: c.model, Choices: []completionChoice{}}
	if choice != nil {
		ch.Choices = append(ch.Choices, *choice)
	}
	if c.job.includeUsage {
		ch.Usage = nullUsage
	}
	return ch
}

func (c completionChunks) start(i int) any {
	if !c.job.echo {
		return nil
	}
	return c.chunk(&completionChoice{Text: c.job.prompts[i/c.job.n], Index: i})
}

func (c completionChunks) delta(i int, text string) any {
	return c.chunk(&completionChoice{Text: text, Index: i})
}

func (c completionChunks) end(i int, finish string) any {
	return c.chunk(&completionChoice{Index: i, FinishReason: &finish})
}

func (c completionChunks) usage(u usage) any {
	ch := c.chunk(nil)
	ch.Usage = u
	return ch
}

// chatChunks are /v1/chat/completions' stream events.
type chatChunks struct {
	id           string
	created      int64
	model        string
	includeUsage bool
}

func (c chatChunks) chunk(choice *chatChoice) chatCompletion {
	ch := chatCompletion{ID: c.id, Object: "chat.completion.chunk", Created: c.created, Model: c.model, Choices: []chatChoice{}}
	if choice != nil {
		ch.Choices = append(ch.Choices, *choice)
	}
	if c.includeUsage {
		ch.Usage = nullUsage
	}
	return ch
}

func (c chatChunks) start(i int) any {
	empty := ""
	return c.chunk(&chatChoice{Index: i, Delta: &chatDelta{Role: "assistant", Content: &empty}})
}

func (c chatChunks) delta(i int, text string) any {
	return c.chunk(&chatChoice{Index: i, Delta: &chatDelta{Content: &text}})
}

func (c chatChunks) end(i int, finish string) any {
	return c.chunk(&chatChoice{Index: i, Delta: &chatDelta{}, FinishReason: &finish})
}

func (c chatChunks) usage(u usage) any {
	ch := c.chunk(nil)
	ch.Usage = u
	return ch
}
