package server

import (
	"strings"

	"github.com/leo-operator/leo/runtime/chat"
	"github.com/leo-operator/leo/runtime/sample"
)

// maxChoices bounds n and num_return_sequences.
const maxChoices = 16

// job is a decoded generation request, ready for the tokenizer and the
// engine: the same for every endpoint.
type job struct {
	// One of prompts, tokens and messages is set.
	prompts   []string       // text prompts
	tokens    [][]int32      // prompts as token ids (OpenAI's completions), each >= 0 and not empty
	tokenList bool           // tokens came as one list of ids, [1, 2], not [[1, 2]]
	messages  []chat.Message // a conversation (chat)

	params sample.Params // valid; with a seed, sequence j of a prompt uses seed+j
	n      int           // sequences per prompt
	echo   bool          // answer the prompt's text followed by the generated text
	// maxLength is Hugging Face's max_length, prompt included (0: not
	// given); when set, each prompt's MaxNewTokens is what is left of it
	// after the prompt's tokens (params.MaxNewTokens holds maxLength
	// itself until then).
	maxLength int

	stream, includeUsage bool
	model                string // the requested model; "" when not named

	// promptParam is the field blamed when the engine refuses a prompt
	// (too long for the context); nParam the one blamed for too many
	// sequences.
	promptParam, nParam string
	ignored             []string
}

// sequences is how many sequences the job runs.
func (j *job) sequences() int {
	if j.messages != nil {
		return j.n
	}
	return (len(j.prompts) + len(j.tokens)) * j.n
}

// paramNames turns sample.Params.Validate's messages, which name the
// fields as sample.Params does, into the request's words: prefix is the
// path of the object that holds the parameters, rename the endpoint's
// names of the fields that differ (OpenAI's max_tokens for
// max_new_tokens).
type paramNames struct {
	prefix string
	rename map[string]string
}

// check validates p and returns Validate's complaints as one 400 that
// blames the first bad field by its path in the request, every
// complaint (one per bad field) in the message.
func (pn paramNames) check(p sample.Params) *apiError {
	err := p.Validate()
	if err == nil {
		return nil
	}
	var pairs []string
	for from, to := range pn.rename {
		pairs = append(pairs, from, to)
	}
	words := strings.NewReplacer(pairs...)
	var param string
	var msgs []string
	for line := range strings.SplitSeq(err.Error(), "\n") {
		// Each line starts with the field's name, maybe indexed: "stop[1] must ...".
		name, rest, _ := strings.Cut(line, " ")
		base, index, _ := strings.Cut(name, "[")
		if index != "" {
			index = "[" + index
		}
		path := pn.prefix + words.Replace(base) + index
		if param == "" {
			param = path
		}
		msgs = append(msgs, path+" "+words.Replace(rest))
	}
	return invalid(param, "%s", strings.Join(msgs, "; "))
}
