package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Ranger is a body of work for Pool.For: Range(start, end) handles the
// indices [start, end). Pass a long-lived value (a pointer to a struct the
// caller keeps) so that calling For does not allocate.
type Ranger interface {
	Range(start, end int)
}

// Pool runs kernels on a fixed set of threads: threads-1 goroutines that
// live until Close, plus the goroutine that calls MatMul or For, which works
// too instead of waiting idle. Work is handed out in chunks from an atomic
// counter, so a thread slowed down by a noisy neighbour simply takes fewer.
//
// A Pool runs one call at a time (calls from several goroutines are
// serialised); a body must not call back into its own Pool.
type Pool struct {
	threads int
	mu      sync.Mutex // one MatMul/For at a time

	// the current job, set by run before waking the workers
	body  Ranger
	n     int          // number of chunks
	grain int          // indices per chunk
	limit int          // end of the index range
	next  atomic.Int64 // next chunk to take

	wake []chan struct{} // one per background worker
	done sync.WaitGroup

	multi  multiJob  // MatMul's and MatMuls' body, reused
	quant  quantJob  // activation quantization's body, reused
	act    []byte    // quantized activations, grown once
	xr     []float32 // activations rounded to F16/BF16, grown once
	closed bool
}

// NewPool starts a pool of threads threads (GOMAXPROCS when threads < 1).
func NewPool(threads int) *Pool {
	if threads < 1 {
		threads = runtime.GOMAXPROCS(0)
	}
	p := &Pool{threads: threads}
	p.quant.p = p
	p.wake = make([]chan struct{}, threads-1)
	for i := range p.wake {
		p.wake[i] = make(chan struct{}, 1)
		go p.worker(p.wake[i])
	}
	return p
}

// Threads returns the number of threads the pool computes with.
func (p *Pool) Threads() int { return p.threads }

// Close stops the pool's goroutines. The pool must not be used afterwards.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	for _, c := range p.wake {
		close(c)
	}
}

// For runs body.Range over [0, n), split into chunks across the pool's
// threads, and returns when all of it is done. It does not allocate.
func (p *Pool) For(n int, body Ranger) {
	if n <= 0 {
		return
	}
	// About four chunks per thread balances load without much counter traffic.
	grain := (n + 4*p.threads - 1) / (4 * p.threads)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.run(n, grain, body)
}

// run executes body over [0, limit) in chunks of grain; p.mu is held.
func (p *Pool) run(limit, grain int, body Ranger) {
	chunks := (limit + grain - 1) / grain
	if chunks <= 1 || p.threads == 1 || p.closed {
		body.Range(0, limit)
		return
	}
	p.body, p.n, p.grain, p.limit = body, chunks, grain, limit
	p.next.Store(0)
	helpers := min(len(p.wake), chunks-1)
	p.done.Add(helpers)
	for _, c := range p.wake[:helpers] {
		c <- struct{}{}
	}
	p.work()
	p.done.Wait()
	p.body = nil
}

// work takes chunks of the current job until none are left.
func (p *Pool) work() {
	for {
		c := int(p.next.Add(1) - 1)
		if c >= p.n {
			return
		}
		start := c * p.grain
		p.body.Range(start, min(start+p.grain, p.limit))
	}
}

func (p *Pool) worker(wake chan struct{}) {
	for range wake {
		p.work()
		p.done.Done()
	}
}
