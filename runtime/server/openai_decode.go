package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/leo-operator/leo/runtime/chat"
	"github.com/leo-operator/leo/runtime/jsonvalue"
	"github.com/leo-operator/leo/runtime/sample"
)

// OpenAI's defaults where they differ from Hugging Face's.
const openAIMaxTokens = 16 // /v1/completions' max_tokens

// decodeCompletion decodes and validates a POST /v1/completions body.
func decodeCompletion(body []byte) (*job, *apiError) {
	d := &decoder{}
	o := d.body(body)
	j := &job{promptParam: "prompt", nParam: "n"}
	j.model = o.str("model")
	decodePrompt(o, j)
	j.echo = o.boolean("echo")
	maxTokens := o.integer("max_tokens", openAIMaxTokens)
	refuse(o, "suffix", func(raw []byte) bool { return string(bytes.TrimSpace(raw)) != `""` })
	refuse(o, "logprobs", nil)
	refuse(o, "best_of", func(raw []byte) bool { n, ok := jsonvalue.WholeNumber(raw); return !ok || n != 1 })
	names := decodeOpenAICommon(o, j, maxTokens, "max_tokens")
	o.done()
	if d.err != nil {
		return nil, d.err
	}
	if err := names.check(j.params); err != nil {
		return nil, err
	}
	j.ignored = d.ignored
	return j, nil
}

// decodePrompt reads a completion's prompt in any of OpenAI's four
// forms: a string, a list of strings, a list of token ids (one prompt),
// or a list of lists of token ids. Token ids must be integers >= 0; the
// server checks them against the vocabulary.
func decodePrompt(o *object, j *job) {
	raw, ok := o.raw("prompt")
	if !ok {
		if o.d.err == nil {
			o.d.fail(invalid("prompt", "prompt is required: a string, a list of strings, a list of token ids or a list of lists of token ids"))
		}
		return
	}
	if bytes.TrimSpace(raw)[0] != '[' {
		j.prompts = o.strings("prompt") // a string, or a type error
		return
	}
	elems, _ := o.array("prompt")
	if len(elems) == 0 {
		o.d.fail(invalid("prompt", "prompt is an empty list; give at least one prompt"))
		return
	}
	switch bytes.TrimSpace(elems[0])[0] {
	case '"':
		j.prompts = o.strings("prompt")
	case '[':
		j.tokens = make([][]int32, 0, len(elems))
		for i, e := range elems {
			path := fmt.Sprintf("prompt[%d]", i)
			if bytes.TrimSpace(e)[0] != '[' {
				o.d.fail(typeError(path, "a list of token ids like prompt[0]", e))
				return
			}
			var ids []json.RawMessage
			_ = json.Unmarshal(e, &ids) // cannot fail: the body parsed
			j.tokens = append(j.tokens, tokenIDs(o.d, path, ids))
		}
	default:
		j.tokens, j.tokenList = [][]int32{tokenIDs(o.d, "prompt", elems)}, true
	}
	if o.d.err != nil {
		j.prompts, j.tokens = nil, nil
	}
}

// tokenIDs reads the elements of the list at path as a prompt's token
// ids.
func tokenIDs(d *decoder, path string, elems []json.RawMessage) []int32 {
	if len(elems) == 0 {
		d.fail(invalid(path, "%s is an empty list of token ids; a prompt needs at least one token", path))
		return nil
	}
	ids := make([]int32, len(elems))
	for k, e := range elems {
		n, ok := jsonvalue.WholeNumber(e)
		if !ok || n < 0 || n > math.MaxInt32 {
			d.fail(typeError(fmt.Sprintf("%s[%d]", path, k), "a token id, an integer >= 0", e))
			return nil
		}
		ids[k] = int32(n)
	}
	return ids
}

// decodeChat decodes and validates a POST /v1/chat/completions body.
// defaultMax is the max_tokens of a request that gives none.
func decodeChat(body []byte, defaultMax int) (*job, *apiError) {
	d := &decoder{}
	o := d.body(body)
	j := &job{promptParam: "messages", nParam: "n"}
	j.model = o.str("model")
	elems, ok := o.array("messages")
	switch {
	case !ok && d.err == nil:
		d.fail(invalid("messages", "messages is required: a list of {\"role\", \"content\"} objects"))
	case ok && len(elems) == 0:
		d.fail(invalid("messages", "messages is empty; give at least one message"))
	}
	j.messages = make([]chat.Message, 0, len(elems))
	for i, e := range elems {
		m := d.objectAt(fmt.Sprintf("messages[%d]", i), e)
		if m == nil {
			break
		}
		role := m.str("role")
		if role == "developer" { // OpenAI's newer name of the system role
			role = "system"
		}
		j.messages = append(j.messages, chat.Message{Role: role, Content: messageContent(m)})
		m.done()
	}
	// max_completion_tokens replaced max_tokens in OpenAI's API; both
	// are read, the new one wins, and errors name the one given.
	maxName, maxTokens := "max_tokens", o.integer("max_tokens", defaultMax)
	if o.has("max_completion_tokens") {
		maxName, maxTokens = "max_completion_tokens", o.integer("max_completion_tokens", defaultMax)
	}
	refuse(o, "logprobs", func(raw []byte) bool { return string(bytes.TrimSpace(raw)) != "false" })
	refuse(o, "top_logprobs", func(raw []byte) bool { n, ok := jsonvalue.WholeNumber(raw); return !ok || n != 0 })
	refuseTools(o)
	names := decodeOpenAICommon(o, j, maxTokens, maxName)
	o.done()
	if d.err != nil {
		return nil, d.err
	}
	if err := names.check(j.params); err != nil {
		return nil, err
	}
	j.ignored = d.ignored
	return j, nil
}

