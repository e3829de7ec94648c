package cpu

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"

	"github.com/leo-operator/leo/runtime/quant"
)

// Benchmarks over TinyLlama-1.1B's matrix shapes (dim 2048, hidden 5632,
// 4 kv heads of 64, vocab 32000). MB/s counts weight bytes read per call;
// at n = 1 (generation) that is the figure to hold against the memory
// bandwidth (BenchmarkMemoryRead). At n = 128 (a prompt) the kernels are
// compute bound: GFLOP/s counts 2·rows·cols·n per call.
//
//	go test -run '^$' -bench . -benchtime 20x ./runtime/cpu

var benchShapes = []struct {
	name       string
	rows, cols int
}{
	{"q_o", 2048, 2048},
	{"k_v", 256, 2048},
	{"gate_up", 5632, 2048},
	{"down", 2048, 5632},
	{"output", 32000, 2048},
}

var benchWeights = map[string]Matrix{}

func benchMatrix(typ quant.Type, rows, cols int) Matrix {
	key := fmt.Sprint(typ, rows, cols)
	if w, ok := benchWeights[key]; ok {
		return w
	}
	r := rand.New(rand.NewPCG(uint64(rows), uint64(cols)))
	w := Matrix{Type: typ, Rows: rows, Cols: cols}
	// A few distinct random rows repeated: the values do not change the
	// speed, and generating 32000 random rows would dominate the run.
	var distinct [][]byte
	for range 64 {
		distinct = append(distinct, randRow(r, typ, cols))
	}
	rb, _ := typ.RowBytes(cols)
	w.Data = make([]byte, 0, rows*rb)
	for i := range rows {
		w.Data = append(w.Data, distinct[i%len(distinct)]...)
	}
	benchWeights[key] = w
	return w
}

func BenchmarkMatMul(b *testing.B) {
	for _, typ := range []quant.Type{quant.Q4_0, quant.Q8_0, quant.Q4K, quant.Q6K, quant.F16} {
		for _, s := range benchShapes {
			for _, n := range []int{1, 128} {
				for _, threads := range []int{1, 2} {
					b.Run(fmt.Sprintf("%s/%s_%dx%d/n=%d/threads=%d", typ, s.name, s.rows, s.cols, n, threads), func(b *testing.B) {
						benchMatMul(b, typ, s.rows, s.cols, n, threads)
					})
				}
			}
		}
	}
}

func benchMatMul(b *testing.B, typ quant.Type, rows, cols, n, threads int) {
	w := Interleave(benchMatrix(typ, rows, cols)) // as the model's weights are
	x := randX(rand.New(rand.NewPCG(1, 1)), n, cols)
	dst := make([]float32, n*rows)
	p := NewPool(threads)
	defer p.Close()
	if err := p.MatMul(dst, w, x, n); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(w.Data)))
	b.ResetTimer()
	c0 := processCPU()
	for range b.N {
		if err := p.MatMul(dst, w, x, n); err != nil {
			b.Fatal(err)
		}
	}
	// CPU time (all threads) per call: on a shared, overloaded machine the
	// wall clock also counts time the threads spent descheduled.
	cpu := processCPU() - c0
	b.ReportMetric(cpu/float64(b.N)*1e6, "cpu-µs/op")
	if n > 1 {
		flop := 2 * float64(rows) * float64(cols) * float64(n) * float64(b.N)
		b.ReportMetric(flop/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		b.ReportMetric(flop/cpu/1e9, "GFLOP/cpu-s")
	}
}

// dotRanger streams chunks of buf through DotF32 (one load per element).
type dotRanger struct {
	buf  []float32
	sink [64]float32
}

func (d *dotRanger) Range(start, end int) {
	const chunk = 1 << 16
	for c := start; c < end; c++ {
		s := d.buf[c*chunk : (c+1)*chunk]
		d.sink[c%64] += DotF32(s, s)
	}
}

// BenchmarkMemoryRead measures this machine's read bandwidth: a 512 MiB
// buffer (far beyond the caches) streamed once per iteration.
func BenchmarkMemoryRead(b *testing.B) {
	buf := make([]float32, 128<<20)
	for i := range buf {
		buf[i] = 1
	}
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			p := NewPool(threads)
			defer p.Close()
			d := &dotRanger{buf: buf}
			b.SetBytes(int64(len(buf)) * 4)
			for range b.N {
				p.For(len(buf)>>16, d)
			}
		})
	}
}

// processCPU returns the CPU time this process has used, in seconds.
func processCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// BenchmarkMatVecDRAM measures generation's case: a mat-vec over weights
// far larger than the caches (as a model's are), all rows distinct, so
// the figure is the kernel's DRAM streaming rate in weight bytes.
func BenchmarkMatVecDRAM(b *testing.B) {
	for _, typ := range []quant.Type{quant.Q4_0, quant.Q8_0} {
		for _, il := range []bool{false, true} {
			for _, threads := range []int{1, 2} {
				b.Run(fmt.Sprintf("%s/interleaved=%v/threads=%d", typ, il, threads), func(b *testing.B) {
					const rows, cols = 65536, 2048
					rb, _ := typ.RowBytes(cols)
					data := make([]byte, rows*rb)
					r := rand.New(rand.NewPCG(7, 7))
					for i := 0; i+8 <= len(data); i += 8 {
						binary.LittleEndian.PutUint64(data[i:], r.Uint64())
					}
					for blk := 0; blk < len(data); blk += typ.BlockBytes() {
						binary.LittleEndian.PutUint16(data[blk:], 0x2c00) // d = 1/16
					}
					w := Matrix{Type: typ, Rows: rows, Cols: cols, Data: data}
					if il {
						w = Interleave(w)
					}
					x := randX(r, 1, cols)
					dst := make([]float32, rows)
					p := NewPool(threads)
					defer p.Close()
					b.SetBytes(int64(len(data)))
					b.ResetTimer()
					for range b.N {
						if err := p.MatMul(dst, w, x, 1); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}
