package llama2c

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

const stories = "testdata/stories260K.bin"

// TestStories260K reads Karpathy's real 260K-parameter checkpoint and checks
// what can be reasoned about it: the header, the size it implies, the
// shared classifier, weights where they belong, and the RoPE table that
// export.py wrote between the weights and the end.
func TestStories260K(t *testing.T) {
	ck, err := Open(stories)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Dim: 64, HiddenDim: 172, Layers: 5, Heads: 8, KVHeads: 4, VocabSize: 512, SeqLen: 512, SharedClassifier: true}
	if ck.Config != want {
		t.Fatalf("Config = %+v, want %+v", ck.Config, want)
	}
	if ck.Config.HeadSize() != 8 || ck.Config.KVDim() != 32 {
		t.Errorf("head size %d, kv dim %d; want 8 and 32", ck.Config.HeadSize(), ck.Config.KVDim())
	}

	data, err := os.ReadFile(stories)
	if err != nil {
		t.Fatal(err)
	}
	// The size from run.c's layout, counted by hand: embedding 512·64,
	// per layer 64+64 (norms) + 2·64·64 (wq, wo) + 2·32·64 (wk, wv) +
	// 3·172·64 (w1..w3), final norm 64, RoPE tables 2·512·4.
	floats := 512*64 + 5*(64+64+2*64*64+2*32*64+3*172*64) + 64 + 2*512*4
	if len(data) != HeaderBytes+4*floats {
		t.Fatalf("the file has %d bytes; the layout says %d", len(data), HeaderBytes+4*floats)
	}
	parsed, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(parsed, ck) {
		t.Error("Parse and Open disagree")
	}

	if unsafe.SliceData(ck.WCls) != unsafe.SliceData(ck.TokenEmbedding) || len(ck.WCls) != 512*64 {
		t.Error("the shared classifier is not the token embedding")
	}
	if len(ck.TokenEmbedding) != 512*64 || len(ck.RMSFinal) != 64 || len(ck.Layers) != 5 {
		t.Fatalf("embedding %d, final norm %d, %d layers", len(ck.TokenEmbedding), len(ck.RMSFinal), len(ck.Layers))
	}
	// RMSNorm gains start at 1 and stay positive in training, while the
	// matrices are centred on zero: a section read from the wrong offset
	// would mix the two.
	gains := map[string][]float32{"rms_final": ck.RMSFinal}
	matrices := map[string][]float32{"token_embedding": ck.TokenEmbedding}
	for l, L := range ck.Layers {
		shapes := map[string][2]int{"wq": {64, 64}, "wk": {32, 64}, "wv": {32, 64}, "wo": {64, 64}, "w1": {172, 64}, "w2": {64, 172}, "w3": {172, 64}}
		for name, m := range map[string][]float32{"wq": L.WQ, "wk": L.WK, "wv": L.WV, "wo": L.WO, "w1": L.W1, "w2": L.W2, "w3": L.W3} {
			if len(m) != shapes[name][0]*shapes[name][1] {
				t.Errorf("layer %d %s has %d floats, want %v", l, name, len(m), shapes[name])
			}
			matrices[name+string(rune('0'+l))] = m
		}
		gains["rms_att"+string(rune('0'+l))] = L.RMSAtt
		gains["rms_ffn"+string(rune('0'+l))] = L.RMSFFN
	}
	for name, g := range gains {
		if len(g) != 64 {
			t.Errorf("%s has %d floats", name, len(g))
		}
		for i, x := range g {
			if !(x > 0.1 && x < 10) {
				t.Errorf("%s[%d] = %v; RMSNorm gains are positive and near 1", name, i, x)
				break
			}
		}
	}
	for name, m := range matrices {
		sum, neg := 0.0, 0
		for _, x := range m {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) || math.Abs(float64(x)) > 10 {
				t.Errorf("%s holds %v", name, x)
				break
			}
			sum += float64(x)
			if x < 0 {
				neg++
			}
		}
		if mean := sum / float64(len(m)); math.Abs(mean) > 0.05 || neg < len(m)/4 {
			t.Errorf("%s: mean %v, %d of %d negative; want weights centred on zero", name, mean, neg, len(m))
		}
	}

	// export.py writes the RoPE tables run.c skips: cos and sin of
	// pos·10000^(−2i/head_size). Finding them exactly where the layout
	// says proves every section before them has the right size.
	off := HeaderBytes
	for _, s := range sections(ck.Config) {
		if s.name == "freq_cis_real" {
			break
		}
		off += 4 * int(s.count)
	}
	half := ck.Config.HeadSize() / 2
	for pos := range ck.Config.SeqLen {
		for i := range half {
			angle := float64(pos) * math.Pow(10000, -float64(2*i)/float64(ck.Config.HeadSize()))
			k := pos*half + i
			re := math.Float32frombits(binary.LittleEndian.Uint32(data[off+4*k:]))
			im := math.Float32frombits(binary.LittleEndian.Uint32(data[off+4*(ck.Config.SeqLen*half+k):]))
			if math.Abs(float64(re)-math.Cos(angle)) > 1e-4 || math.Abs(float64(im)-math.Sin(angle)) > 1e-4 {
				t.Fatalf("RoPE table at pos %d, i %d: %v, %v; want cos, sin of %v", pos, i, re, im, angle)
			}
		}
	}
}

