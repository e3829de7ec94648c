package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
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

	// Starting a job bumps gen; idle workers spin on it for a moment
	// before they park on their wake channel (parked says which did).
	// pending counts the workers still on the current job.
	gen     atomic.Uint64
	pending atomic.Int32
	wake    []chan struct{} // one per background worker
	parked  []atomic.Bool

	multi  multiJob  // MatMul's and MatMuls' body, reused
	quant  quantJob  // activation quantization's body, reused
	act    []byte    // quantized activations, grown once
	xr     []float32 // activations rounded to F16/BF16, grown once
	closed atomic.Bool
}

// spinFor is how long an idle worker keeps looking for the next job
// before it parks. A forward pass is a hundred or more parallel kernels
// with microseconds of serial work between them, and waking a parked
// goroutine takes tens of microseconds on a busy VM: spinning through the
// gaps keeps both threads on the kernels.
const spinFor = 50 * time.Microsecond

// NewPool starts a pool of threads threads (GOMAXPROCS when threads < 1).
func NewPool(threads int) *Pool {
	if threads < 1 {
		threads = runtime.GOMAXPROCS(0)
	}
	p := &Pool{threads: threads}
	p.quant.p = p
	p.wake = make([]chan struct{}, threads-1)
	p.parked = make([]atomic.Bool, threads-1)
	for i := range p.wake {
		p.wake[i] = make(chan struct{}, 1)
		go p.worker(i)
	}
	return p
}

// Threads returns the number of threads the pool computes with.
func (p *Pool) Threads() int { return p.threads }

// Close stops the pool's goroutines. The pool must not be used afterwards.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Swap(true) {
		return
	}
	p.start()
}

// start publishes a job (or Close) to the workers: bump gen, then wake
// those that parked. A worker parks only after setting parked and seeing
// gen unchanged, so it either sees the new gen or gets a wake-up.
func (p *Pool) start() {
	p.gen.Add(1)
	for i := range p.wake {
		if p.parked[i].Load() {
			select {
			case p.wake[i] <- struct{}{}:
			default: // a wake-up is already pending
			}
		}
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
	if chunks <= 1 || p.threads == 1 || p.closed.Load() {
		body.Range(0, limit)
		return
	}
	p.body, p.n, p.grain, p.limit = body, chunks, grain, limit
	p.next.Store(0)
	p.pending.Store(int32(len(p.wake)))
	p.start()
	p.work()
	// The others finish their last chunks; yield rather than spin if
	// one of them is slow (descheduled).
	for spins := 0; p.pending.Load() != 0; spins++ {
		if spins > 100 {
			runtime.Gosched()
		}
	}
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

func (p *Pool) worker(i int) {
	var seen uint64 // gen is 0 when the pool starts
	for {
		seen = p.awaitJob(i, seen)
		if p.closed.Load() {
			return
		}
		p.work()
		p.pending.Add(-1)
	}
}

// awaitJob returns the gen of the next job after seen: spinning for
// spinFor, then parked on the worker's wake channel.
func (p *Pool) awaitJob(i int, seen uint64) uint64 {
	deadline := time.Now().Add(spinFor)
	for n := 1; ; n++ {
		if g := p.gen.Load(); g != seen {
			return g
		}
		if n%64 == 0 {
			if time.Now().After(deadline) {
				break
			}
			// Let other goroutines (a server's request handlers) run
			// on this thread meanwhile.
			runtime.Gosched()
		}
	}
	for {
		p.parked[i].Store(true)
		if g := p.gen.Load(); g != seen {
			p.parked[i].Store(false)
			return g
		}
		<-p.wake[i]
		p.parked[i].Store(false)
		if g := p.gen.Load(); g != seen {
			return g
		}
		// A stale wake-up from an earlier job: park again.
	}
}
