package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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

// object is one JSON object of the body (jsonvalue.Object), read through
// the decoder: its readers return a default and record the first error.
type object struct {
	d *decoder
	*jsonvalue.Object
}

// fail keeps the first error.
func (d *decoder) fail(e *apiError) {
	if d.err == nil {
		d.err = e
	}
}

// check records a field's error; it reports whether there was none.
func (d *decoder) check(e *jsonvalue.FieldError) bool {
	if e == nil {
		return true
	}
	d.fail(invalid(e.Path, "%s", e.Msg))
	return false
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
	return &object{d, jsonvalue.FromMap("", m)}
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

func (d *decoder) empty(path string) *object { return &object{d, jsonvalue.FromMap(path, nil)} }

// raw returns field k, marking it read; ok false when it is absent or null,
// or once the body has an error (reads are no-ops from then on).
func (o *object) raw(k string) (json.RawMessage, bool) {
	v, ok := o.Raw(k)
	if o.d.err != nil {
		return nil, false
	}
	return v, ok
}

// has reports whether field k is given and not null, marking it read.
func (o *object) has(k string) bool {
	_, ok := o.raw(k)
	return ok
}

// done records the keys of o that no field took.
func (o *object) done() { o.d.ignored = o.Ignored(o.d.ignored) }

// typeError blames field path for holding a value of the wrong type.
func typeError(path, want string, raw []byte) *apiError {
	return invalid(path, "%s must be %s (got %s)", path, want, jsonvalue.Kind(raw))
}

// ok reports whether o's readers still read: no error yet (they mark the
// field read either way).
func (o *object) ok(k string) bool {
	if o.d.err != nil {
		o.Skip(k)
		return false
	}
	return true
}

// object returns field k as an object; nil when not given.
func (o *object) object(k string) *object {
	if !o.ok(k) {
		return nil
	}
	v, err := o.Object.Object(k)
	if !o.d.check(err) || v == nil {
		return nil
	}
	return &object{o.d, v}
}

// objectAt parses raw, the value at path, as an object.
func (d *decoder) objectAt(path string, raw json.RawMessage) *object {
	v, err := jsonvalue.NewObject(path, raw)
	if !d.check(err) {
		return nil
	}
	return &object{d, v}
}

// array returns field k as the elements of an array; ok false when not
// given.
func (o *object) array(k string) ([]json.RawMessage, bool) {
	if !o.ok(k) {
		return nil, false
	}
	elems, ok, err := o.Array(k)
	if !o.d.check(err) {
		return nil, false
	}
	return elems, ok
}

// str returns field k as a string, "" when not given.
func (o *object) str(k string) string {
	if !o.ok(k) {
		return ""
	}
	s, _, err := o.String(k)
	o.d.check(err)
	return s
}

func stringAt(path string, raw json.RawMessage) (string, *apiError) {
	s, err := jsonvalue.StringAt(path, raw)
	if err != nil {
		return "", invalid(err.Path, "%s", err.Msg)
	}
	return s, nil
}

// strings returns field k, a string or an array of strings (as "stop"
// and "prompt" may be); nil when not given or not valid.
func (o *object) strings(k string) []string {
	if !o.ok(k) {
		return nil
	}
	list, err := o.Strings(k)
	if !o.d.check(err) {
		return nil
	}
	return list
}

// boolean returns field k, false when not given.
func (o *object) boolean(k string) bool {
	if !o.ok(k) {
		return false
	}
	b, err := o.Bool(k)
	return o.d.check(err) && b != nil && *b
}

// number returns field k as a float64, 1 when not given: the default of
// every such parameter (temperature, top_p, repetition_penalty).
func (o *object) number(k string) float64 {
	if !o.ok(k) {
		return 1
	}
	f, err := o.Number(k)
	if !o.d.check(err) || f == nil {
		return 1
	}
	return *f
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
	if !o.ok(k) {
		return def
	}
	n, err := o.Int(k)
	if !o.d.check(err) || n == nil {
		return def
	}
	return *n
}

// seed returns field k as a sampling seed, nil when not given. Any
// integer from -2⁶³ to 2⁶⁴-1 is accepted, also written as a whole float
// (1.8e19); a negative one stands for the uint64 of the same bits.
func (o *object) seed(k string) *uint64 {
	if !o.ok(k) {
		return nil
	}
	u, err := o.Seed(k)
	if !o.d.check(err) {
		return nil
	}
	return u
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
