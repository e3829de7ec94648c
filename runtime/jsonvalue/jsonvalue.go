// Package jsonvalue reads JSON the way leo's request and batch-row
// decoders both need: objects a field at a time, with each wrong value's
// path and the keys nothing read (Object); the kind of a raw value for
// error messages, integers that may be written as whole floats (as Python
// clients send them), sampling seeds over the whole uint64 range, and a
// value shortened for quoting in an error.
package jsonvalue

import (
	"bytes"
	"math"
	"strconv"
	"strings"
)

// Kind names a raw JSON value's type for error messages: "an object",
// "an array", "a string", "a boolean", "null", "a number", or "nothing".
func Kind(raw []byte) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// WholeNumber parses raw as an integer in int64's range, also written with
// a fraction or exponent when its value is whole (100.0, 1e2). An integer
// literal outside int64's range is refused, not rounded through a float.
func WholeNumber(raw []byte) (int64, bool) {
	if Kind(raw) != "a number" {
		return 0, false
	}
	s := string(bytes.TrimSpace(raw))
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, true
	}
	if !strings.ContainsAny(s, ".eE") {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
		return 0, false
	}
	return int64(f), true
}

// Seed parses raw as a sampling seed: any integer from -2⁶³ to 2⁶⁴-1, also
// written as a whole float; a negative one stands for the uint64 of the
// same bits.
func Seed(raw []byte) (uint64, bool) {
	s := string(bytes.TrimSpace(raw))
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return u, true
	}
	if n, ok := WholeNumber(raw); ok {
		return uint64(n), true
	}
	// WholeNumber stops at 2⁶³; uint64 goes on.
	if Kind(raw) == "a number" && strings.ContainsAny(s, ".eE") {
		if f, err := strconv.ParseFloat(s, 64); err == nil && f == math.Trunc(f) && f >= 1<<63 && f < 1<<64 {
			return uint64(f), true
		}
	}
	return 0, false
}

// Clip shortens a value quoted in an error message to 40 bytes.
func Clip(raw []byte) string {
	s := string(bytes.TrimSpace(raw))
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return s
}
