package jsonvalue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// Object is one JSON object read a field at a time, the way leo's request
// and batch-row decoders read theirs instead of unmarshalling into
// structs: a wrong type is reported with the exact path of the field
// ("input_data.parameters.temperature"), and the keys that nothing read
// are known, so that they can be named rather than silently dropped.
// Absent and null fields are both "not given": JSON null means the default.
type Object struct {
	path string // "" for a document's top-level object
	m    map[string]json.RawMessage
	used map[string]bool
}

// FieldError is a field whose value has the wrong type or is out of range:
// Path names the field, Msg says what is wrong (with the path in it).
type FieldError struct{ Path, Msg string }

func (e *FieldError) Error() string { return e.Msg }

func errorf(path, format string, args ...any) *FieldError {
	return &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// typeError blames the field at path for holding a value of the wrong type.
func typeError(path, want string, raw []byte) *FieldError {
	return errorf(path, "%s must be %s (got %s)", path, want, Kind(raw))
}

// FromMap is the object m, already parsed, at path: a document's top-level
// object, whose syntax errors each decoder words in its own terms.
func FromMap(path string, m map[string]json.RawMessage) *Object {
	if m == nil {
		m = map[string]json.RawMessage{}
	}
	return &Object{path: path, m: m, used: map[string]bool{}}
}

// NewObject parses raw, the value at path, as an object.
func NewObject(path string, raw json.RawMessage) (*Object, *FieldError) {
	if Kind(raw) != "an object" {
		return nil, typeError(path, "an object", raw)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil { // cannot happen once the document parsed
		return nil, errorf(path, "%s: %v", path, err)
	}
	return FromMap(path, m), nil
}

// Key is the path of o's field k.
func (o *Object) Key(k string) string {
	if o.path == "" {
		return k
	}
	return o.path + "." + k
}

// Present reports whether o holds key k at all, null included, without
// marking it read.
func (o *Object) Present(k string) bool {
	_, ok := o.m[k]
	return ok
}

// Raw returns field k, marking it read; ok is false when it is absent or
// null.
func (o *Object) Raw(k string) (json.RawMessage, bool) {
	v, ok := o.m[k]
	if !ok {
		return nil, false
	}
	o.used[k] = true
	if Kind(v) == "null" {
		return nil, false
	}
	return v, true
}

// Skip marks keys as known but unused (OpenAI's "user", say), so that they
// are not reported as ignored.
func (o *Object) Skip(keys ...string) {
	for _, k := range keys {
		o.used[k] = true
	}
}

// Ignored appends the paths of o's keys that nothing read.
func (o *Object) Ignored(dst []string) []string {
	for k := range o.m {
		if !o.used[k] {
			dst = append(dst, o.Key(k))
		}
	}
	return dst
}

// Object returns field k as an object; nil when not given.
func (o *Object) Object(k string) (*Object, *FieldError) {
	v, ok := o.Raw(k)
	if !ok {
		return nil, nil
	}
	return NewObject(o.Key(k), v)
}

// Array returns field k's elements; ok is false when it is not given.
func (o *Object) Array(k string) (elems []json.RawMessage, ok bool, err *FieldError) {
	v, ok := o.Raw(k)
	if !ok {
		return nil, false, nil
	}
	if Kind(v) != "an array" {
		return nil, false, typeError(o.Key(k), "an array", v)
	}
	if err := json.Unmarshal(v, &elems); err != nil { // cannot happen once the document parsed
		return nil, false, errorf(o.Key(k), "%s: %v", o.Key(k), err)
	}
	return elems, true, nil
}

// StringAt parses raw, the value at path, as a string.
func StringAt(path string, raw json.RawMessage) (string, *FieldError) {
	var s string
	if Kind(raw) != "a string" || json.Unmarshal(raw, &s) != nil {
		return "", typeError(path, "a string", raw)
	}
	return s, nil
}

// String returns field k as a string; ok is false when it is not given.
func (o *Object) String(k string) (s string, ok bool, err *FieldError) {
	v, ok := o.Raw(k)
	if !ok {
		return "", false, nil
	}
	if s, err = StringAt(o.Key(k), v); err != nil {
		return "", false, err
	}
	return s, true, nil
}

// Strings returns field k, a string or an array of strings (as "stop" and
// "prompt" may be); nil when not given (or an empty array).
func (o *Object) Strings(k string) ([]string, *FieldError) {
	v, ok := o.Raw(k)
	if !ok {
		return nil, nil
	}
	path := o.Key(k)
	switch Kind(v) {
	case "a string":
		s, err := StringAt(path, v)
		if err != nil {
			return nil, err
		}
		return []string{s}, nil
	case "an array":
		var elems []json.RawMessage
		if err := json.Unmarshal(v, &elems); err != nil { // cannot happen once the document parsed
			return nil, errorf(path, "%s: %v", path, err)
		}
		var list []string
		for i, e := range elems {
			s, err := StringAt(fmt.Sprintf("%s[%d]", path, i), e)
			if err != nil {
				return nil, err
			}
			list = append(list, s)
		}
		return list, nil
	}
	return nil, typeError(path, "a string or an array of strings", v)
}

// Bool returns field k; nil when not given.
func (o *Object) Bool(k string) (*bool, *FieldError) {
	v, ok := o.Raw(k)
	if !ok {
		return nil, nil
	}
	var b bool
	switch string(bytes.TrimSpace(v)) {
	case "true":
		b = true
	case "false":
	default:
		return nil, typeError(o.Key(k), "true or false", v)
	}
	return &b, nil
}

// Number returns field k as a float64; nil when not given.
func (o *Object) Number(k string) (*float64, *FieldError) {
	v, ok := o.Raw(k)
	if !ok {
		return nil, nil
	}
	path := o.Key(k)
	if Kind(v) != "a number" {
		return nil, typeError(path, "a number", v)
	}
	f, err := strconv.ParseFloat(string(bytes.TrimSpace(v)), 64)
	if err != nil { // the syntax is JSON's; only the range can be wrong
		return nil, errorf(path, "%s is out of range (got %s)", path, Clip(v))
	}
	return &f, nil
}

// Int returns field k as an int; nil when not given. A number with a
// fraction or exponent is accepted when its value is whole (100.0, 1e2),
// as Python's clients may send.
func (o *Object) Int(k string) (*int, *FieldError) {
	v, ok := o.Raw(k)
	if !ok {
		return nil, nil
	}
	path := o.Key(k)
	if Kind(v) != "a number" {
		return nil, typeError(path, "an integer", v)
	}
	n, ok := WholeNumber(v)
	if !ok || n < math.MinInt || n > math.MaxInt {
		if f, err := strconv.ParseFloat(string(bytes.TrimSpace(v)), 64); err == nil && f != math.Trunc(f) {
			return nil, errorf(path, "%s must be an integer (got %s)", path, Clip(v))
		}
		return nil, errorf(path, "%s is out of range (got %s)", path, Clip(v))
	}
	i := int(n)
	return &i, nil
}

// Seed returns field k as a sampling seed (see the function Seed); nil
// when not given.
func (o *Object) Seed(k string) (*uint64, *FieldError) {
	v, ok := o.Raw(k)
	if !ok {
		return nil, nil
	}
	if u, ok := Seed(v); ok {
		return &u, nil
	}
	path := o.Key(k)
	if Kind(v) != "a number" {
		return nil, typeError(path, "an integer", v)
	}
	return nil, errorf(path, "%s must be an integer in [-2^63, 2^64-1] (got %s)", path, Clip(v))
}
