package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/leo-operator/leo/runtime/jsonvalue"
)

// The request decoders walk a body one JSON object at a time, as a
// map[string]json.RawMessage per level, instead of unmarshalling into
// structs: that way a wrong type is reported with the exact path of the
// field ("input_data.parameters.temperature"), and every key that no
// field takes is known, so it can be named in X-Leo-Ignored-Fields
// rather than silently dropped. They are pure functions of the body, so
// the fuzz tests run them without a model.

// decoder holds what one body's walk found: the first error (later
// reads are no-ops once there is one, so decoders read straight through
// and check once) and the paths of the keys nothing took.
type decoder struct {
	err     *apiError
	ignored []string
}

// object is one JSON object of the body.
type object struct {
	d    *decoder
	path string // "" for the body itself
	m    map[string]json.RawMessage
	used map[string]bool
}

// fail keeps the first error.
func (d *decoder) fail(e *apiError) {
	if d.err == nil {
		d.err = e
	}
}

// body parses data as the request's top-level JSON object.
func (d *decoder) body(data []byte) *object {
	if len(bytes.TrimSpace(data)) == 0 {
		d.fail(invalid("", "the request body is empty; send a JSON object"))
		return d.empty("")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			// Offset counts the bytes read, the bad one included.
			at := max(syn.Offset-1, 0)
			line, col := lineCol(data, at)
			d.fail(invalid("", "the request body is not valid JSON: %s (line %d, column %d, byte offset %d)", syn.Error(), line, col, at))
		} else {
			d.fail(invalid("", "the request body must be a JSON object (got %s)", jsonvalue.Kind(data)))
		}
		return d.empty("")
	}
	if m == nil { // the body is null
		d.fail(invalid("", "the request body must be a JSON object (got null)"))
		return d.empty("")
	}
	return &object{d: d, m: m, used: map[string]bool{}}
}

// lineCol turns a 0-based byte offset into 1-based line and column
// numbers (columns count bytes).
func lineCol(data []byte, off int64) (line, col int) {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(off) - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return line, col
}

