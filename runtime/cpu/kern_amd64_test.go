//go:build amd64 && !purego

package cpu

import (
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"

	"github.com/leo-operator/leo/runtime/quant"
)

// BenchmarkTileKernel times the 4×4 VNNI kernel on cache-resident data:
// its compute ceiling, free of memory effects. GFLOP/s = 2·4·4·32 per block.
func BenchmarkTileKernel(b *testing.B) {
	ks := &kernelSets[len(kernelSets)-1]
	if ks.q40TileZ == nil {
		b.Log("this CPU has no AVX-512 VNNI: no tile kernel to time")
		return
	}
	r := rand.New(rand.NewPCG(1, 2))
	const nb = 64
	var w [4][]byte
	for i := range w {
		w[i] = randRow(r, quant.Q4_0, nb*32)
	}
	a := make([]byte, nb*q8Stride(4))
	az := make([]byte, q8Layout{g: 4, pair: true}.groupBytes(nb))
	x := randX(r, 4, nb*32)
	for t := range 4 {
		quantizeQ8Token(a, q8Layout{g: 4}, t, x[t*nb*32:(t+1)*nb*32], 8)
		quantizeQ8Token(az, q8Layout{g: 4, pair: true}, t, x[t*nb*32:(t+1)*nb*32], 8)
	}
	b.Run("q40", func(b *testing.B) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		c0 := threadCPU()
		for range b.N {
			_ = ks.q40Tile(w, a, nb, 18)
		}
		b.ReportMetric(float64(b.N)*nb*1024/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		b.ReportMetric(float64(b.N)*nb*1024/(threadCPU()-c0)/1e9, "GFLOP/cpu-s")
	})
	b.Run("q40zmm", func(b *testing.B) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		c0 := threadCPU()
		for range b.N {
			_ = ks.q40TileZ(w, az, nb, 18)
		}
		b.ReportMetric(float64(b.N)*nb*1024/(threadCPU()-c0)/1e9, "GFLOP/cpu-s")
	})
	b.Run("q80", func(b *testing.B) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		w8 := w
		for i := range w8 {
			w8[i] = randRow(r, quant.Q8_0, nb*32)
		}
		c0 := threadCPU()
		for range b.N {
			_ = ks.q80Tile(w8, a, nb, 34)
		}
		b.ReportMetric(float64(b.N)*nb*1024/(threadCPU()-c0)/1e9, "GFLOP/cpu-s")
	})
	b.Run("q40vec", func(b *testing.B) {
		coff, doff := q8Offsets(1, 0)
		a1 := make([]byte, nb*q8Stride(1))
		quantizeQ8Token(a1, q8Layout{g: 1}, 0, x[:nb*32], 8)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		c0 := threadCPU()
		for range b.N {
			_ = ks.q40Vec4(w, a1, q8Stride(1), coff, doff, nb, 18)
		}
		b.ReportMetric(float64(b.N)*nb*4*18/b.Elapsed().Seconds()/1e9, "GB/s")
		b.ReportMetric(float64(b.N)*nb*4*18/(threadCPU()-c0)/1e9, "GB/cpu-s")
	})
}

// threadCPU returns the CPU time this OS thread has used, in seconds: on a
// shared machine a steadier measure of a kernel than the wall clock.
func threadCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
