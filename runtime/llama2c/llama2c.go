// Package llama2c reads checkpoints in the legacy format of Andrej
// Karpathy's llama2.c (run.c): a header of seven int32s, then every weight
// as float32, grouped by kind across layers.
//
// The layout, from run.c's memory_map_weights:
//
//	dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len  (int32)
//	token_embedding  [vocab][dim]
//	rms_att          [layers][dim]
//	wq               [layers][dim][dim]
//	wk               [layers][kv_dim][dim]
//	wv               [layers][kv_dim][dim]
//	wo               [layers][dim][dim]
//	rms_ffn          [layers][dim]
//	w1               [layers][hidden][dim]
//	w2               [layers][dim][hidden]
//	w3               [layers][hidden][dim]
//	rms_final        [dim]
//	freq_cis_real    [seq_len][head_size/2]   (RoPE table; skipped)
//	freq_cis_imag    [seq_len][head_size/2]   (skipped)
//	wcls             [vocab][dim]             (only when vocab_size < 0)
//
// kv_dim = dim*n_kv_heads/n_heads and head_size = dim/n_heads. A negative
// vocab_size says the classifier is not shared with the token embedding.
// Matrices are row-major [out][in], so a matrix-vector product walks rows.
// Everything is little-endian.
package llama2c

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
)

// HeaderBytes is the size of the header: seven int32s.
const HeaderBytes = 7 * 4

// Config is a checkpoint's header.
type Config struct {
	Dim       int // width of the residual stream
	HiddenDim int // width of the feed-forward layer
	Layers    int
	Heads     int // query heads
	KVHeads   int // key/value heads (fewer than Heads for grouped-query attention)
	VocabSize int
	SeqLen    int // longest sequence the model was trained for
	// SharedClassifier says the output classifier is the token embedding
	// (vocab_size was positive in the file).
	SharedClassifier bool
}

// HeadSize is the width of one attention head.
func (c Config) HeadSize() int { return c.Dim / c.Heads }

// KVDim is the width of the keys and values of one token.
func (c Config) KVDim() int { return c.HeadSize() * c.KVHeads }

// Checkpoint holds a model's weights as float32s, the Config's sizes
// giving their shapes.
type Checkpoint struct {
	Config Config
	// TokenEmbedding is [VocabSize][Dim].
	TokenEmbedding []float32
	// Layers holds the transformer blocks in order.
	Layers []Layer
	// RMSFinal is the final RMSNorm's weights, [Dim].
	RMSFinal []float32
	// WCls is the classifier, [VocabSize][Dim]. It is TokenEmbedding
	// itself when the classifier is shared.
	WCls []float32
}

// Layer holds one transformer block's weights; matrices are [out][in].
type Layer struct {
	RMSAtt []float32 // [Dim]
	WQ     []float32 // [Dim][Dim]
	WK     []float32 // [KVDim][Dim]
	WV     []float32 // [KVDim][Dim]
	WO     []float32 // [Dim][Dim]
	RMSFFN []float32 // [Dim]
	W1     []float32 // [HiddenDim][Dim], the gate
	W2     []float32 // [Dim][HiddenDim], down
	W3     []float32 // [HiddenDim][Dim], up
}

// section is one run of floats in the file.
type section struct {
	name  string
	count uint64 // floats in all layers together
}

// maxFloats bounds the floats a checkpoint may hold, so that sizes stay far
// from overflowing an int64 of bytes.
const maxFloats = 1 << 60