func (d *decoder) empty(path string) *object {
	return &object{d: d, path: path, m: map[string]json.RawMessage{}, used: map[string]bool{}}
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// key is the path of a field of o.
func (o *object) key(k string) string {
	if o.path == "" {
		return k
	}
	return o.path + "." + k
}

// raw returns field k, marking it used; absent and null are both "not
// given" (ok false): JSON null means the default everywhere.
func (o *object) raw(k string) (json.RawMessage, bool) {
	v, ok := o.m[k]
	if !ok {
		return nil, false
	}
	o.used[k] = true
	if isNull(v) || o.d.err != nil {
		return nil, false
	}
	return v, true
}

// has reports whether field k is given and not null, marking it used.
func (o *object) has(k string) bool {
	_, ok := o.raw(k)
	return ok
}

// skip marks k as known but unused (OpenAI's "user", say): it is not
// reported as ignored.
func (o *object) skip(k string) { o.used[k] = true }

// done records the keys of o that no field took.
func (o *object) done() {
	for k := range o.m {
		if !o.used[k] {
			o.d.ignored = append(o.d.ignored, o.key(k))
		}
	}
}

// typeError blames field path for holding a value of the wrong type.
func typeError(path, want string, raw []byte) *apiError {
	return invalid(path, "%s must be %s (got %s)", path, want, jsonvalue.Kind(raw))
}

// object returns field k as an object; nil when not given.
func (o *object) object(k string) *object {
	v, ok := o.raw(k)
	if !ok {
		return nil
	}
	return o.d.objectAt(o.key(k), v)
}

// objectAt parses raw, the value at path, as an object.
func (d *decoder) objectAt(path string, raw json.RawMessage) *object {
	if bytes.TrimSpace(raw)[0] != '{' {
		d.fail(typeError(path, "an object", raw))
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil { // cannot happen: the body parsed
		d.fail(invalid(path, "%s: %v", path, err))
		return nil
	}
	return &object{d: d, path: path, m: m, used: map[string]bool{}}
}

// array returns field k as the elements of an array; ok false when not
// given.
func (o *object) array(k string) (elems []json.RawMessage, ok bool) {
	v, ok := o.raw(k)
	if !ok {
		return nil, false
	}
	if bytes.TrimSpace(v)[0] != '[' {
		o.d.fail(typeError(o.key(k), "an array", v))
		return nil, false
	}
	if err := json.Unmarshal(v, &elems); err != nil { // cannot happen: the body parsed
		o.d.fail(invalid(o.key(k), "%s: %v", o.key(k), err))
		return nil, false
	}
	return elems, true
}

// str returns field k as a string, "" when not given.
func (o *object) str(k string) string {
	v, ok := o.raw(k)
	if !ok {
		return ""
	}
	s, err := stringAt(o.key(k), v)
	if err != nil {
		o.d.fail(err)
		return ""
	}
	return s
}

func stringAt(path string, raw json.RawMessage) (string, *apiError) {
	var s string
	if bytes.TrimSpace(raw)[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", typeError(path, "a string", raw)
	}
	return s, nil
}

// strings returns field k, a string or an array of strings (as "stop"
// and "prompt" may be); nil when not given or not valid.
func (o *object) strings(k string) []string {
	v, ok := o.raw(k)
	if !ok {
		return nil
	}
	path := o.key(k)
	switch bytes.TrimSpace(v)[0] {
	case '"':
		s, err := stringAt(path, v)
		if err != nil {
			o.d.fail(err)
			return nil
		}
		return []string{s}
	case '[':
		elems, _ := o.array(k)
		list := make([]string, 0, len(elems))
		for i, e := range elems {
			s, err := stringAt(fmt.Sprintf("%s[%d]", path, i), e)
			if err != nil {
				o.d.fail(err)
				return nil
			}
			list = append(list, s)
		}
		return list
	}
	o.d.fail(typeError(path, "a string or an array of strings", v))
	return nil
}

// boolean returns field k, false when not given.
func (o *object) boolean(k string) bool {
	v, ok := o.raw(k)
	if !ok {
		return false
	}
	switch string(bytes.TrimSpace(v)) {
	case "true":
		return true
	case "false":
		return false
	}
	o.d.fail(typeError(o.key(k), "true or false", v))
	return false
}

// number returns field k as a float64, 1 when not given: the default of
// every such parameter (temperature, top_p, repetition_penalty).
func (o *object) number(k string) float64 {
	v, ok := o.raw(k)
	if !ok {
		return 1
	}
	path := o.key(k)
	if jsonvalue.Kind(v) != "a number" {
		o.d.fail(typeError(path, "a number", v))
		return 1
	}
	f, ok := parseNumber(v)
	if !ok { // the syntax is JSON's; only the range can be wrong
		o.d.fail(invalid(path, "%s is out of range (got %s)", path, jsonvalue.Clip(v)))
		return 1
	}
	return f
}

// parseNumber parses raw as a float64; ok false when it is not a number
// or out of float64's range.
func parseNumber(raw []byte) (float64, bool) {
	if jsonvalue.Kind(raw) != "a number" {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(bytes.TrimSpace(raw)), 64)
	return f, err == nil
}

// integer returns field k as an int, def when not given. A number with a
// fraction or exponent is accepted when its value is whole (100.0, 1e2),
// as Python's clients may send.
func (o *object) integer(k string, def int) int {
	v, ok := o.raw(k)
	if !ok {
		return def
	}
	path := o.key(k)
	n, ok := jsonvalue.WholeNumber(v)
	if !ok {
		o.d.fail(typeError(path, "an integer", v))
		return def
	}
	if n < math.MinInt || n > math.MaxInt {
		o.d.fail(invalid(path, "%s is out of range (got %s)", path, jsonvalue.Clip(v)))
		return def
	}
	return int(n)
}

// seed returns field k as a sampling seed, nil when not given. Any
// integer from -2⁶³ to 2⁶⁴-1 is accepted, also written as a whole float
// (1.8e19); a negative one stands for the uint64 of the same bits.
func (o *object) seed(k string) *uint64 {
	v, ok := o.raw(k)
	if !ok {
		return nil
	}
	if u, ok := jsonvalue.Seed(v); ok {
		return &u
	}
	o.d.fail(invalid(o.key(k), "%s must be an integer in [-2^63, 2^64-1] (got %s)", o.key(k), jsonvalue.Clip(v)))
	return nil
}

// Limits on the X-Leo-Ignored-Fields header, which repeats keys the
// client chose: a body may hold many thousands of them.
const (
	maxIgnoredListed = 32
	maxIgnoredKey    = 64
)

// ignoredHeader formats the ignored paths for X-Leo-Ignored-Fields:
// sorted, comma-separated, each quoted (Go syntax, ASCII) when it holds
// anything but letters, digits, '_', '-', '.', '[' and ']', at most
// maxIgnoredListed of them with a count of the rest.
func ignoredHeader(paths []string) string {
	paths = slices.Clone(paths)
	slices.Sort(paths)
	var b strings.Builder
	for i, p := range paths {
		if i == maxIgnoredListed {
			fmt.Fprintf(&b, ", (%d more)", len(paths)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		if len(p) > maxIgnoredKey {
			p = p[:maxIgnoredKey] + "..."
		}
		if plainPath(p) {
			b.WriteString(p)
		} else {
			b.WriteString(strconv.QuoteToASCII(p))
		}
	}
	return b.String()
}

func plainPath(p string) bool {
	for _, c := range []byte(p) {
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '_' || c == '-' || c == '.' || c == '[' || c == ']'
		if !ok {
			return false
		}
	}
	return p != ""
}
