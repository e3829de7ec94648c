package cpu

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/leo-operator/leo/runtime/quant"
)

// The tests check three things: the reference kernels against float64 dot
// products of weights dequantized here, independently, from the GGML
// layouts; every SIMD kernel set this CPU runs against the reference (same
// integers, float sums within a tight bound); and the pool (coverage, no
// allocation, errors).

var testTypes = []quant.Type{quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q4_0, quant.Q4K, quant.Q6K}

// halfBits truncates a normal float32 (|v| in [2⁻¹⁴, 65504]) to binary16.
func halfBits(v float32) uint16 {
	b := math.Float32bits(v)
	return uint16(b>>16)&0x8000 | uint16(((b>>23)&0xff-112)<<10) | uint16(b>>13)&0x3ff
}

// halfValue is the value of a binary16 computed with float64 arithmetic.
func halfValue(h uint16) float64 {
	s := 1.0
	if h&0x8000 != 0 {
		s = -1
	}
	e, m := int(h>>10)&31, float64(h&0x3ff)
	switch e {
	case 0:
		return s * m * math.Pow(2, -24)
	case 31:
		if m == 0 {
			return math.Inf(int(s))
		}
		return math.NaN()
	}
	return s * (1024 + m) * math.Pow(2, float64(e-25))
}

func TestF16ToF32(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		got, want := float64(f16ToF32(uint16(h))), halfValue(uint16(h))
		if got != want && !(math.IsNaN(got) && math.IsNaN(want)) {
			t.Fatalf("f16ToF32(%#04x) = %g, want %g", h, got, want)
		}
		if f16Table[h] != f16ToF32(uint16(h)) && !math.IsNaN(want) {
			t.Fatalf("f16Table[%#04x] = %g, want %g", h, f16Table[h], want)
		}
	}
}

// randScale is a random block scale in ±[2⁻¹², 2] as binary16, or with
// probability 1/16 an edge case: zero or a subnormal.
func randScale(r *rand.Rand) uint16 {
	switch r.IntN(16) {
	case 0:
		return 0
	case 1:
		return uint16(1 + r.IntN(0x3ff)) // subnormal
	}
	v := float32(math.Ldexp(1+r.Float64(), -12+r.IntN(13)))
	if r.IntN(2) == 0 {
		v = -v
	}
	return halfBits(v)
}

// randRow fills a row of cols elements of type t with random weights; some
// blocks take extreme quants (all lowest / all highest) to test saturation.
func randRow(r *rand.Rand, t quant.Type, cols int) []byte {
	n, _ := t.RowBytes(cols)
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	put16 := func(o int, v uint16) { binary.LittleEndian.PutUint16(b[o:], v) }
	fill := func(o, n int, v byte) {
		for i := range n {
			b[o+i] = v
		}
	}
	switch t {
	case quant.F32:
		for i := 0; i < cols; i++ {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(r.NormFloat64())))
		}
	case quant.F16:
		for i := 0; i < cols; i++ {
			put16(2*i, halfBits(float32(math.Ldexp(1+r.Float64(), -3+r.IntN(5)))*float32(1-2*r.IntN(2))))
		}
	case quant.BF16:
		for i := 0; i < cols; i++ {
			put16(2*i, uint16(math.Float32bits(float32(r.NormFloat64()))>>16))
		}
	case quant.Q4_0, quant.Q8_0:
		bs := t.BlockBytes()
		for o := 0; o < n; o += bs {
			put16(o, randScale(r))
			switch r.IntN(8) {
			case 0:
				fill(o+2, bs-2, 0) // Q4_0: all -8, Q8_0: all 0
			case 1:
				fill(o+2, bs-2, 0x80) // Q8_0: all -128
			case 2:
				fill(o+2, bs-2, 0xff) // Q4_0: all 7, Q8_0: all -1
			case 3:
				fill(o+2, bs-2, 0x7f)
			}
		}
	case quant.Q4K:
		for o := 0; o < n; o += 144 {
			put16(o, randScale(r))
			put16(o+2, randScale(r))
			if r.IntN(8) == 0 {
				fill(o+4, 140, 0xff) // every scale, min and quant at its top
			}
		}
	case quant.Q6K:
		for o := 0; o < n; o += 210 {
			put16(o+208, randScale(r))
			switch r.IntN(8) {
			case 0:
				fill(o, 192, 0) // every quant -32
				fill(o+192, 16, 0x80)
			case 1:
				fill(o, 192, 0xff) // every quant 31
				fill(o+192, 16, 0x7f)
			}
		}
	}
	return b
}