// sections lists the file's float arrays in order: the one statement of
// the layout, for checking sizes, parsing and tests. Counts are computed
// without overflow; one too large to matter is capped just above
// maxFloats.
func sections(c Config) []section {
	mul := func(xs ...int) uint64 {
		p := uint64(1)
		for _, x := range xs {
			hi, lo := bits.Mul64(p, uint64(x))
			if hi != 0 || lo > maxFloats {
				return maxFloats + 1
			}
			p = lo
		}
		return p
	}
	dim, hid, l, kv := c.Dim, c.HiddenDim, c.Layers, c.KVDim()
	s := []section{
		{"token_embedding", mul(c.VocabSize, dim)},
		{"rms_att", mul(l, dim)},
		{"wq", mul(l, dim, dim)},
		{"wk", mul(l, kv, dim)},
		{"wv", mul(l, kv, dim)},
		{"wo", mul(l, dim, dim)},
		{"rms_ffn", mul(l, dim)},
		{"w1", mul(l, hid, dim)},
		{"w2", mul(l, dim, hid)},
		{"w3", mul(l, hid, dim)},
		{"rms_final", mul(dim)},
		{"freq_cis_real", mul(c.SeqLen, c.HeadSize()/2)}, // RoPE tables run.c skips
		{"freq_cis_imag", mul(c.SeqLen, c.HeadSize()/2)},
	}
	if !c.SharedClassifier {
		s = append(s, section{"wcls", mul(c.VocabSize, dim)})
	}
	return s
}

// Offsets returns where each float array starts in a checkpoint file of
// this shape, in bytes from the file's start, and its length in floats
// (all layers together): token_embedding, rms_att, wq, wk, wv, wo,
// rms_ffn, w1, w2, w3, rms_final, and wcls unless the classifier is
// shared. For reading a checkpoint a piece at a time; the config must
// have passed ParseHeader.
func (c Config) Offsets() map[string][2]int64 {
	out := map[string][2]int64{}
	off := int64(HeaderBytes)
	for _, s := range sections(c) {
		n := int64(s.count) //nolint:gosec // bounded by ParseHeader
		out[s.name] = [2]int64{off, n}
		off += 4 * n
	}
	return out
}

// ParseHeader decodes and checks the header at the start of data and
// returns the file size in bytes it implies. The products behind that
// size are checked for overflow, so it is safe to compare with a real
// size before allocating anything.
func ParseHeader(data []byte) (Config, int64, error) {
	if len(data) < HeaderBytes {
		return Config{}, 0, fmt.Errorf("llama2c: %d bytes is too short for the %d-byte header", len(data), HeaderBytes)
	}
	var h [7]int32
	for i := range h {
		h[i] = int32(binary.LittleEndian.Uint32(data[4*i:]))
	}
	names := [7]string{"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"}
	for i, v := range h {
		if v == 0 || (v < 0 && i != 5) {
			return Config{}, 0, fmt.Errorf("llama2c: header field %s is %d, want a positive number; is this a checkpoint in llama2.c's legacy format?", names[i], v)
		}
	}
	vocab := int64(h[5]) // widened: -(-2^31) overflows an int32
	c := Config{
		Dim: int(h[0]), HiddenDim: int(h[1]), Layers: int(h[2]), Heads: int(h[3]), KVHeads: int(h[4]),
		VocabSize: int(max(vocab, -vocab)), SeqLen: int(h[6]), SharedClassifier: vocab > 0,
	}
	switch {
	case c.Dim%c.Heads != 0:
		return Config{}, 0, fmt.Errorf("llama2c: dim %d is not a multiple of n_heads %d", c.Dim, c.Heads)
	case c.Heads%c.KVHeads != 0:
		return Config{}, 0, fmt.Errorf("llama2c: n_heads %d is not a multiple of n_kv_heads %d", c.Heads, c.KVHeads)
	case c.HeadSize()%2 != 0:
		return Config{}, 0, fmt.Errorf("llama2c: head size %d (dim %d / n_heads %d) is odd; RoPE rotates pairs", c.HeadSize(), c.Dim, c.Heads)
	}
	total := uint64(0)
	for _, s := range sections(c) {
		total += s.count // no overflow: each term is at most maxFloats+1, and there are 14
	}
	if total > maxFloats || total > math.MaxInt {
		return Config{}, 0, fmt.Errorf("llama2c: the header (%s) describes more weights than can be loaded: the header is corrupt", c)
	}
	return c, HeaderBytes + 4*int64(total), nil
}

