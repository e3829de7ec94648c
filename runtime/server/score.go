package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/leo-operator/leo/runtime/chat"
	"github.com/leo-operator/leo/runtime/engine"
	"github.com/leo-operator/leo/runtime/sample"
)

// POST /score: the request schema of Azure Machine Learning's Llama 2
// online endpoints (the model card's examples and Azure ML's scoring
// script):
//
//	{"input_data": {"input_string": ["I believe the meaning of life is"],
//	                "parameters": {"temperature": 0.8, "max_new_tokens": 100, "do_sample": true}}}
//	→ [{"0": "<generated text>"}]
//
// Several prompts give one record keyed "0".."N-1". With
// num_return_sequences k > 1 each key's value is a list of the k texts
// instead of a string (Azure's script has no such case; a list keeps
// the record's keys the prompts' indexes). A list of {"role","content"}
// messages is a chat: → {"output": "<the assistant's answer>"}.

const (
	scoreParams    = "input_data.parameters"
	maxLengthParam = scoreParams + ".max_length"
)

// decodeScore decodes and validates a /score body. defaultMax is the
// max_new_tokens of a request that gives none.
func decodeScore(body []byte, defaultMax int) (*job, *apiError) {
	d := &decoder{}
	top := d.body(body)
	j := &job{n: 1, promptParam: "input_data.input_string", nParam: scoreParams + ".num_return_sequences"}

	in := top.object("input_data")
	if in == nil && d.err == nil {
		d.fail(invalid("input_data", "input_data is required: {\"input_data\": {\"input_string\": [\"a prompt\"], \"parameters\": {...}}}"))
	}
	if in != nil {
		decodeInputString(in, j)
		decodeScoreParams(in.object("parameters"), defaultMax, j)
		in.done()
	}
	top.done()
	if d.err != nil {
		return nil, d.err
	}
	if j.messages != nil && j.n > 1 {
		return nil, invalid(j.nParam, "%s must be 1 for a chat (got %d)", j.nParam, j.n)
	}
	if j.n > 1 && !j.params.DoSample {
		// Greedy decoding would give k identical texts; Hugging Face's
		// generate() refuses this too.
		return nil, invalid(j.nParam, "%s is %d, which needs do_sample true: greedy decoding gives the same text every time", j.nParam, j.n)
	}
	names := paramNames{prefix: scoreParams + "."}
	if j.maxLength > 0 { // params.MaxNewTokens holds max_length until the prompt is tokenized
		names.rename = map[string]string{"max_new_tokens": "max_length"}
	}
	if err := names.check(j.params); err != nil {
		return nil, err
	}
	j.ignored = d.ignored
	return j, nil
}

// decodeInputString reads input_string: a list of prompts (strings), a
// chat (a list of {"role","content"} objects), or one prompt as a bare
// string.
func decodeInputString(in *object, j *job) {
	const path = "input_data.input_string"
	raw, ok := in.raw("input_string")
	if !ok {
		in.d.fail(invalid(path, "%s is required: a list of prompts, or of chat messages {\"role\", \"content\"}", path))
		return
	}
	if bytes.TrimSpace(raw)[0] == '"' {
		s, err := stringAt(path, raw)
		if err != nil {
			in.d.fail(err)
			return
		}
		j.prompts = []string{s}
		return
	}
	elems, _ := in.array("input_string")
	if in.d.err != nil {
		return
	}
	if len(elems) == 0 {
		in.d.fail(invalid(path, "%s is empty; give at least one prompt", path))
		return
	}
	if bytes.TrimSpace(elems[0])[0] == '{' {
		j.messages = make([]chat.Message, 0, len(elems))
		for i, e := range elems {
			p := fmt.Sprintf("%s[%d]", path, i)
			if bytes.TrimSpace(e)[0] != '{' {
				in.d.fail(typeError(p, "a message object {\"role\", \"content\"} like the first one", e))
				return
			}
			m := in.d.objectAt(p, e)
			if m == nil {
				return
			}
			j.messages = append(j.messages, chat.Message{Role: m.str("role"), Content: m.str("content")})
			m.done()
		}
		return
	}
	j.prompts = make([]string, 0, len(elems))
	for i, e := range elems {
		s, err := stringAt(fmt.Sprintf("%s[%d]", path, i), e)
		if err != nil {
			in.d.fail(err)
			return
		}
		j.prompts = append(j.prompts, s)
	}
}

