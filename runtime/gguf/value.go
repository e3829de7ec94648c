package gguf

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ValueType is the type tag of a metadata value, numbered as in the GGUF
// specification.
type ValueType uint32

// The metadata value types of GGUF v2 and v3.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

// MaxArrayDepth is how deeply arrays may nest (an array of arrays has depth
// 2). The format has no limit; the cap keeps a hostile file from driving the
// parser's recursion arbitrarily deep.
const MaxArrayDepth = 8

var typeNames = [...]string{"UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32",
	"FLOAT32", "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"}

// String returns the specification's name of the type, e.g. "UINT32".
func (t ValueType) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

func (t ValueType) known() bool { return int(t) < len(typeNames) }

// isInt reports whether t is one of the eight integer types.
func (t ValueType) isInt() bool {
	switch t {
	case TypeUint8, TypeInt8, TypeUint16, TypeInt16, TypeUint32, TypeInt32, TypeUint64, TypeInt64:
		return true
	}
	return false
}

func (t ValueType) signed() bool {
	return t == TypeInt8 || t == TypeInt16 || t == TypeInt32 || t == TypeInt64
}

// size is the encoded size of a fixed-size scalar, or the least bytes one
// value of the type can take (8 for a string's length, 12 for an array's
// element type and count). Parsing uses it to bound counts before
// allocating.
func (t ValueType) size() uint64 {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64, TypeString:
		return 8
	case TypeArray:
		return 12
	}
	return 0
}

// Value is one metadata value: a scalar, a string or an array. The zero
// Value is the UINT8 0. Build values with ValueOf (or the Writer's Set
// methods) and read them with Interface or the File's typed getters.
type Value struct {
	typ ValueType
	// bits holds a scalar exactly as stored: integers sign-extended to 64
	// bits, FLOAT32 and FLOAT64 as their IEEE bits (so NaN payloads survive a
	// round trip), BOOL as 0 or 1.
	bits uint64
	str  string
	elem ValueType // element type of an array
	// arr is an array's items as a typed slice ([]uint8 … []float64,
	// []bool, []string), or []Value for an array of arrays.
	arr any
}

// Type returns the value's type.
func (v Value) Type() ValueType { return v.typ }

// ElemType returns the element type of an array (meaningless otherwise).
func (v Value) ElemType() ValueType { return v.elem }

// Len returns the number of items of an array, and 0 for any other value.
func (v Value) Len() int {
	switch a := v.arr.(type) {
	case nil:
		return 0
	case []uint8:
		return len(a)
	case []int8:
		return len(a)
	case []uint16:
		return len(a)
	case []int16:
		return len(a)
	case []uint32:
		return len(a)
	case []int32:
		return len(a)
	case []float32:
		return len(a)
	case []bool:
		return len(a)
	case []string:
		return len(a)
	case []uint64:
		return len(a)
	case []int64:
		return len(a)
	case []float64:
		return len(a)
	case []Value:
		return len(a)
	}
	return 0
}

// Interface returns the value as the Go type matching its GGUF type: uint8,
// int8, uint16, int16, uint32, int32, float32, bool, string, uint64, int64
// or float64; an array as a slice of those; an array of arrays as []Value.
// A returned slice is shared with the Value: do not modify it.
func (v Value) Interface() any {
	switch v.typ {
	case TypeUint8:
		return uint8(v.bits)
	case TypeInt8:
		return int8(v.bits)
	case TypeUint16:
		return uint16(v.bits)
	case TypeInt16:
		return int16(v.bits)
	case TypeUint32:
		return uint32(v.bits)
	case TypeInt32:
		return int32(v.bits)
	case TypeFloat32:
		return math.Float32frombits(uint32(v.bits))
	case TypeBool:
		return v.bits != 0
	case TypeString:
		return v.str
	case TypeArray:
		return v.arr
	case TypeUint64:
		return v.bits
	case TypeInt64:
		return int64(v.bits)
	case TypeFloat64:
		return math.Float64frombits(v.bits)
	}
	return nil
}