// dequant returns row (cols elements of type t) as float64, straight from
// the block layouts.
func dequant(t quant.Type, row []byte, cols int) []float64 { return dequantMag(t, row, cols, false) }

// dequantMag with mag set returns the magnitudes of the terms the kernels
// sum for each element: |w| except for Q4_K, where the kernels sum the
// scaled quants and the minimums apart, |d·sc·q| + |dmin·m|, which is what
// float rounding is relative to.
func dequantMag(t quant.Type, row []byte, cols int, mag bool) []float64 {
	y := make([]float64, cols)
	h := func(o int) float64 { return halfValue(binary.LittleEndian.Uint16(row[o:])) }
	switch t {
	case quant.F32:
		for i := range y {
			y[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(row[4*i:])))
		}
	case quant.F16:
		for i := range y {
			y[i] = h(2 * i)
		}
	case quant.BF16:
		for i := range y {
			y[i] = float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(row[2*i:])) << 16))
		}
	case quant.Q8_0:
		for b := 0; b < cols/32; b++ {
			for j := 0; j < 32; j++ {
				y[32*b+j] = h(34*b) * float64(int8(row[34*b+2+j]))
			}
		}
	case quant.Q4_0:
		for b := 0; b < cols/32; b++ {
			d, qs := h(18*b), row[18*b+2:]
			for j := 0; j < 16; j++ {
				y[32*b+j] = d * float64(int(qs[j]&15)-8)
				y[32*b+j+16] = d * float64(int(qs[j]>>4)-8)
			}
		}
	case quant.Q4K:
		for b := 0; b < cols/256; b++ {
			blk := row[144*b:]
			d, dmin, sc, qs := h(144*b), h(144*b+2), blk[4:16], blk[16:]
			for j := 0; j < 8; j++ {
				// 6-bit scale and min of sub-block j: j < 4 in the low bits of
				// bytes j and j+4, else split over byte j+4 and the top bits.
				var s, m byte
				if j < 4 {
					s, m = sc[j]&63, sc[j+4]&63
				} else {
					s = sc[j+4]&0xf | sc[j-4]>>6<<4
					m = sc[j+4]>>4 | sc[j]>>6<<4
				}
				for l := 0; l < 32; l++ {
					q := qs[32*(j/2)+l]
					if j%2 == 1 {
						q >>= 4
					}
					y[256*b+32*j+l] = d*float64(s)*float64(q&15) - dmin*float64(m)
					if mag {
						y[256*b+32*j+l] = math.Abs(d*float64(s)*float64(q&15)) + math.Abs(dmin*float64(m))
					}
				}
			}
		}
	case quant.Q6K:
		for b := 0; b < cols/256; b++ {
			blk := row[210*b:]
			d := h(210*b + 208)
			for half := 0; half < 2; half++ {
				ql, qh, sc := blk[64*half:], blk[128+32*half:], blk[192+8*half:]
				out := y[256*b+128*half:]
				for l := 0; l < 32; l++ {
					is := l / 16
					q1 := int(ql[l]&15|(qh[l]>>0&3)<<4) - 32
					q2 := int(ql[l+32]&15|(qh[l]>>2&3)<<4) - 32
					q3 := int(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
					q4 := int(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
					out[l] = d * float64(int8(sc[is])) * float64(q1)
					out[l+32] = d * float64(int8(sc[is+2])) * float64(q2)
					out[l+64] = d * float64(int8(sc[is+4])) * float64(q3)
					out[l+96] = d * float64(int8(sc[is+6])) * float64(q4)
				}
			}
		}
	}
	if mag {
		for i, v := range y {
			y[i] = math.Abs(v)
		}
	}
	return y
}