// synthetic writes a checkpoint whose every float says where it is:
// section s, index j holds s·100000 + j (exact in a float32 for these
// sizes). The layout is spelled out here again, from run.c, rather than
// taken from the package.
func synthetic(c Config) []byte {
	kv := c.Dim / c.Heads * c.KVHeads
	L, d, h := c.Layers, c.Dim, c.HiddenDim
	counts := []int{c.VocabSize * d, L * d, L * d * d, L * kv * d, L * kv * d, L * d * d, L * d,
		L * h * d, L * d * h, L * h * d, d, c.SeqLen * d / c.Heads / 2, c.SeqLen * d / c.Heads / 2}
	vocab := int32(c.VocabSize)
	if !c.SharedClassifier {
		counts = append(counts, c.VocabSize*d)
		vocab = -vocab
	}
	var b []byte
	for _, v := range []int32{int32(d), int32(h), int32(L), int32(c.Heads), int32(c.KVHeads), vocab, int32(c.SeqLen)} {
		b = binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	for s, n := range counts {
		for j := range n {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(s*100000+j)))
		}
	}
	return b
}

// Section numbers in synthetic files.
const (
	secEmbedding = iota
	secRMSAtt
	secWQ
	secWK
	secWV
	secWO
	secRMSFFN
	secW1
	secW2
	secW3
	secRMSFinal
	secFreqReal
	secFreqImag
	secWCls
)

// wantRun checks that got is section sec's floats from index start on.
func wantRun(t *testing.T, what string, got []float32, sec, start, n int) {
	t.Helper()
	if len(got) != n {
		t.Errorf("%s has %d floats, want %d", what, len(got), n)
		return
	}
	for j, x := range got {
		if want := float32(sec*100000 + start + j); x != want {
			t.Errorf("%s[%d] = %v, want %v", what, j, x, want)
			return
		}
	}
}

func TestUnsharedClassifier(t *testing.T) {
	c := Config{Dim: 12, HiddenDim: 20, Layers: 3, Heads: 6, KVHeads: 2, VocabSize: 10, SeqLen: 7}
	data := synthetic(c)
	path := filepath.Join(t.TempDir(), "unshared.bin")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	opened, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(opened, ck) {
		t.Error("Open and Parse disagree")
	}
	if ck.Config != c {
		t.Fatalf("Config = %+v, want %+v", ck.Config, c)
	}
	d, h, kv := 12, 20, 4
	wantRun(t, "TokenEmbedding", ck.TokenEmbedding, secEmbedding, 0, 10*d)
	wantRun(t, "RMSFinal", ck.RMSFinal, secRMSFinal, 0, d)
	wantRun(t, "WCls", ck.WCls, secWCls, 0, 10*d)
	for l, L := range ck.Layers {
		wantRun(t, "RMSAtt", L.RMSAtt, secRMSAtt, l*d, d)
		wantRun(t, "WQ", L.WQ, secWQ, l*d*d, d*d)
		wantRun(t, "WK", L.WK, secWK, l*kv*d, kv*d)
		wantRun(t, "WV", L.WV, secWV, l*kv*d, kv*d)
		wantRun(t, "WO", L.WO, secWO, l*d*d, d*d)
		wantRun(t, "RMSFFN", L.RMSFFN, secRMSFFN, l*d, d)
		wantRun(t, "W1", L.W1, secW1, l*h*d, h*d)
		wantRun(t, "W2", L.W2, secW2, l*d*h, d*h)
		wantRun(t, "W3", L.W3, secW3, l*h*d, h*d)
	}
	// Slices must not reach into their neighbours.
	if cap(ck.Layers[0].WQ) != len(ck.Layers[0].WQ) || cap(ck.TokenEmbedding) != len(ck.TokenEmbedding) {
		t.Error("a weight slice has capacity beyond its length")
	}

	c.SharedClassifier = true
	shared, err := Parse(synthetic(c))
	if err != nil {
		t.Fatal(err)
	}
	if unsafe.SliceData(shared.WCls) != unsafe.SliceData(shared.TokenEmbedding) {
		t.Error("a shared classifier is not the token embedding")
	}
	wantRun(t, "shared RMSFinal", shared.RMSFinal, secRMSFinal, 0, d)
}

