package server

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/leo-operator/leo/runtime/engine"
	"github.com/leo-operator/leo/runtime/sample"
)

// requests turns a job into engine requests, prompt-major: sequence k
// of prompt i is request i*n+k. It also returns the prompts' token
// counts, each prompt counted once (as OpenAI's usage does for n > 1).
func (s *Server) requests(j *job) ([]engine.Request, int, *apiError) {
	cfg := s.e.Config()
	if limit := cfg.MaxConcurrent + cfg.MaxQueued; j.sequences() > limit {
		// Checked before tokenizing: a body may hold many prompts.
		return nil, 0, invalid(j.nParam, "the request asks for %d sequences (prompts × %s); this server runs at most %d at once and queues %d",
			j.sequences(), j.nParam, cfg.MaxConcurrent, cfg.MaxQueued)
	}
	var prompts [][]int32
	if j.messages != nil {
		ids, err := s.chat.Encode(s.tok, j.messages)
		if err != nil {
			return nil, 0, chatError(err, j.promptParam)
		}
		prompts = [][]int32{ids}
	} else {
		for _, p := range j.prompts {
			prompts = append(prompts, s.tok.Encode(p, true))
		}
	}
	reqs := make([]engine.Request, 0, len(prompts)*j.n)
	promptTokens := 0
	for _, ids := range prompts {
		promptTokens += len(ids)
		for k := range j.n {
			reqs = append(reqs, engine.Request{Prompt: ids, Params: seeded(j.params, k)})
		}
	}
	return reqs, promptTokens, nil
}

// chatError is a 400 for a conversation the chat template refuses. Its
// messages name the field as OpenAI's "messages[i].role"; /score's
// conversation is input_data.input_string, so the name is replaced, and
// the leading path becomes the error's param.
func chatError(err error, field string) *apiError {
	msg := strings.ReplaceAll(err.Error(), "messages", field)
	param := field
	if head, _, _ := strings.Cut(msg, " "); strings.HasPrefix(head, field) {
		param = strings.TrimRight(head, ":;,")
	}
	return invalid(param, "%s", msg)
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

// unix is the "created" of a response.
func unix() int64 { return time.Now().Unix() }
