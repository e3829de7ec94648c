// Package server is the HTTP API of `leo-runtime serve`, what every
// OnlineEndpoint pod runs. It turns requests into engine.Requests; the
// engine batches the sequences of all concurrent requests.
//
// # Endpoints
//
//	POST /score                 Azure Machine Learning's Llama 2 schema
//	POST /v1/completions        OpenAI's (legacy) completions
//	POST /v1/chat/completions   OpenAI's chat completions
//	GET  /v1/models             the one model served
//	GET  /v1/models/{id}        that model (404 model_not_found for another id)
//	GET  /                      "healthy": Azure ML's liveness probe
//	GET  /healthz, /readyz      liveness ("ok"), readiness ("ready" or 503)
//	GET  /metrics               Prometheus, metrics named leo_*
//
// With API keys set, every path but the three probes and /metrics wants
// "Authorization: Bearer <key>".
//
// Run the Handler under the http.Server of NewHTTPServer, whose read and
// idle timeouts bound slow clients; each write of a response has
// Options.WriteTimeout (default 30 s), so that a client that stops
// reading frees its handler.
//
// # /score
//
// The body is Azure ML's {"input_data": {"input_string": [...],
// "parameters": {...}}}. A list of prompts answers one record keyed by
// the prompts' indexes, [{"0": "...", "1": "..."}]; a list of
// {"role", "content"} messages is a chat, answered {"output": "..."}. The
// parameters are Hugging Face generate()'s: temperature, top_p, top_k,
// do_sample (default false: greedy), max_new_tokens, max_length,
// min_new_tokens, repetition_penalty, ignore_eos, stop, seed,
// return_full_text, num_return_sequences. As in generate(), max_length
// counts the prompt's tokens (each prompt gets what is left after its
// own; a 400 when nothing is), and max_new_tokens wins when both are
// given; num_return_sequences > 1 needs do_sample true. Choices where
// Azure ML's script is silent:
//
//   - num_return_sequences k > 1 makes each key's value a list of the k
//     texts (the record's keys stay the prompts' indexes); a chat allows
//     only 1.
//   - input_string may also be one prompt as a bare string.
//   - return_full_text is ignored for a chat, whose prompt is a template.
//
// # OpenAI's API
//
// As OpenAI documents it, plus vLLM's extras top_k (-1 or 0: off),
// repetition_penalty, ignore_eos and min_tokens. Temperature 0 is greedy
// decoding. max_completion_tokens wins over max_tokens. A completion's
// prompt may be token ids ([1, 2] or [[1, 2], [3]]), which are not
// tokenized; an id outside the vocabulary is a 400 naming it. A chat
// message's role "developer" is "system"; text content parts are joined
// with "\n". Fields that would change the answer but are not
// implemented (logprobs, best_of > 1, suffix, logit_bias, presence and
// frequency penalties, a response_format other than {"type": "text"},
// non-empty tools unless tool_choice is "none", a tool_choice other than
// "none" or "auto", parallel_tool_calls true) are refused with a 400
// rather than ignored. usage counts each prompt once, however many
// choices it has, as OpenAI does.
//
// # Everywhere
//
// JSON null is the default of any field. With a seed, sequence j of a
// prompt uses seed+j, so that n > 1 sequences differ and stay
// reproducible; a negative seed stands for the uint64 of the same bits.
// Keys the server does not know are ignored and named, as dotted paths,
// in the response header X-Leo-Ignored-Fields ("input_data.parameters.foo,
// bar"; at most 32, then a count).
//
// Every error has OpenAI's shape, {"error": {"message", "type", "param",
// "code"}}, with param the dotted path of the field at fault: 400 for
// bad input (JSON, types, ranges, a prompt longer than the context, a
// body over MaxBodyBytes), 401, 404 (also a model other than the one
// served: code model_not_found), 405 (with Allow), 408 past
// RequestTimeout (queueing included) or for a body slower than the
// http.Server's ReadTimeout, 429 "Too many pending requests" (with
// Retry-After) when the engine's queue is full or more generation
// requests are pending than it holds plus MaxConcurrent (answered
// before the body is read), 503 while draining, 500 for bugs (handlers
// recover from panics).
//
// A stream's 200 header goes out with its first piece of text, so that
// an error while its sequences are queued gets its own status. After
// that, an error is an event {"error": ...} that ends the stream without
// [DONE], and a stream with no event for 15 s gets an SSE comment
// ": keep-alive". A request whose client went away is logged and counted
// with status 499.
//
// Each request has an id: the client's X-Request-Id or
// X-Ms-Client-Request-Id (Azure ML's) when it is at most 128 printable
// ASCII characters, else a new one. It is sent back as X-Request-Id and
// logged with the request's line.
package server