func TestHeaderErrors(t *testing.T) {
	good := Config{Dim: 8, HiddenDim: 16, Layers: 2, Heads: 4, KVHeads: 2, VocabSize: 5, SeqLen: 4}
	header := func(h ...int32) []byte {
		var b []byte
		for _, v := range h {
			b = binary.LittleEndian.AppendUint32(b, uint32(v))
		}
		return b
	}
	valid := synthetic(good)
	cases := []struct {
		name string
		data []byte
		want []string
	}{
		{"empty", nil, []string{"0 bytes is too short for the 28-byte header"}},
		{"short header", valid[:27], []string{"27 bytes is too short"}},
		{"zero dim", header(0, 16, 2, 4, 2, 5, 4), []string{"dim is 0, want a positive number"}},
		{"negative hidden", header(8, -16, 2, 4, 2, 5, 4), []string{"hidden_dim is -16"}},
		{"zero layers", header(8, 16, 0, 4, 2, 5, 4), []string{"n_layers is 0"}},
		{"negative heads", header(8, 16, 2, -4, 2, 5, 4), []string{"n_heads is -4"}},
		{"zero kv heads", header(8, 16, 2, 4, 0, 5, 4), []string{"n_kv_heads is 0"}},
		{"zero vocab", header(8, 16, 2, 4, 2, 0, 4), []string{"vocab_size is 0"}},
		{"zero seq_len", header(8, 16, 2, 4, 2, 5, 0), []string{"seq_len is 0"}},
		{"dim not multiple of heads", header(10, 16, 2, 4, 2, 5, 4), []string{"dim 10 is not a multiple of n_heads 4"}},
		{"heads not multiple of kv heads", header(12, 16, 2, 6, 4, 5, 4), []string{"n_heads 6 is not a multiple of n_kv_heads 4"}},
		{"kv heads above heads", header(8, 16, 2, 4, 8, 5, 4), []string{"n_heads 4 is not a multiple of n_kv_heads 8"}},
		{"odd head size", header(12, 16, 2, 4, 2, 5, 4), []string{"head size 3 (dim 12 / n_heads 4) is odd"}},
		{"huge", header(1<<30, math.MaxInt32, math.MaxInt32, 2, 1, math.MinInt32, math.MaxInt32), []string{"more weights than can be loaded"}},
		{"huge layers", header(1<<16, 1<<16, 1<<30, 1<<10, 1<<10, 1, 1), []string{"more weights than can be loaded"}},
		{"min int32 vocab", header(8, 16, 2, 4, 2, math.MinInt32, 4), []string{"vocab_size 2147483648", "shared classifier false", "implies a file of"}},
		{"truncated", valid[:len(valid)-4], []string{fmt.Sprintf("implies a file of %d bytes, but it has %d", len(valid), len(valid)-4), "truncated"}},
		{"trailing data", append(append([]byte(nil), valid...), 0, 0, 0, 0), []string{fmt.Sprintf("implies a file of %d bytes, but it has %d", len(valid), len(valid)+4)}},
		{"header only", valid[:28], []string{"but it has 28"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ck, err := Parse(c.data)
			if ck != nil || err == nil {
				t.Fatalf("Parse = %v, %v; want an error", ck, err)
			}
			for _, w := range append([]string{"llama2c: "}, c.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "missing.bin")); err == nil || !strings.Contains(err.Error(), "missing.bin") {
		t.Errorf("missing file: %v", err)
	}
	for name, data := range map[string][]byte{"short.bin": {1, 2, 3}, "empty.bin": nil, "truncated.bin": synthetic(Config{Dim: 8, HiddenDim: 16, Layers: 2, Heads: 4, KVHeads: 2, VocabSize: 5, SeqLen: 4})[:100]} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Open(path)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "llama2c: ") {
			t.Errorf("%s: %v; want an error naming the file", name, err)
		}
	}
}

// FuzzParse checks that no input panics Parse or makes it allocate beyond
// the input's size, and that what it accepts is consistent.
func FuzzParse(f *testing.F) {
	file, err := os.ReadFile(stories)
	if err != nil {
		f.Fatal(err)
	}
	small := Config{Dim: 8, HiddenDim: 6, Layers: 2, Heads: 4, KVHeads: 2, VocabSize: 5, SeqLen: 3}
	unshared := synthetic(small)
	small.SharedClassifier = true
	shared := synthetic(small)
	for _, s := range [][]byte{file, unshared, shared, unshared[:28], shared[:len(shared)-1], file[:4096], nil} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ck, err := Parse(data)
		if err != nil {
			return
		}
		c := ck.Config
		n := len(ck.TokenEmbedding) + len(ck.RMSFinal) + 2*c.SeqLen*c.HeadSize()/2
		if !c.SharedClassifier {
			n += len(ck.WCls)
		}
		for _, L := range ck.Layers {
			n += len(L.RMSAtt) + len(L.WQ) + len(L.WK) + len(L.WV) + len(L.WO) + len(L.RMSFFN) + len(L.W1) + len(L.W2) + len(L.W3)
		}
		if HeaderBytes+4*n != len(data) {
			t.Fatalf("%s: the fields hold %d floats but the file has %d bytes", c, n, len(data))
		}
		if len(ck.Layers) != c.Layers || len(ck.WCls) != c.VocabSize*c.Dim || len(ck.Layers[0].WK) != c.KVDim()*c.Dim {
			t.Fatalf("%s: fields do not match the config", c)
		}
	})
}
