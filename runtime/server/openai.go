package server

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// OpenAI's API: GET /v1/models, GET /v1/models/{id}, POST
// /v1/completions and POST /v1/chat/completions, with their response and
// stream chunk shapes.

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

// modelInfo is OpenAI's model object.
type modelInfo struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func (s *Server) modelObject() modelInfo { return modelInfo{s.model, "model", s.created, "leo"} }

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Object string      `json:"object"`
		Data   []modelInfo `json:"data"`
	}{"list", []modelInfo{s.modelObject()}})
}

// handleModel answers GET /v1/models/{id} (the OpenAI clients'
// models.retrieve). The id may hold slashes ("org/name").
func (s *Server) handleModel(w http.ResponseWriter, r *http.Request) {
	if id := strings.TrimPrefix(r.URL.Path, "/v1/models/"); id != s.model {
		writeError(w, r, s.modelNotFound(id))
		return
	}
	writeJSON(w, http.StatusOK, s.modelObject())
}

// checkModel refuses a request for a model this server does not serve.
func (s *Server) checkModel(j *job) *apiError {
	if j.model == "" || j.model == s.model {
		return nil
	}
	return s.modelNotFound(j.model)
}

func (s *Server) modelNotFound(id string) *apiError {
	return &apiError{Status: http.StatusNotFound, Type: typeInvalid, Param: "model", Code: "model_not_found",
		Message: fmt.Sprintf("The model %q does not exist; this endpoint serves %q", id, s.model)}
}

// decodeOpenAI reads and decodes an OpenAI request, and answers its
// errors; nil when it did.
func (s *Server) decodeOpenAI(w http.ResponseWriter, r *http.Request, decode func([]byte) (*job, *apiError)) *job {
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		writeError(w, r, aerr)
		return nil
	}
	j, aerr := decode(body)
	if aerr == nil {
		setIgnored(w, j.ignored)
		aerr = s.checkModel(j)
	}
	if aerr == nil {
		aerr = s.checkTokens(j)
	}
	if aerr != nil {
		writeError(w, r, aerr)
		return nil
	}
	return j
}

func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request) {
	j := s.decodeOpenAI(w, r, decodeCompletion)
	if j == nil {
		return
	}
	c := completionChunks{id: "cmpl-" + rand.Text(), created: time.Now().Unix(), model: s.model,
		n: j.n, includeUsage: j.includeUsage}
	if j.echo {
		c.echo = s.promptTexts(j)
	}
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
		if c.echo != nil {
			text = c.echo[i/j.n] + text
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
	c := chatChunks{id: "chatcmpl-" + rand.Text(), created: time.Now().Unix(), model: s.model, includeUsage: j.includeUsage}
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

// promptTexts is the job's prompts as text, for echo: prompts given as
// token ids are decoded.
func (s *Server) promptTexts(j *job) []string {
	if j.tokens == nil {
		return j.prompts
	}
	texts := make([]string, len(j.tokens))
	for i, ids := range j.tokens {
		texts[i] = s.tok.Decode(ids)
	}
	return texts
}

// completionChunks are /v1/completions' stream events.
type completionChunks struct {
	id           string
	created      int64
	model        string
	n            int      // choices per prompt
	echo         []string // the prompts' text when echoed, else nil
	includeUsage bool
}

func (c completionChunks) chunk(choice *completionChoice) completion {
	ch := completion{ID: c.id, Object: "text_completion", Created: c.created, Model: c.model, Choices: []completionChoice{}}
	if choice != nil {
		ch.Choices = append(ch.Choices, *choice)
	}
	if c.includeUsage {
		ch.Usage = nullUsage
	}
	return ch
}

func (c completionChunks) start(i int) any {
	if c.echo == nil {
		return nil
	}
	return c.chunk(&completionChoice{Text: c.echo[i/c.n], Index: i})
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