// randX returns n·cols activations: normal values, with some blocks of 32
// all zero, some with one huge outlier and some tiny.
func randX(r *rand.Rand, n, cols int) []float32 {
	x := make([]float32, n*cols)
	for b := 0; b < len(x); b += 32 {
		k := r.IntN(10)
		for i := b; i < min(b+32, len(x)); i++ {
			switch k {
			case 0:
				x[i] = 0
			case 1:
				x[i] = float32(r.NormFloat64() * 1e-30)
			default:
				x[i] = float32(r.NormFloat64())
			}
		}
		if k == 2 {
			x[b] = 1e4
		}
		if k == 3 {
			x[b+r.IntN(min(32, len(x)-b))] = float32(math.NaN()) // quantizes to 0... only in the test of the quantizer
			x[b] = 0
		}
	}
	// keep NaN out of dot products: the checks below need finite sums
	for i, v := range x {
		if v != v {
			x[i] = 0
		}
	}
	return x
}

// quantizedX returns, for token t of a MatMul with weights of type typ,
// the activations the kernels see, dequantized: the float32 input for float
// weights, d·q from the scratch otherwise.
func quantizedX(j *matMulJob, typ quant.Type, x []float32, t, cols int) []float64 {
	y := make([]float64, cols)
	switch typ {
	case quant.Q4_0, quant.Q8_0:
		a := j.act[t/j.group*j.tokBytes:]
		for c := range y {
			qo, _, do, _ := j.layout.at(c/32, t%j.group)
			y[c] = float64(f32at(a[do:])) * float64(int8(a[qo+c%32]))
		}
	case quant.Q4K, quant.Q6K:
		a := j.act[t*j.tokBytes:]
		for c := range y {
			b := c / 256
			y[c] = float64(f32at(a[b*q8KStride+q8KDOff:])) * float64(int8(a[b*q8KStride+c%256]))
		}
	case quant.F16: // llama.cpp rounds activations to the weights' precision
		for c := range y {
			y[c] = float64(quant.FP16ToFloat32(quant.Float32ToFP16(x[t*cols+c])))
		}
	case quant.BF16:
		for c := range y {
			y[c] = float64(quant.BF16ToFloat32(quant.Float32ToBF16(x[t*cols+c])))
		}
	default:
		for c := range y {
			y[c] = float64(x[t*cols+c])
		}
	}
	return y
}

type shape struct{ rows, cols, n int }

func testShapes(t quant.Type) []shape {
	be := t.BlockElems()
	if be == 1 {
		be = 32
	}
	var s []shape
	for _, cols := range []int{be, 3 * be, 8 * be} {
		for _, rows := range []int{1, 3, 4, 5, 17, 40} {
			for _, n := range []int{1, 2, 3, 7} {
				s = append(s, shape{rows, cols, n})
			}
		}
	}
	if t.BlockElems() == 1 {
		s = append(s, shape{5, 1, 1}, shape{6, 13, 3}, shape{7, 70, 2}) // float rows of any length
	}
	return append(s, shape{36, 2 * max(256, be), 128})
}

