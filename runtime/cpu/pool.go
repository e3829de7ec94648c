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
// too instead of waiting idle. Work is handed out in chunks, so a thread
// slowed down by a noisy neighbour simply takes fewer, and a job is done
// when its chunks are, whoever ran them: the caller never waits for a
// worker that has not been scheduled yet (on a server, request handlers
// share the threads; a worker stuck in a run queue behind them must not
// stall every kernel).
//
// A Pool runs one call at a time (calls from several goroutines are
// serialised); a body must not call back into its own Pool.
type Pool struct {
	threads int
	mu      sync.Mutex // one MatMul/For at a time

	// the current job, set by run before it publishes state; read by a
	// thread only after it claimed a chunk of that job, so never while
	// run sets them for the next one (which waits for all chunks done)
	body  Ranger
	grain int // indices per chunk
	limit int // end of the index range

	// state is the job's generation (high 32 bits), its number of chunks
	// (next 16) and the next chunk to claim (low 16): a chunk is claimed
	// by a compare-and-swap, which fails for a late worker that saw an
	// earlier job. done counts the job's finished chunks.
	state atomic.Uint64
	done  atomic.Int64
	gen   uint32 // the current job's generation (run's own copy)

	// Idle workers spin on state's generation for a moment before they
	// park on their wake channel (parked says which did).
	wake   []chan struct{} // one per background worker
	parked []atomic.Bool

	multi  multiJob  // MatMul's and MatMuls' body, reused
	quant  quantJob  // activation quantization's body, reused
	act    []byte    // quantized activations, grown once
	xr     []float32 // activations rounded to F16/BF16, grown once
	closed atomic.Bool

	// solo are single-threaded pools, one per thread, for work that a
	// thread does alone (Backend.Parts); nil in a pool of one thread.
	solo []*Pool
}

// maxChunks is the most chunks state can count.
const maxChunks = 1<<16 - 1

// spinFor is how long an idle worker keeps looking for the next job
// before it parks. A forward pass is a hundred or more parallel kernels
// with microseconds of serial work between them, and waking a parked
// goroutine takes tens of microseconds on a busy VM: spinning through the
// gaps keeps both threads on the kernels. The gaps are not always short:
// on a server the calling goroutine shares its thread with the request
// handlers and may run them for a few hundred microseconds between two
// kernels. With 50 µs a worker parked in such gaps and then missed the
// start of the next kernels (16 streams over HTTP lost about 20% against
// the engine alone; with 1 ms, about 7%, the handlers' own CPU time). A
// millisecond of spinning (with Gosched, so it yields to anything ready)
// after the last kernel of a burst is the price.
const spinFor = time.Millisecond

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
	if threads > 1 {
		for range threads {
			p.solo = append(p.solo, NewPool(1))
		}
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
	p.start(0) // a job of no chunks: the workers see closed
}

// start publishes a job of chunks chunks (or Close) to the workers: a new
// generation in state, then a wake-up for those that parked. A worker
// parks only after setting parked and seeing the generation unchanged, so
// it either sees the new one or gets a wake-up.
func (p *Pool) start(chunks int) {
	p.gen++
	p.done.Store(0)
	p.state.Store(uint64(p.gen)<<32 | uint64(chunks)<<16)
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
	if chunks > maxChunks {
		grain = (limit + maxChunks - 1) / maxChunks
		chunks = (limit + grain - 1) / grain
	}
	if chunks <= 1 || p.threads == 1 || p.closed.Load() {
		body.Range(0, limit)
		return
	}
	p.body, p.grain, p.limit = body, grain, limit
	p.start(chunks)
	p.work(p.gen)
	// The others finish the chunks they took; yield rather than spin if
	// one of them is slow (descheduled).
	for spins := 0; p.done.Load() != int64(chunks); spins++ {
		if spins > 100 {
			runtime.Gosched()
		}
	}
	p.body = nil
}

// work runs chunks of job gen until none are left to claim (or a later
// job has started: a worker that woke late).
func (p *Pool) work(gen uint32) {
	for {
		s := p.state.Load()
		n, c := int(s>>16&maxChunks), int(s&maxChunks)
		if uint32(s>>32) != gen || c >= n {
			return
		}
		if !p.state.CompareAndSwap(s, s+1) {
			continue
		}
		start := c * p.grain
		p.body.Range(start, min(start+p.grain, p.limit))
		p.done.Add(1)
	}
}

func (p *Pool) worker(i int) {
	var seen uint32 // the generation is 0 when the pool starts
	for {
		seen = p.awaitJob(i, seen)
		if p.closed.Load() {
			return
		}
		p.work(seen)
	}
}

// awaitJob returns the generation of the next job after seen: spinning
// for spinFor, then parked on the worker's wake channel.
func (p *Pool) awaitJob(i int, seen uint32) uint32 {
	gen := func() uint32 { return uint32(p.state.Load() >> 32) }
	deadline := time.Now().Add(spinFor)
	for n := 1; ; n++ {
		if g := gen(); g != seen {
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
		if g := gen(); g != seen {
			p.parked[i].Store(false)
			return g
		}
		<-p.wake[i]
		p.parked[i].Store(false)
		if g := gen(); g != seen {
			return g
		}
		// A stale wake-up from an earlier job: park again.
	}
}
