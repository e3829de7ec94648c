package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/leo-operator/leo/runtime/engine"
)

// Error types, as OpenAI's API names them (the first four) plus the
// ones this server needs; every error body of every endpoint uses them.
const (
	typeInvalid     = "invalid_request_error"
	typeAuth        = "authentication_error"
	typeTimeout     = "timeout"
	typeRateLimit   = "rate_limit_exceeded"
	typeServer      = "server_error"
	typeUnavailable = "unavailable"
)

// statusClientGone is what logs and metrics record for a request whose
// client went away before the answer (nginx's convention); nothing is
// written to the connection then.
const statusClientGone = 499

// apiError is a failed request: its HTTP status and the body
//
//	{"error":{"message":..,"type":..,"param":..,"code":..}}
//
// which is OpenAI's error shape, used by every endpoint so that clients
// need one parser. Param is the dotted path of the field at fault ("" is
// null), Code a machine-readable reason ("" is null).
type apiError struct {
	Status  int
	Type    string
	Message string
	Param   string
	Code    string
}

func (e *apiError) Error() string { return e.Message }

// errorBody is the JSON of an apiError.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func (e *apiError) body() errorBody {
	b := errorBody{Error: errorDetail{Message: e.Message, Type: e.Type}}
	if e.Param != "" {
		b.Error.Param = &e.Param
	}
	if e.Code != "" {
		b.Error.Code = &e.Code
	}
	return b
}

// invalid is a 400 that blames param.
func invalid(param, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: typeInvalid, Param: param, Message: fmt.Sprintf(format, args...)}
}

var (
	errDraining = &apiError{Status: http.StatusServiceUnavailable, Type: typeUnavailable, Message: "server is shutting down"}
	// Azure ML answers a full queue with these words.
	errQueueFull = &apiError{Status: http.StatusTooManyRequests, Type: typeRateLimit, Message: "Too many pending requests"}
	// Logged and counted only: nobody is left to read it, so it has no
	// type.
	errClientGone = &apiError{Status: statusClientGone, Message: "the client closed the connection"}
)

// submitError maps an error of engine.Submit onto the response. A
// prompt the engine refuses (too long for the context) is blamed on
// promptParam.
func submitError(err error, promptParam string) *apiError {
	var in *engine.InputError
	switch {
	case errors.As(err, &in):
		return invalid(promptParam, "%s", in.Error())
	case errors.Is(err, engine.ErrQueueFull):
		return errQueueFull
	case errors.Is(err, engine.ErrClosed):
		return errDraining
	}
	return &apiError{Status: http.StatusInternalServerError, Type: typeServer, Message: "submitting the request failed: " + err.Error()}
}

// generationError maps the error that ended a sequence (or a wait for
// it): the request's deadline is a 408 that names the setting; the queue
// wait running out is a 429 (as a full queue); a cancellation is the
// client going away (statusClientGone) when the request's context says
// so, else the engine stopping (503); anything else is a 500.
func generationError(r *http.Request, err error, timeout time.Duration) *apiError {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{Status: http.StatusRequestTimeout, Type: typeTimeout,
			Message: fmt.Sprintf("the request did not finish within the request timeout (requestTimeoutMs: %d); raise requestTimeoutMs or ask for fewer tokens", timeout.Milliseconds())}
	case errors.Is(err, engine.ErrQueueWait):
		return &apiError{Status: http.StatusTooManyRequests, Type: typeRateLimit,
			Message: "Too many pending requests: no slot was free within the queue wait (maxQueueWaitMs); retry later"}
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		return errClientGone
	case errors.Is(err, context.Canceled):
		return &apiError{Status: http.StatusServiceUnavailable, Type: typeUnavailable, Message: "the server stopped before the request finished"}
	}
	return &apiError{Status: http.StatusInternalServerError, Type: typeServer, Message: "generation failed: " + err.Error()}
}

// writeError sends e, unless the client is gone.
func writeError(w http.ResponseWriter, r *http.Request, e *apiError) {
	noteError(r, e)
	if e.Status == statusClientGone {
		return
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="leo"`)
	}
	if e.Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.Status, e.body())
}

// writeJSON sends v as the response. HTML characters are not escaped:
// generated text goes out as the model wrote it.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client may be gone; nothing to do then
}