// refuseTools refuses tool calling, which the server cannot do: tools
// (unless empty, or tool_choice is "none", which forbids calling them),
// a tool_choice that requires a call, and parallel_tool_calls true.
func refuseTools(o *object) {
	choice, _ := o.raw("tool_choice")
	none := string(bytes.TrimSpace(choice)) == `"none"`
	refuse(o, "tools", func(raw []byte) bool {
		return !none && string(bytes.Join(bytes.Fields(raw), nil)) != "[]"
	})
	refuse(o, "tool_choice", func(raw []byte) bool {
		c := string(bytes.TrimSpace(raw))
		return c != `"none"` && c != `"auto"`
	})
	refuse(o, "parallel_tool_calls", func(raw []byte) bool { return string(bytes.TrimSpace(raw)) != "false" })
}

// messageContent reads a message's content: a string, or a list of
// parts of which only {"type":"text","text":...} is supported (they are
// joined with "\n", as vLLM does). Null (an assistant turn that only
// called tools) is "".
func messageContent(m *object) string {
	path := m.Key("content")
	raw, ok := m.raw("content")
	if !ok {
		return ""
	}
	if bytes.TrimSpace(raw)[0] != '[' {
		s, err := stringAt(path, raw)
		if err != nil {
			m.d.fail(typeError(path, "a string or a list of text parts", raw))
		}
		return s
	}
	parts, _ := m.array("content")
	texts := make([]string, 0, len(parts))
	for i, raw := range parts {
		pp := fmt.Sprintf("%s[%d]", path, i)
		part := m.d.objectAt(pp, raw)
		if part == nil {
			return ""
		}
		if t := part.str("type"); t != "text" && m.d.err == nil {
			m.d.fail(invalid(pp+".type", "%s.type %q is not supported; only text parts are", pp, t))
			return ""
		}
		texts = append(texts, part.str("text"))
		part.done()
	}
	return strings.Join(texts, "\n")
}

// decodeOpenAICommon reads the fields that completions and chat
// completions share: sampling (with vLLM's extras top_k,
// repetition_penalty, ignore_eos, min_tokens), n, stream, stop, seed.
// OpenAI samples by default; temperature 0 means greedy.
func decodeOpenAICommon(o *object, j *job, maxTokens int, maxName string) paramNames {
	p := sample.DefaultParams()
	p.MaxNewTokens = maxTokens
	p.Temperature = o.number("temperature")
	p.DoSample = p.Temperature > 0 // 0: greedy (and a negative one fails Validate)
	p.TopP = o.number("top_p")
	p.TopK = o.integer("top_k", 0)
	if p.TopK == -1 {
		p.TopK = 0 // vLLM's "off"
	}
	p.RepetitionPenalty = o.number("repetition_penalty")
	p.MinNewTokens = o.integer("min_tokens", 0)
	p.IgnoreEOS = o.boolean("ignore_eos")
	p.Seed = o.seed("seed")
	p.Stop = o.strings("stop")
	j.params = p

	j.n = o.integer("n", 1)
	if o.d.err == nil && (j.n < 1 || j.n > maxChoices) {
		o.d.fail(invalid("n", "n must be in [1, %d] (got %d)", maxChoices, j.n))
	}
	j.stream = o.boolean("stream")
	if so := o.object("stream_options"); so != nil {
		if !j.stream && o.d.err == nil {
			o.d.fail(invalid("stream_options", "stream_options is only allowed when stream is true"))
		}
		j.includeUsage = so.boolean("include_usage")
		so.done()
	}
	o.Skip("user") // an end-user id for OpenAI's abuse monitoring; nothing to do here

	zero := func(raw []byte) bool { f, ok := parseNumber(raw); return !ok || f != 0 }
	refuse(o, "presence_penalty", zero)
	refuse(o, "frequency_penalty", zero)
	refuse(o, "logit_bias", func(raw []byte) bool { return string(bytes.Join(bytes.Fields(raw), nil)) != "{}" })
	// JSON mode and structured outputs (vLLM takes response_format on
	// completions too): only plain text is implemented.
	refuse(o, "response_format", func(raw []byte) bool {
		var f struct{ Type string }
		return json.Unmarshal(raw, &f) != nil || f.Type != "text"
	})
	return paramNames{rename: map[string]string{"max_new_tokens": maxName, "min_new_tokens": "min_tokens"}}
}

// refuse fails the request when field k is given (not null) and
// unsupported(value) holds (nil: any value is unsupported). Such fields
// change the answer, so ignoring them would mislead.
func refuse(o *object, k string, unsupported func(raw []byte) bool) {
	raw, ok := o.raw(k)
	if ok && (unsupported == nil || unsupported(raw)) {
		o.d.fail(invalid(k, "%s is not supported (got %s)", k, jsonvalue.Clip(raw)))
	}
}
