package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
)

// statusClientGone is what metrics record for a request whose client went
// away before the answer (nginx's convention).
const statusClientGone = 499

// keyMatches compares the digests of the guess and of every key, without
// stopping at a match, so that the time taken tells nothing of the keys.
func keyMatches(guess string, keys []keyEntry) bool {
	g := sha256.Sum256([]byte(guess))
	match := 0
	for _, k := range keys {
		d := sha256.Sum256([]byte(k.value))
		match |= subtle.ConstantTimeCompare(g[:], d[:])
	}
	return match == 1
}

// errorBody is the gateway's error answer, in the shape leo-runtime and
// OpenAI use: {"error":{"message":..,"type":..,"code":..}}.
type errorBody struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	var b errorBody
	b.Error.Message, b.Error.Code, b.Error.Type = message, code, errorType(status)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(b) // the client may be gone
}

// errorType is the OpenAI-style type of a status.
func errorType(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusTooManyRequests:
		return "rate_limit_exceeded"
	case http.StatusRequestTimeout:
		return "timeout"
	case http.StatusServiceUnavailable:
		return "unavailable"
	case http.StatusNotFound, http.StatusRequestEntityTooLarge:
		return "invalid_request_error"
	}
	return "server_error"
}

func writeText(w http.ResponseWriter, status int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(text + "\n"))
}

// recorder remembers the status written, and flushes through.
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
