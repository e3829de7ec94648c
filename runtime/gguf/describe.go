package gguf

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// maxDescribedValue is how many bytes of a value Describe prints before
// cutting it short, so that a chat template does not flood the listing.
const maxDescribedValue = 160

// Describe writes a listing of the file in the manner of gguf-dump: the
// header, every key with its type and value (arrays abbreviated, long
// strings cut), and every tensor with its type, shape, offset and size.
func (f *File) Describe(w io.Writer) error {
	bw := bufio.NewWriter(w)
	var total uint64
	for _, t := range f.Tensors {
		total += t.Size
	}
	// bw keeps the first write error for Flush to return.
	_, _ = fmt.Fprintf(bw, "GGUF v%d: %d metadata keys, %d tensors (%d bytes of data), alignment %d, data at offset %d\n",
		f.Version, len(f.KVs), len(f.Tensors), total, f.Alignment, f.DataOffset)
	keyWidth := 0
	for _, kv := range f.KVs {
		keyWidth = max(keyWidth, len(kv.Key))
	}
	for _, kv := range f.KVs {
		typ := kv.Value.typeName()
		if kv.Value.typ == TypeArray {
			typ = fmt.Sprintf("%s[%d]", kv.Value.elem, kv.Value.Len())
		}
		_, _ = fmt.Fprintf(bw, "  %-*s %-12s = %s\n", keyWidth, kv.Key, typ, cut(kv.Value.String(), maxDescribedValue))
	}
	nameWidth := 0
	for _, t := range f.Tensors {
		nameWidth = max(nameWidth, len(t.Name))
	}
	for i, t := range f.Tensors {
		dims := make([]string, len(t.Shape))
		for j, d := range t.Shape {
			dims[j] = fmt.Sprint(d)
		}
		_, _ = fmt.Fprintf(bw, "  %4d %-*s %-7s [%s] offset %d, %d bytes\n",
			i, nameWidth, t.Name, t.Type, strings.Join(dims, " "), t.Offset, t.Size)
	}
	return bw.Flush()
}

// cut shortens s to at most n bytes, on a rune boundary, saying how much
// was left out.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return fmt.Sprintf("%s… (%d bytes in all)", s[:i], len(s))
}
