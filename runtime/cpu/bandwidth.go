package cpu

import (
	"sync"
	"time"
)

// bandwidthJob reads a buffer with the SIMD dot kernel, one slice per
// chunk, so that the pool's threads stream memory as a mat-vec does.
type bandwidthJob struct {
	buf  []float32
	sink []float32 // one result per chunk, so the reads cannot be skipped
}

const bandwidthChunk = 1 << 16 // floats per chunk: 256 KiB

func (j *bandwidthJob) Range(start, end int) {
	for c := start; c < end; c++ {
		s := j.buf[c*bandwidthChunk : (c+1)*bandwidthChunk]
		j.sink[c] = DotF32(s, s)
	}
}

var bandwidthBuf = sync.OnceValue(func() []float32 {
	b := make([]float32, 256<<20/4) // 256 MiB: far beyond any cache
	for i := range b {
		b[i] = float32(i & 7)
	}
	return b
})

// MemoryBandwidth measures how many bytes per second the pool's threads
// read from memory: the best of five passes over a 256 MiB buffer.
func MemoryBandwidth(p *Pool) float64 {
	buf := bandwidthBuf()
	j := &bandwidthJob{buf: buf, sink: make([]float32, len(buf)/bandwidthChunk)}
	p.For(len(j.sink), j) // page in
	best := 0.0
	for i := 0; i < 5; i++ {
		start := time.Now()
		p.For(len(j.sink), j)
		if bw := float64(4*len(buf)) / time.Since(start).Seconds(); bw > best {
			best = bw
		}
	}
	return best
}