// decodeScoreParams reads the parameters object (nil: none given) into
// j, Hugging Face's generate() names and defaults: greedy unless
// do_sample, temperature 1, top_k and top_p off, repetition_penalty 1.
// max_length, the prompt's tokens included, applies unless
// max_new_tokens is given, as in generate().
func decodeScoreParams(o *object, defaultMax int, j *job) {
	p := sample.DefaultParams()
	p.MaxNewTokens = defaultMax
	j.params, j.n = p, 1
	if o == nil {
		return
	}
	p.Temperature = o.number("temperature")
	p.TopP = o.number("top_p")
	p.TopK = o.integer("top_k", 0)
	p.DoSample = o.boolean("do_sample")
	hasMaxLength := o.has("max_length") // read (known) even when max_new_tokens wins
	if o.has("max_new_tokens") || !hasMaxLength {
		p.MaxNewTokens = o.integer("max_new_tokens", defaultMax)
	} else {
		j.maxLength = o.integer("max_length", 0)
		if path := o.Key("max_length"); j.maxLength < 1 && o.d.err == nil {
			o.d.fail(invalid(path, "%s must be >= 1 (got %d)", path, j.maxLength))
		}
		// Validated in max_new_tokens' place until the prompt's length
		// is known (requests turns it into max_new_tokens).
		p.MaxNewTokens = j.maxLength
	}
	p.MinNewTokens = o.integer("min_new_tokens", 0)
	p.RepetitionPenalty = o.number("repetition_penalty")
	p.IgnoreEOS = o.boolean("ignore_eos")
	p.Seed = o.seed("seed")
	p.Stop = o.strings("stop")
	j.echo = o.boolean("return_full_text")
	j.n = o.integer("num_return_sequences", 1)
	if o.d.err == nil && (j.n < 1 || j.n > maxChoices) {
		path := o.Key("num_return_sequences")
		o.d.fail(invalid(path, "%s must be in [1, %d] (got %d)", path, maxChoices, j.n))
	}
	j.params = p
	o.done()
}

func (s *Server) handleScore(w http.ResponseWriter, r *http.Request) {
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		writeError(w, r, aerr)
		return
	}
	j, aerr := decodeScore(body, s.defaultMax)
	if aerr != nil {
		writeError(w, r, aerr)
		return
	}
	setIgnored(w, j.ignored)
	results, aerr := s.generate(r, j)
	if aerr != nil {
		writeError(w, r, aerr)
		return
	}
	if j.messages != nil {
		writeJSON(w, http.StatusOK, map[string]string{"output": results[0].Text})
		return
	}
	writeJSON(w, http.StatusOK, []json.RawMessage{scoreRecord(j, results)})
}

// scoreRecord is the one record of a text-generation answer, its keys
// in the prompts' order ("0", "1", ..., "10"; a Go map would sort them
// as strings).
func scoreRecord(j *job, results []engine.Result) json.RawMessage {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, prompt := range j.prompts {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(strconv.Itoa(i)))
		b.WriteByte(':')
		texts := make([]string, j.n)
		for k := range texts {
			texts[k] = results[i*j.n+k].Text
			if j.echo {
				texts[k] = prompt + texts[k]
			}
		}
		if j.n == 1 {
			b.Write(marshal(texts[0]))
		} else {
			b.Write(marshal(texts))
		}
	}
	b.WriteByte('}')
	return b.Bytes()
}

// marshal encodes v without escaping HTML characters.
func marshal(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err) // strings and lists of them always encode
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