// ValueOf converts a Go value to a metadata value. It accepts the Go types
// Interface returns: the twelve scalar types, slices of them, and []Value.
// A []Value whose items are all arrays becomes an array of arrays; one whose
// items are all scalars of one type becomes an array of that type; an empty
// []Value is an empty array of arrays.
func ValueOf(x any) (Value, error) {
	switch x := x.(type) {
	case uint8:
		return Value{typ: TypeUint8, bits: uint64(x)}, nil
	case int8:
		return Value{typ: TypeInt8, bits: uint64(int64(x))}, nil
	case uint16:
		return Value{typ: TypeUint16, bits: uint64(x)}, nil
	case int16:
		return Value{typ: TypeInt16, bits: uint64(int64(x))}, nil
	case uint32:
		return Value{typ: TypeUint32, bits: uint64(x)}, nil
	case int32:
		return Value{typ: TypeInt32, bits: uint64(int64(x))}, nil
	case float32:
		return Value{typ: TypeFloat32, bits: uint64(math.Float32bits(x))}, nil
	case bool:
		return boolValue(x), nil
	case string:
		return Value{typ: TypeString, str: x}, nil
	case uint64:
		return Value{typ: TypeUint64, bits: x}, nil
	case int64:
		return Value{typ: TypeInt64, bits: uint64(x)}, nil
	case float64:
		return Value{typ: TypeFloat64, bits: math.Float64bits(x)}, nil
	case []uint8:
		return arrayValue(TypeUint8, clone(x)), nil
	case []int8:
		return arrayValue(TypeInt8, clone(x)), nil
	case []uint16:
		return arrayValue(TypeUint16, clone(x)), nil
	case []int16:
		return arrayValue(TypeInt16, clone(x)), nil
	case []uint32:
		return arrayValue(TypeUint32, clone(x)), nil
	case []int32:
		return arrayValue(TypeInt32, clone(x)), nil
	case []float32:
		return arrayValue(TypeFloat32, clone(x)), nil
	case []bool:
		return arrayValue(TypeBool, clone(x)), nil
	case []string:
		return arrayValue(TypeString, clone(x)), nil
	case []uint64:
		return arrayValue(TypeUint64, clone(x)), nil
	case []int64:
		return arrayValue(TypeInt64, clone(x)), nil
	case []float64:
		return arrayValue(TypeFloat64, clone(x)), nil
	case []Value:
		return valuesArray(x)
	}
	return Value{}, fmt.Errorf("gguf: cannot store a %T as a metadata value", x)
}

// clone copies s; the copy of an empty slice is empty, not nil, as parsed
// arrays are.
func clone[T any](s []T) []T { return append(make([]T, 0, len(s)), s...) }

func boolValue(b bool) Value {
	v := Value{typ: TypeBool}
	if b {
		v.bits = 1
	}
	return v
}

func arrayValue(elem ValueType, items any) Value {
	return Value{typ: TypeArray, elem: elem, arr: items}
}

// valuesArray builds an array from Values: an array of arrays, or a typed
// array when every item is a scalar of one type.
func valuesArray(items []Value) (Value, error) {
	if len(items) == 0 || items[0].typ == TypeArray {
		depth := 0
		for i, it := range items {
			if it.typ != TypeArray {
				return Value{}, fmt.Errorf("gguf: array item %d is %s but item 0 is an ARRAY; items of one array share a type", i, it.typ)
			}
			depth = max(depth, it.depth())
		}
		if depth+1 > MaxArrayDepth {
			return Value{}, fmt.Errorf("gguf: arrays nest %d deep; at most %d can be read back", depth+1, MaxArrayDepth)
		}
		return arrayValue(TypeArray, clone(items)), nil
	}
	t := items[0].typ
	for i, it := range items {
		if it.typ != t {
			return Value{}, fmt.Errorf("gguf: array item %d is %s but item 0 is %s; items of one array share a type", i, it.typ, t)
		}
	}
	return arrayValue(t, typedItems(t, len(items), func(i int) Value { return items[i] })), nil
}

