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
//
// The names are ggml.h's less the underscores that Go style leaves out
// (Q4K is GGML_TYPE_Q4_K, IQ2XXS is GGML_TYPE_IQ2_XXS); one between
// digits stays (Q4_0). String returns GGML's name.
const (
	F32    Type = 0
	F16    Type = 1
	Q4_0   Type = 2
	Q4_1   Type = 3
	Q5_0   Type = 6
	Q5_1   Type = 7
	Q8_0   Type = 8
	Q8_1   Type = 9
	Q2K    Type = 10
	Q3K    Type = 11
	Q4K    Type = 12
	Q5K    Type = 13
	Q6K    Type = 14
	Q8K    Type = 15
	IQ2XXS Type = 16
	IQ2XS  Type = 17
	IQ3XXS Type = 18
	IQ1S   Type = 19
	IQ4NL  Type = 20
	IQ3S   Type = 21
	IQ2S   Type = 22
	IQ4XS  Type = 23
	I8     Type = 24
	I16    Type = 25
	I32    Type = 26
	I64    Type = 27
	F64    Type = 28
	IQ1M   Type = 29
	BF16   Type = 30
	TQ1_0  Type = 34
	TQ2_0  Type = 35
	MXFP4  Type = 39
)

// QKK is the number of elements in a k-quant super-block (GGML's QK_K).
const QKK = 256

type layout struct {
	name       string
	blockElems int // elements per block
	blockBytes int // bytes per block
}

// layouts holds every known type's block layout, from ggml.c's type_traits.
var layouts = map[Type]layout{
	F32:    {"F32", 1, 4},
	F16:    {"F16", 1, 2},
	Q4_0:   {"Q4_0", 32, 18},
	Q4_1:   {"Q4_1", 32, 20},
	Q5_0:   {"Q5_0", 32, 22},
	Q5_1:   {"Q5_1", 32, 24},
	Q8_0:   {"Q8_0", 32, 34},
	Q8_1:   {"Q8_1", 32, 36},
	Q2K:    {"Q2_K", QKK, 84},
	Q3K:    {"Q3_K", QKK, 110},
	Q4K:    {"Q4_K", QKK, 144},
	Q5K:    {"Q5_K", QKK, 176},
	Q6K:    {"Q6_K", QKK, 210},
	Q8K:    {"Q8_K", QKK, 292},
	IQ2XXS: {"IQ2_XXS", QKK, 66},
	IQ2XS:  {"IQ2_XS", QKK, 74},
	IQ3XXS: {"IQ3_XXS", QKK, 98},
	IQ1S:   {"IQ1_S", QKK, 50},
	IQ4NL:  {"IQ4_NL", 32, 18},
	IQ3S:   {"IQ3_S", QKK, 110},
	IQ2S:   {"IQ2_S", QKK, 82},
	IQ4XS:  {"IQ4_XS", QKK, 136},
	I8:     {"I8", 1, 1},
	I16:    {"I16", 1, 2},
	I32:    {"I32", 1, 4},
	I64:    {"I64", 1, 8},
	F64:    {"F64", 1, 8},
	IQ1M:   {"IQ1_M", QKK, 56},
	BF16:   {"BF16", 1, 2},
	TQ1_0:  {"TQ1_0", QKK, 54},
	TQ2_0:  {"TQ2_0", QKK, 66},
	MXFP4:  {"MXFP4", 32, 17},
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
