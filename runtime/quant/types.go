// Package quant knows GGML's tensor element types: their ids as stored in
// GGUF files, their block layouts, and how to convert blocks to and from
// float32 bit for bit as GGML does.
package quant

import "fmt"

// Type is a GGML tensor element type, numbered as in ggml.h (and so as in
// GGUF files). Ids that ggml retired (4, 5, 31–33, 36–38) are not types.
type Type uint32

// The GGML types. leo computes with F32, F16, BF16, Q8_0, Q4_0, Q4_K and
// Q6_K (and Q8_K for activations); the others are known so that a file
// holding them can be read, listed and refused with a clear message.
const (
	F32     Type = 0
	F16     Type = 1
	Q4_0    Type = 2
	Q4_1    Type = 3
	Q5_0    Type = 6
	Q5_1    Type = 7
	Q8_0    Type = 8
	Q8_1    Type = 9
	Q2_K    Type = 10
	Q3_K    Type = 11
	Q4_K    Type = 12
	Q5_K    Type = 13
	Q6_K    Type = 14
	Q8_K    Type = 15
	IQ2_XXS Type = 16
	IQ2_XS  Type = 17
	IQ3_XXS Type = 18
	IQ1_S   Type = 19
	IQ4_NL  Type = 20
	IQ3_S   Type = 21
	IQ2_S   Type = 22
	IQ4_XS  Type = 23
	I8      Type = 24
	I16     Type = 25
	I32     Type = 26
	I64     Type = 27
	F64     Type = 28
	IQ1_M   Type = 29
	BF16    Type = 30
	TQ1_0   Type = 34
	TQ2_0   Type = 35
	MXFP4   Type = 39
)

// QK_K is the number of elements in a k-quant super-block.
const QK_K = 256

type layout struct {
	name       string
	blockElems int // elements per block
	blockBytes int // bytes per block
}

// layouts holds every known type's block layout, from ggml.c's type_traits.
var layouts = map[Type]layout{
	F32:     {"F32", 1, 4},
	F16:     {"F16", 1, 2},
	Q4_0:    {"Q4_0", 32, 18},
	Q4_1:    {"Q4_1", 32, 20},
	Q5_0:    {"Q5_0", 32, 22},
	Q5_1:    {"Q5_1", 32, 24},
	Q8_0:    {"Q8_0", 32, 34},
	Q8_1:    {"Q8_1", 32, 36},
	Q2_K:    {"Q2_K", QK_K, 84},
	Q3_K:    {"Q3_K", QK_K, 110},
	Q4_K:    {"Q4_K", QK_K, 144},
	Q5_K:    {"Q5_K", QK_K, 176},
	Q6_K:    {"Q6_K", QK_K, 210},
	Q8_K:    {"Q8_K", QK_K, 292},
	IQ2_XXS: {"IQ2_XXS", QK_K, 66},
	IQ2_XS:  {"IQ2_XS", QK_K, 74},
	IQ3_XXS: {"IQ3_XXS", QK_K, 98},
	IQ1_S:   {"IQ1_S", QK_K, 50},
	IQ4_NL:  {"IQ4_NL", 32, 18},
	IQ3_S:   {"IQ3_S", QK_K, 110},
	IQ2_S:   {"IQ2_S", QK_K, 82},
	IQ4_XS:  {"IQ4_XS", QK_K, 136},
	I8:      {"I8", 1, 1},
	I16:     {"I16", 1, 2},
	I32:     {"I32", 1, 4},
	I64:     {"I64", 1, 8},
	F64:     {"F64", 1, 8},
	IQ1_M:   {"IQ1_M", QK_K, 56},
	BF16:    {"BF16", 1, 2},
	TQ1_0:   {"TQ1_0", QK_K, 54},
	TQ2_0:   {"TQ2_0", QK_K, 66},
	MXFP4:   {"MXFP4", 32, 17},
}

// Known reports whether t is a GGML type this package knows the layout of.
func (t Type) Known() bool { _, ok := layouts[t]; return ok }

// String returns GGML's name for the type, e.g. "Q4_0", or "type(N)".
func (t Type) String() string {
	if l, ok := layouts[t]; ok {
		return l.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// BlockElems is the number of elements one block holds (1 for plain types).
// It is 0 for an unknown type.
func (t Type) BlockElems() int { return layouts[t].blockElems }

// BlockBytes is the size of one block in bytes; 0 for an unknown type.
func (t Type) BlockBytes() int { return layouts[t].blockBytes }

// RowBytes returns the bytes n elements take, or an error when t is unknown
// or n is not a whole number of blocks.
func (t Type) RowBytes(n int) (int, error) {
	l, ok := layouts[t]
	if !ok {
		return 0, fmt.Errorf("unknown GGML type %d", uint32(t))
	}
	if n < 0 || n%l.blockElems != 0 {
		return 0, fmt.Errorf("%s stores elements in blocks of %d; %d elements is not a whole number of blocks", l.name, l.blockElems, n)
	}
	return n / l.blockElems * l.blockBytes, nil
}

// ParseType returns the type with GGML's name s (case-insensitive), e.g.
// "q4_0" or "F16".
func ParseType(s string) (Type, error) {
	for t, l := range layouts {
		if equalFold(l.name, s) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown tensor type %q", s)
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
