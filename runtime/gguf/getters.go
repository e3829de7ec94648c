package gguf

import (
	"fmt"
	"math"
)

// The typed getters return an error that names the key and, when the key
// holds another type, that type: a model loader can pass it on as is.

// get returns the value of key, or an error saying it is missing.
func (f *File) get(key string) (Value, error) {
	v, ok := f.Lookup(key)
	if !ok {
		return Value{}, fmt.Errorf("gguf: metadata key %q not found", key)
	}
	return v, nil
}

// getAs wraps conv's error with the key.
func getAs[T any](f *File, key string, conv func(Value) (T, error)) (T, error) {
	v, err := f.get(key)
	if err != nil {
		var zero T
		return zero, err
	}
	x, err := conv(v)
	if err != nil {
		return x, fmt.Errorf("gguf: metadata key %q: %w", key, err)
	}
	return x, nil
}

// Uint returns the value of an integer key of any of the eight integer
// types; a negative value is an error.
func (f *File) Uint(key string) (uint64, error) { return getAs(f, key, Value.uint) }

// Float returns the value of a FLOAT32 or FLOAT64 key.
func (f *File) Float(key string) (float64, error) { return getAs(f, key, Value.float) }

// String returns the value of a STRING key.
func (f *File) String(key string) (string, error) {
	return getAs(f, key, func(v Value) (string, error) {
		if v.typ != TypeString {
			return "", wrongType(v, "a STRING")
		}
		return v.str, nil
	})
}

// Bool returns the value of a BOOL key.
func (f *File) Bool(key string) (bool, error) {
	return getAs(f, key, func(v Value) (bool, error) {
		if v.typ != TypeBool {
			return false, wrongType(v, "a BOOL")
		}
		return v.bits != 0, nil
	})
}

// Strings returns the value of an ARRAY of STRING key. The slice is shared
// with the File: do not modify it.
func (f *File) Strings(key string) ([]string, error) {
	return getAs(f, key, func(v Value) ([]string, error) {
		if s, ok := v.arr.([]string); ok {
			return s, nil
		}
		return nil, wrongType(v, "an ARRAY of STRING")
	})
}

// Float32s returns the value of an ARRAY of FLOAT32 key. The slice is
// shared with the File: do not modify it.
func (f *File) Float32s(key string) ([]float32, error) {
	return getAs(f, key, func(v Value) ([]float32, error) {
		if s, ok := v.arr.([]float32); ok {
			return s, nil
		}
		return nil, wrongType(v, "an ARRAY of FLOAT32")
	})
}

// Int32s returns the value of an array of any integer type as int32s; an
// item outside the int32 range is an error naming its index.
func (f *File) Int32s(key string) ([]int32, error) {
	return getAs(f, key, func(v Value) ([]int32, error) {
		if s, ok := v.arr.([]int32); ok {
			return append([]int32(nil), s...), nil
		}
		if v.typ != TypeArray || !v.elem.isInt() {
			return nil, wrongType(v, "an ARRAY of integers")
		}
		out := make([]int32, v.Len())
		for i := range out {
			it := v.item(i)
			n := int64(it.bits)
			if (!it.typ.signed() && it.bits > math.MaxInt32) || n < math.MinInt32 || n > math.MaxInt32 {
				return nil, fmt.Errorf("item %d is %v, outside the int32 range", i, it)
			}
			out[i] = int32(n)
		}
		return out, nil
	})
}

// uint returns an integer value of any integer type as a uint64.
func (v Value) uint() (uint64, error) {
	if !v.typ.isInt() {
		return 0, wrongType(v, "an integer")
	}
	if v.typ.signed() && int64(v.bits) < 0 {
		return 0, fmt.Errorf("is %d, want a non-negative integer", int64(v.bits))
	}
	return v.bits, nil
}

// float returns a FLOAT32 or FLOAT64 value as a float64.
func (v Value) float() (float64, error) {
	switch v.typ {
	case TypeFloat32:
		return float64(math.Float32frombits(uint32(v.bits))), nil
	case TypeFloat64:
		return math.Float64frombits(v.bits), nil
	}
	return 0, wrongType(v, "a FLOAT32 or FLOAT64")
}

func wrongType(v Value, want string) error {
	return fmt.Errorf("is %s, want %s", v.typeName(), want)
}