// String lists the header's fields as run.c names them.
func (c Config) String() string {
	return fmt.Sprintf("dim %d, hidden_dim %d, n_layers %d, n_heads %d, n_kv_heads %d, vocab_size %d, seq_len %d, shared classifier %t",
		c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KVHeads, c.VocabSize, c.SeqLen, c.SharedClassifier)
}

// Parse decodes a checkpoint held in memory. The weights are copied out,
// so data may be reused afterwards.
func Parse(data []byte) (*Checkpoint, error) {
	c, want, err := ParseHeader(data)
	if err != nil {
		return nil, err
	}
	if err := checkSize(c, want, int64(len(data))); err != nil {
		return nil, err
	}
	floats := make([]float32, (want-HeaderBytes)/4)
	decodeFloats(floats, data[HeaderBytes:])
	return assemble(c, floats), nil
}

// Open reads the checkpoint at path. The header is checked against the
// file's size before the weights are read, and the weights are read
// straight into their final slice, so a checkpoint costs its size in
// memory once.
func Open(path string) (*Checkpoint, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("llama2c: %w", err)
	}
	defer func() { _ = fh.Close() }() // read only
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("llama2c: %w", err)
	}
	var hdr [HeaderBytes]byte
	n, err := io.ReadFull(fh, hdr[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("llama2c: %s: %w", path, err)
	}
	c, want, err := ParseHeader(hdr[:n])
	if err == nil {
		err = checkSize(c, want, st.Size())
	}
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	floats := make([]float32, (want-HeaderBytes)/4)
	buf := make([]byte, 1<<20)
	for done := 0; done < len(floats); {
		k := min(len(buf)/4, len(floats)-done)
		if _, err := io.ReadFull(fh, buf[:4*k]); err != nil {
			return nil, fmt.Errorf("llama2c: %s: reading the weights: %w", path, err)
		}
		decodeFloats(floats[done:done+k], buf)
		done += k
	}
	return assemble(c, floats), nil
}

func checkSize(c Config, want, got int64) error {
	if got != want {
		return fmt.Errorf("llama2c: the header (%s) implies a file of %d bytes, but it has %d; the file is truncated, has trailing data, or is not a legacy llama2.c checkpoint",
			c, want, got)
	}
	return nil
}

func decodeFloats(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// assemble slices the floats of a checked file into the Checkpoint's
// fields, without copying.
func assemble(c Config, floats []float32) *Checkpoint {
	parts := map[string][]float32{}
	off := 0
	for _, s := range sections(c) {
		n := int(s.count) // fits: ParseHeader bounded the sum
		parts[s.name] = floats[off : off+n : off+n]
		off += n
	}
	// perLayer cuts a section into one slice per layer.
	perLayer := func(name string, l int) []float32 {
		p := parts[name]
		n := len(p) / c.Layers
		return p[l*n : (l+1)*n : (l+1)*n]
	}
	ck := &Checkpoint{
		Config:         c,
		TokenEmbedding: parts["token_embedding"],
		Layers:         make([]Layer, c.Layers),
		RMSFinal:       parts["rms_final"],
		WCls:           parts["wcls"],
	}
	if c.SharedClassifier {
		ck.WCls = ck.TokenEmbedding
	}
	for l := range ck.Layers {
		ck.Layers[l] = Layer{
			RMSAtt: perLayer("rms_att", l),
			WQ:     perLayer("wq", l),
			WK:     perLayer("wk", l),
			WV:     perLayer("wv", l),
			WO:     perLayer("wo", l),
			RMSFFN: perLayer("rms_ffn", l),
			W1:     perLayer("w1", l),
			W2:     perLayer("w2", l),
			W3:     perLayer("w3", l),
		}
	}
	return ck
}