// run calls MatMul with the current kernel set and returns the result and
// the job (whose scratch describes the quantized activations).
func runMatMul(t *testing.T, p *Pool, w Matrix, x []float32, n int) []float32 {
	t.Helper()
	dst := make([]float32, n*w.Rows)
	for i := range dst {
		dst[i] = float32(math.NaN()) // every output must be written
	}
	if err := p.MatMul(dst, w, x, n); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestReference checks the pure-Go kernels against float64 dot products of
// independently dequantized weights and quantized activations, and against
// the unquantized activations within the quantization error.
func TestReference(t *testing.T) {
	defer func(a *kernelSet) { active = a }(active)
	active = &goKernels
	p := NewPool(1)
	defer p.Close()
	r := rand.New(rand.NewPCG(1, 2))
	for _, typ := range testTypes {
		for _, s := range testShapes(typ) {
			w := Matrix{Type: typ, Rows: s.rows, Cols: s.cols}
			for range s.rows {
				w.Data = append(w.Data, randRow(r, typ, s.cols)...)
			}
			x := randX(r, s.n, s.cols)
			got := runMatMul(t, p, w, x, s.n)
			rb, _ := typ.RowBytes(s.cols)
			for tok := 0; tok < s.n; tok++ {
				xq := quantizedX(&p.multi.jobs[0], typ, x, tok, s.cols)
				for row := 0; row < s.rows; row++ {
					wd := dequant(typ, w.Data[row*rb:(row+1)*rb], s.cols)
					var want, mag, qerr float64
					for c, v := range dequantMag(typ, w.Data[row*rb:(row+1)*rb], s.cols, true) {
						mag += math.Abs(v * xq[c])
					}
					for c, v := range wd {
						want += v * xq[c]
						qerr += math.Abs(v) * math.Abs(float64(x[tok*s.cols+c])-xq[c])
					}
					g := float64(got[tok*s.rows+row])
					if math.Abs(g-want) > 1e-5*mag+1e-35 {
						t.Fatalf("%s %v token %d row %d: got %g, float64 dot of dequantized values %g (Σ|terms| %g)", typ, s, tok, row, g, want, mag)
					}
					// Quantization moves each activation by at most half a step.
					var exact float64
					for c, v := range wd {
						exact += v * float64(x[tok*s.cols+c])
					}
					if math.Abs(g-exact) > qerr*1.0001+1e-5*mag+1e-35 {
						t.Fatalf("%s %v token %d row %d: got %g, float64 dot with unquantized input %g, more than the quantization error %g", typ, s, tok, row, g, exact, qerr)
					}
				}
			}
		}
	}
}

// TestQuantizeActivations checks the activation scratch: |q| ≤ 127, d·q
// within half a step of x, corrections and block sums exact.
func TestQuantizeActivations(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	x := randX(r, 7, 512)
	x[5] = float32(math.NaN())
	for _, k := range []int32{8, 128} {
		for _, l := range []q8Layout{{g: 1}, {g: 4}, {g: 4, pair: true}} {
			g, nb := l.g, 512/32
			buf := make([]byte, (7+g-1)/g*l.groupBytes(nb))
			for tok := 0; tok < 7; tok++ {
				base := buf[tok/g*l.groupBytes(nb):]
				quantizeQ8Token(base, l, tok%g, x[tok*512:(tok+1)*512], k)
				for b := 0; b < nb; b++ {
					qo, co, do, dn := l.at(b, tok%g)
					d := f32at(base[do:])
					for i := 1; i < dn; i++ {
						if c := f32at(base[do+4*i:]); c != d {
							t.Fatalf("%+v token %d block %d: scale copy %d is %g, want %g", l, tok, b, i, c, d)
						}
					}
					checkBlock(t, x[tok*512+32*b:tok*512+32*b+32], base[qo:qo+32], d)
					for i := 0; i < 8; i++ {
						q := base[qo+4*i:]
						s := int32(int8(q[0])) + int32(int8(q[1])) + int32(int8(q[2])) + int32(int8(q[3]))
						if c := int32(binary.LittleEndian.Uint32(base[co+4*i:])); c != -k*s {
							t.Fatalf("%+v token %d block %d lane %d: corr %d, want %d", l, tok, b, i, c, -k*s)
						}
					}
				}
			}
		}
	}
	buf := make([]byte, 2*q8KStride)
	quantizeQ8KToken(buf, x[:512])
	for b := 0; b < 2; b++ {
		blk := buf[b*q8KStride:]
		checkBlock(t, x[256*b:256*b+256], blk[:256], f32at(blk[q8KDOff:]))
		for i := 0; i < 16; i++ {
			var s int16
			for _, q := range blk[16*i : 16*i+16] {
				s += int16(int8(q))
			}
			if got := int16(binary.LittleEndian.Uint16(blk[q8KBsumOff+2*i:])); got != s {
				t.Fatalf("Q8_K block %d bsums[%d] = %d, want %d", b, i, got, s)
			}
		}
	}
}

func checkBlock(t *testing.T, x []float32, q []byte, d float32) {
	t.Helper()
	var amax float64
	for _, v := range x {
		if !math.IsNaN(float64(v)) {
			amax = math.Max(amax, math.Abs(float64(v)))
		}
	}
	// Q8_0 stores d in fp16 (2⁻¹¹ relative); Q8_K's d is negative when
	// the largest-magnitude value is positive (ggml's -127/max).
	dErr := math.Abs(math.Abs(float64(d)) - amax/127)
	if dErr > amax/127*0x1p-11 && dErr > 0x1p-25 { // or below fp16's smallest subnormal
		t.Fatalf("block scale %g, want ±max|x|/127 = %g to fp16 precision", d, amax/127)
	}
	for i, v := range x {
		qi := int8(q[i])
		if qi < -127 {
			t.Fatalf("quant %d below -127", qi)
		}
		if math.IsNaN(float64(v)) {
			if qi != 0 {
				t.Fatalf("NaN quantized to %d, want 0", qi)
			}
			continue
		}
		if e := math.Abs(float64(v) - float64(d)*float64(qi)); e > math.Abs(float64(d))*0.5001+127*dErr {
			t.Fatalf("x = %g quantized to %d·%g: off by %g, more than half a step", v, qi, d, e)
		}
	}
}

// TestKernelsMatchReference runs every kernel set this CPU supports on the
// same inputs as the reference: each output within 2e-6·Σ|terms| (the
// integer parts are exact, so only float summation order differs).
func TestKernelsMatchReference(t *testing.T) {
	defer func(a *kernelSet) { active = a }(active)
	for _, ks := range kernelSets {
		t.Logf("kernel set %s", ks.name)
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, threads := range []int{1, 3} {
		p := NewPool(threads)
		for _, typ := range testTypes {
			for _, s := range testShapes(typ) {
				w := Matrix{Type: typ, Rows: s.rows, Cols: s.cols}
				for range s.rows {
					w.Data = append(w.Data, randRow(r, typ, s.cols)...)
				}
				x := randX(r, s.n, s.cols)
				active = &goKernels
				want := runMatMul(t, p, w, x, s.n)
				rb, _ := typ.RowBytes(s.cols)
				mags := make([]float64, len(want))
				for tok := 0; tok < s.n; tok++ {
					xq := quantizedX(&p.multi.jobs[0], typ, x, tok, s.cols)
					for row := 0; row < s.rows; row++ {
						for c, v := range dequantMag(typ, w.Data[row*rb:(row+1)*rb], s.cols, true) {
							mags[tok*s.rows+row] += v * math.Abs(xq[c])
						}
					}
				}
				for i := range kernelSets {
					ks := &kernelSets[i]
					if ks.name == "go" {
						continue
					}
					active = ks
					got := runMatMul(t, p, w, x, s.n)
					for k := range got {
						if d := math.Abs(float64(got[k]) - float64(want[k])); !(d <= 2e-6*mags[k]+1e-35) {
							t.Fatalf("%s kernels, %s %v threads %d: output %d (token %d row %d) = %g, reference %g (Σ|terms| %g)",
								ks.name, typ, s, threads, k, k/s.rows, k%s.rows, got[k], want[k], mags[k])
						}
					}
				}
			}
		}
		p.Close()
	}
}

func TestVectorKernels(t *testing.T) {
	defer func(a *kernelSet) { active = a }(active)
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{0, 1, 7, 8, 31, 32, 33, 100, 1000} {
		a, b := make([]float32, n), make([]float32, n+3)
		for i := range a {
			a[i] = float32(r.NormFloat64())
		}
		for i := range b {
			b[i] = float32(r.NormFloat64())
		}
		for i := range kernelSets {
			active = &kernelSets[i]
			var want, mag float64
			for i := range a {
				want += float64(a[i]) * float64(b[i])
				mag += math.Abs(float64(a[i]) * float64(b[i]))
			}
			if got := DotF32(a, b); math.Abs(float64(got)-want) > 1e-6*mag {
				t.Fatalf("%s DotF32 n=%d = %g, want %g", active.name, n, got, want)
			}
			dst := append([]float32(nil), b...)
			AxpyF32(dst, 0.75, a)
			for i := range dst {
				w := b[i]
				if i < n {
					w += 0.75 * a[i]
				}
				if math.Abs(float64(dst[i]-w)) > 1e-6*math.Abs(float64(w))+1e-6 {
					t.Fatalf("%s AxpyF32 n=%d: dst[%d] = %g, want %g", active.name, n, i, dst[i], w)
				}
			}
		}
	}
}

type countRanger struct{ hits []atomic.Int32 }

func (c *countRanger) Range(start, end int) {
	for i := start; i < end; i++ {
		c.hits[i].Add(1)
	}
}

func TestFor(t *testing.T) {
	for _, threads := range []int{1, 2, 5} {
		p := NewPool(threads)
		if p.Threads() != threads {
			t.Fatalf("Threads() = %d, want %d", p.Threads(), threads)
		}
		for _, n := range []int{0, 1, 2, 9, 100, 1001} {
			c := &countRanger{hits: make([]atomic.Int32, n)}
			p.For(n, c)
			for i := range c.hits {
				if h := c.hits[i].Load(); h != 1 {
					t.Fatalf("threads %d n %d: index %d ran %d times", threads, n, i, h)
				}
			}
		}
		p.Close()
		p.Close() // idempotent
	}
}

func TestNoAllocs(t *testing.T) {
	p := NewPool(2)
	defer p.Close()
	r := rand.New(rand.NewPCG(9, 10))
	for _, typ := range testTypes {
		for _, n := range []int{1, 9} {
			w := Matrix{Type: typ, Rows: 64, Cols: 512}
			for range w.Rows {
				w.Data = append(w.Data, randRow(r, typ, w.Cols)...)
			}
			x := randX(r, n, w.Cols)
			dst := make([]float32, n*w.Rows)
			if err := p.MatMul(dst, w, x, n); err != nil { // grows the scratch
				t.Fatal(err)
			}
			if a := testing.AllocsPerRun(20, func() { _ = p.MatMul(dst, w, x, n) }); a != 0 {
				t.Errorf("%s n=%d: MatMul allocates %v times per call", typ, n, a)
			}
		}
	}
	c := &countRanger{hits: make([]atomic.Int32, 100)}
	if a := testing.AllocsPerRun(20, func() { p.For(100, c) }); a != 0 {
		t.Errorf("For allocates %v times per call", a)
	}
}

func TestMatMulErrors(t *testing.T) {
	p := NewPool(1)
	defer p.Close()
	ok := Matrix{Type: quant.Q8_0, Rows: 2, Cols: 64, Data: make([]byte, 2*68)}
	x, dst := make([]float32, 64), make([]float32, 2)
	for _, c := range []struct {
		name string
		w    Matrix
		x    []float32
		dst  []float32
		n    int
		want string
	}{
		{"type", Matrix{Type: quant.Q5K, Rows: 2, Cols: 256, Data: make([]byte, 352)}, make([]float32, 256), dst, 1, "Q5_K weights is not supported"},
		{"blocks", Matrix{Type: quant.Q8_0, Rows: 2, Cols: 40, Data: make([]byte, 200)}, make([]float32, 40), dst, 1, "not a whole number of blocks"},
		{"data", Matrix{Type: quant.Q8_0, Rows: 2, Cols: 64, Data: make([]byte, 135)}, x, dst, 1, "hold 135 bytes, too few"},
		{"x", ok, x[:63], dst, 1, "input holds 63 values, too few"},
		{"dst", ok, x, dst[:1], 1, "output holds 1 values, too few"},
		{"n", ok, x, dst, 0, "tokens > 0"},
		{"cols", Matrix{Type: quant.F32, Rows: 1, Cols: 1 << 62, Data: make([]byte, 64)}, x, dst, 1, "too many to address"},
		{"overflow", Matrix{Type: quant.F32, Rows: 1 << 62, Cols: 1 << 20, Data: make([]byte, 64)}, x, dst, 1, "too few for"},
		{"rows", Matrix{Type: quant.F32, Rows: 0, Cols: 4}, x, dst, 1, "rows, cols and tokens > 0"},
	} {
		err := p.MatMul(c.dst, c.w, c.x, c.n)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	if !Supported(quant.Q4K) || Supported(quant.Q5_0) {
		t.Error("Supported disagrees with the kernels")
	}
}

func ExamplePool_MatMul() {
	p := NewPool(2)
	defer p.Close()
	// 2×3 F32 weights [[1 2 3] [4 5 6]] times the tokens [1 1 1] and [1 0 -1].
	w := Matrix{Type: quant.F32, Rows: 2, Cols: 3, Data: make([]byte, 24)}
	for i, v := range []float32{1, 2, 3, 4, 5, 6} {
		binary.LittleEndian.PutUint32(w.Data[4*i:], math.Float32bits(v))
	}
	dst := make([]float32, 4)
	if err := p.MatMul(dst, w, []float32{1, 1, 1, 1, 0, -1}, 2); err != nil {
		panic(err)
	}
	fmt.Println(dst)
	// Output: [6 15 -2 -2]
}

// TestInterleave checks MatMul on interleaved matrices (the lane kernels)
// against the plain layout with every kernel set, for mat-vec and for
// token counts that fill or do not fill the 8-token groups, and that
// Interleave leaves alone what it cannot interleave (rows not a multiple
// of 16).
func TestInterleave(t *testing.T) {
	defer func(a *kernelSet) { active = a }(active)
	r := rand.New(rand.NewPCG(9, 9))
	for i := range kernelSets {
		active = &kernelSets[i]
		p := NewPool(2)
		for _, typ := range []quant.Type{quant.Q4_0, quant.Q8_0} {
			for _, s := range []shape{{16, 32, 1}, {48, 64, 1}, {32, 256, 3}, {64, 128, 8}, {16, 96, 128}, {80, 64, 5}, {48, 96, 13}, {32, 64, 16}, {16, 64, 17}, {96, 64, 9}} {
				w := Matrix{Type: typ, Rows: s.rows, Cols: s.cols}
				for range s.rows {
					w.Data = append(w.Data, randRow(r, typ, s.cols)...)
				}
				iw := Interleave(w)
				if iw.Interleaved != (active.laneVec(typ) != nil) {
					t.Fatalf("%s: Interleave with the %s kernels gave Interleaved = %v", typ, active.name, iw.Interleaved)
				}
				x := randX(r, s.n, s.cols)
				want := runMatMul(t, p, w, x, s.n)
				got := runMatMul(t, p, iw, x, s.n)
				checkClose(t, fmt.Sprintf("%s %s %v", active.name, typ, s), got, want)
			}
		}
		p.Close()
		for _, rows := range []int{3, 4, 24} {
			odd := Matrix{Type: quant.Q8_0, Rows: rows, Cols: 32, Data: make([]byte, rows*34)}
			if Interleave(odd).Interleaved {
				t.Errorf("a matrix of %d rows was interleaved", rows)
			}
		}
		f := Matrix{Type: quant.F16, Rows: 4, Cols: 32, Data: make([]byte, 4*64)}
		if Interleave(f).Interleaved {
			t.Error("an F16 matrix was interleaved")
		}
	}
}

// TestMatMuls checks products of one input computed together against
// MatMul one at a time (the same kernels on the same quantized input, so
// bit for bit), the fallback for matrices that differ, the limit, and that
// it does not allocate.
func TestMatMuls(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	p := NewPool(2)
	defer p.Close()
	mk := func(typ quant.Type, rows, cols int) Matrix {
		w := Matrix{Type: typ, Rows: rows, Cols: cols}
		for range rows {
			w.Data = append(w.Data, randRow(r, typ, cols)...)
		}
		return Interleave(w)
	}
	for _, n := range []int{1, 5} {
		for _, set := range [][]Matrix{
			{mk(quant.Q4_0, 64, 256), mk(quant.Q4_0, 16, 256), mk(quant.Q4_0, 16, 256)},
			{mk(quant.Q8_0, 48, 256), mk(quant.Q8_0, 48, 256)},
			{mk(quant.Q8_0, 32, 64), mk(quant.Q8_0, 20, 64)}, // one interleaved, one not: one at a time
			{mk(quant.Q4K, 20, 256), mk(quant.Q6K, 20, 256)}, // differ: one at a time
			{mk(quant.F16, 8, 64), mk(quant.F16, 12, 64)},
		} {
			x := randX(r, n, set[0].Cols)
			ps := make([]Product, len(set))
			for i, w := range set {
				ps[i] = Product{Dst: make([]float32, n*w.Rows), W: w}
			}
			if err := p.MatMuls(x, n, ps...); err != nil {
				t.Fatal(err)
			}
			for i, w := range set {
				want := runMatMul(t, p, w, x, n)
				for k := range want {
					if math.Float32bits(ps[i].Dst[k]) != math.Float32bits(want[k]) {
						t.Fatalf("%s n=%d product %d output %d: %g together, %g alone", w.Type, n, i, k, ps[i].Dst[k], want[k])
					}
				}
			}
			if allocs := testing.AllocsPerRun(10, func() { _ = p.MatMuls(x, n, ps...) }); allocs != 0 {
				t.Errorf("%s n=%d: MatMuls allocates %.0f times per call", set[0].Type, n, allocs)
			}
		}
	}
	five := make([]Product, 5)
	if err := p.MatMuls(nil, 1, five...); err == nil || !strings.Contains(err.Error(), "at most 4") {
		t.Errorf("5 products: got %v", err)
	}
}

// TestInterleaveRefusals: degenerate matrices come back unchanged instead
// of panicking, and MatMul refuses an interleaved matrix it cannot have
// made rather than leave rows unwritten.
func TestInterleaveRefusals(t *testing.T) {
	for _, m := range []Matrix{
		{Type: quant.Q4_0, Rows: 4, Cols: 0},
		{Type: quant.Q4_0, Rows: -4, Cols: 32},
		{Type: quant.Q8_0, Rows: 0, Cols: 32},
	} {
		if Interleave(m).Interleaved {
			t.Errorf("%+v was interleaved", m)
		}
	}
	p := NewPool(1)
	defer p.Close()
	bad := Matrix{Type: quant.Q8_0, Rows: 8, Cols: 32, Data: make([]byte, 8*34), Interleaved: true}
	if err := p.MatMul(make([]float32, 8), bad, make([]float32, 32), 1); err == nil {
		t.Error("MatMul accepted an interleaved matrix of 8 rows")
	}
}