// typedItems builds the typed slice for n scalars of type t given by at.
func typedItems(t ValueType, n int, at func(int) Value) any {
	switch t {
	case TypeUint8:
		return fill(n, func(i int) uint8 { return uint8(at(i).bits) })
	case TypeInt8:
		return fill(n, func(i int) int8 { return int8(at(i).bits) })
	case TypeUint16:
		return fill(n, func(i int) uint16 { return uint16(at(i).bits) })
	case TypeInt16:
		return fill(n, func(i int) int16 { return int16(at(i).bits) })
	case TypeUint32:
		return fill(n, func(i int) uint32 { return uint32(at(i).bits) })
	case TypeInt32:
		return fill(n, func(i int) int32 { return int32(at(i).bits) })
	case TypeFloat32:
		return fill(n, func(i int) float32 { return math.Float32frombits(uint32(at(i).bits)) })
	case TypeBool:
		return fill(n, func(i int) bool { return at(i).bits != 0 })
	case TypeString:
		return fill(n, func(i int) string { return at(i).str })
	case TypeUint64:
		return fill(n, func(i int) uint64 { return at(i).bits })
	case TypeInt64:
		return fill(n, func(i int) int64 { return int64(at(i).bits) })
	case TypeFloat64:
		return fill(n, func(i int) float64 { return math.Float64frombits(at(i).bits) })
	}
	panic("gguf: typedItems of " + t.String())
}

func fill[T any](n int, f func(int) T) []T {
	s := make([]T, n)
	for i := range s {
		s[i] = f(i)
	}
	return s
}

// depth is how deeply v's arrays nest: 0 for a scalar, 1 for a flat array.
func (v Value) depth() int {
	if v.typ != TypeArray {
		return 0
	}
	d := 0
	if items, ok := v.arr.([]Value); ok {
		for _, it := range items {
			d = max(d, it.depth())
		}
	}
	return d + 1
}

// item returns array item i as a Value.
func (v Value) item(i int) Value {
	switch a := v.arr.(type) {
	case []Value:
		return a[i]
	case []string:
		return Value{typ: TypeString, str: a[i]}
	case []bool:
		return boolValue(a[i])
	}
	var x any
	switch a := v.arr.(type) {
	case []uint8:
		x = a[i]
	case []int8:
		x = a[i]
	case []uint16:
		x = a[i]
	case []int16:
		x = a[i]
	case []uint32:
		x = a[i]
	case []int32:
		x = a[i]
	case []float32:
		x = a[i]
	case []uint64:
		x = a[i]
	case []int64:
		x = a[i]
	case []float64:
		x = a[i]
	}
	s, _ := ValueOf(x) // x is one of the scalar types ValueOf accepts
	return s
}

// typeName describes v's type for error messages, e.g. "ARRAY of STRING".
func (v Value) typeName() string {
	if v.typ == TypeArray {
		return "ARRAY of " + v.elem.String()
	}
	return v.typ.String()
}

// arrayPreview is how many items String shows of an array.
const arrayPreview = 8

// String formats the value for people: numbers as Go prints them, strings
// quoted, arrays as [a, b, …] with at most the first 8 items and a count
// of the rest.
func (v Value) String() string {
	var b strings.Builder
	v.format(&b)
	return b.String()
}

func (v Value) format(b *strings.Builder) {
	switch v.typ {
	case TypeString:
		b.WriteString(strconv.Quote(v.str))
	case TypeFloat32:
		b.WriteString(strconv.FormatFloat(float64(math.Float32frombits(uint32(v.bits))), 'g', -1, 32))
	case TypeFloat64:
		b.WriteString(strconv.FormatFloat(math.Float64frombits(v.bits), 'g', -1, 64))
	case TypeArray:
		n := v.Len()
		b.WriteByte('[')
		for i := 0; i < min(n, arrayPreview); i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			v.item(i).format(b)
		}
		if n > arrayPreview {
			fmt.Fprintf(b, ", … %d more", n-arrayPreview)
		}
		b.WriteByte(']')
	default:
		fmt.Fprint(b, v.Interface())
	}
}
