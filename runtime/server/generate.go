package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/leo-operator/leo/runtime/chat"
	"github.com/leo-operator/leo/runtime/engine"
	"github.com/leo-operator/leo/runtime/sample"
)

// requests turns a job into engine requests, prompt-major: sequence k
// of prompt i is request i*n+k. It also returns the prompts' token
// counts, each prompt counted once (as OpenAI's usage does for n > 1).
func (s *Server) requests(j *job) ([]engine.Request, int, *apiError) {
	cfg := s.e.Config()
	if limit := cfg.MaxConcurrent + cfg.MaxQueued; j.sequences() > limit {
		// Checked before tokenizing: a body may hold many prompts. With
		// n = 1 the prompts are too many, not the choices.
		param := j.nParam
		if j.n == 1 {
			param = j.promptParam
		}
		return nil, 0, invalid(param, "the request asks for %d sequences (prompts × %s); this server runs at most %d at once and queues %d",
			j.sequences(), j.nParam, cfg.MaxConcurrent, cfg.MaxQueued)
	}
	prompts, aerr := s.promptTokens(j)
	if aerr != nil {
		return nil, 0, aerr
	}
	reqs := make([]engine.Request, 0, len(prompts)*j.n)
	promptTokens := 0
	for i, ids := range prompts {
		promptTokens += len(ids)
		p, aerr := j.paramsFor(i, len(ids))
		if aerr != nil {
			return nil, 0, aerr
		}
		for k := range j.n {
			reqs = append(reqs, engine.Request{Prompt: ids, Params: seeded(p, k)})
		}
	}
	return reqs, promptTokens, nil
}

// promptTokens returns the job's prompts as tokens: the conversation
// formatted by the chat template, the text prompts tokenized, or the
// token ids given, checked against the vocabulary.
func (s *Server) promptTokens(j *job) ([][]int32, *apiError) {
	switch {
	case j.messages != nil:
		ids, err := s.chat.Encode(s.tok, j.messages)
		if err != nil {
			return nil, chatError(err, j.promptParam)
		}
		return [][]int32{ids}, nil
	case j.tokens != nil: // checked by checkTokens
		return j.tokens, nil
	}
	prompts := make([][]int32, len(j.prompts))
	for i, p := range j.prompts {
		prompts[i] = s.tok.Encode(p, true)
	}
	return prompts, nil
}

// checkTokens refuses prompts given as token ids that are not in the
// vocabulary (the decoder has checked that they are >= 0), naming the
// first such id by its path.
func (s *Server) checkTokens(j *job) *apiError {
	vocab := s.tok.VocabSize()
	for i, ids := range j.tokens {
		for k, id := range ids {
			if int(id) < vocab {
				continue
			}
			path := fmt.Sprintf("%s[%d][%d]", j.promptParam, i, k)
			if j.tokenList {
				path = fmt.Sprintf("%s[%d]", j.promptParam, k)
			}
			return invalid(path, "%s is token id %d; this model's vocabulary has ids 0 to %d", path, id, vocab-1)
		}
	}
	return nil
}

// paramsFor returns the sampling parameters of prompt i, of promptLen
// tokens: the job's, with max_length turned into the new tokens it
// leaves after the prompt, as Hugging Face's generate() does.
func (j *job) paramsFor(i, promptLen int) (sample.Params, *apiError) {
	p := j.params
	if j.maxLength == 0 {
		return p, nil
	}
	p.MaxNewTokens = j.maxLength - promptLen
	if p.MaxNewTokens < 1 {
		return p, invalid(maxLengthParam, "%s is %d, but prompt %d has %d tokens; max_length counts the prompt, so it must be more than that (or give max_new_tokens instead)",
			maxLengthParam, j.maxLength, i, promptLen)
	}
	if p.MinNewTokens > p.MaxNewTokens {
		return p, invalid(maxLengthParam, "%s %d leaves %d new tokens after the %d tokens of prompt %d, fewer than min_new_tokens %d",
			maxLengthParam, j.maxLength, p.MaxNewTokens, promptLen, i, p.MinNewTokens)
	}
	return p, nil
}

// chatError is a 400 for a conversation the chat template refuses, its
// path in the request's words: field is OpenAI's "messages" or /score's
// "input_data.input_string".
func chatError(err error, field string) *apiError {
	var me *chat.MessageError
	if !errors.As(err, &me) { // chat.Encode returns no other
		return invalid(field, "%s: %v", field, err)
	}
	path := me.Path(field)
	return invalid(path, "%s %s", path, me.Msg)
}

// seeded returns p for the k-th sequence of a prompt: with a seed, seed+k,
// so that the n sequences differ and the request stays reproducible.
func seeded(p sample.Params, k int) sample.Params {
	if p.Seed != nil {
		seed := *p.Seed + uint64(k)
		p.Seed = &seed
	}
	return p
}

// deadline is the context of one generation request: the client's,
// bounded by the request timeout. The engine stops a sequence (and frees
// its slot) when it is done, whether queued or running.
func (s *Server) deadline(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.timeout)
}

// submit queues the job's sequences.
func (s *Server) submit(ctx context.Context, r *http.Request, j *job) ([]*engine.Stream, *apiError) {
	reqs, promptTokens, aerr := s.requests(j)
	if aerr != nil {
		return nil, aerr
	}
	streams, err := s.e.Submit(ctx, reqs...)
	if err != nil {
		return nil, submitError(err, j.promptParam)
	}
	info(r).promptTokens = promptTokens
	return streams, nil
}

// generate runs a job to its end and returns its sequences' results, in
// the order of requests.
func (s *Server) generate(r *http.Request, j *job) ([]engine.Result, *apiError) {
	ctx, cancel := s.deadline(r)
	defer cancel() // on an error, ends the other sequences too
	streams, aerr := s.submit(ctx, r, j)
	if aerr != nil {
		return nil, aerr
	}
	results := make([]engine.Result, len(streams))
	for i, st := range streams {
		res, err := st.Wait(ctx)
		if err != nil {
			return nil, generationError(r, err, s.timeout)
		}
		results[i] = res
		s.observe(r, res)
	}
	return results, nil
}

// observe records a finished sequence in the metrics and the log line.
func (s *Server) observe(r *http.Request, res engine.Result) {
	s.met.observeSequence(res)
	info(r).completionTokens += len(res.Tokens)
}

// finishReason is OpenAI's name of why a sequence ended.
func finishReason(f sample.FinishReason) string {
	if f == sample.FinishLength {
		return "length"
	}
	return "stop" // an EOS token or a stop string
}
