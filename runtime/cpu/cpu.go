// Package cpu is leo-runtime's CPU backend: matrix products of GGML-format
// weights (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K) with float32
// activations, a worker pool to run them and other work on all cores, and a
// few float32 vector kernels.
//
// As in llama.cpp, activations are quantized per token to 8 bits (32-column
// blocks for Q4_0/Q8_0 weights, 256-column Q8_K blocks for Q4_K/Q6_K) and
// the products are integer; F16, BF16 and F32 weights multiply float32
// activations. On amd64 the kernels are assembly (AVX-512 VNNI where the
// CPU has it, else AVX2+FMA+F16C), chosen at start-up; ref.go holds the
// pure-Go kernels that define their results and run everywhere else (and
// with the build tag purego).
package cpu

import (
	"fmt"
	"math"

	"github.com/leo-operator/leo/runtime/quant"
)

// Matrix is a weight matrix in GGML's row-major layout: row r holds Cols
// elements of Type in bytes [r*RowBytes, (r+1)*RowBytes) of Data, RowBytes
// being Type.RowBytes(Cols).
type Matrix struct {
	Type       quant.Type
	Rows, Cols int
	Data       []byte
	// Interleaved says Data is in Interleave's layout instead.
	Interleaved bool
}

// Interleave returns m re-laid out for the lane kernels when the CPU has
// them (AVX-512 VNNI): Q4_0 and Q8_0 matrices whose rows are a multiple
// of sixteen, in groups of sixteen rows whose blocks are interleaved so
// that one instruction works on sixteen rows (lanes.go). The kernels then also read
// memory front to back, which the hardware prefetchers follow at full
// bandwidth. The copy is as big as m. Other matrices come back as they are.
func Interleave(m Matrix) Matrix {
	if m.Interleaved || (m.Type != quant.Q4_0 && m.Type != quant.Q8_0) || m.Rows <= 0 || m.Cols <= 0 || m.Rows%laneGroupRows != 0 || active.laneVec(m.Type) == nil {
		return m
	}
	rowBytes, err := m.Type.RowBytes(m.Cols)
	if err != nil || len(m.Data)/rowBytes < m.Rows {
		return m
	}
	m.Data, m.Interleaved = interleaveLanes(m, rowBytes), true
	return m
}

// Supported reports whether MatMul computes with weights of type t.
func Supported(t quant.Type) bool {
	switch t {
	case quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q4_0, quant.Q4K, quant.Q6K:
		return true
	}
	return false
}

// MatMul computes dst[t*w.Rows+r] = Σ_c W[r][c]·x[t*w.Cols+c] for the n
// tokens t in [0, n): a matrix-vector product when n = 1 (generation), a
// matrix-matrix product when n > 1 (prompt processing). It quantizes x into
// scratch the pool owns (grown to the largest size seen, then reused) and
// allocates nothing itself. It returns an error, computing nothing, when
// the type is not supported or a size does not match.
func (p *Pool) MatMul(dst []float32, w Matrix, x []float32, n int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.multi.jobs[0] = matMulJob{}
	if err := p.setup(&p.multi.jobs[0], dst, w, x, n); err != nil {
		return err
	}
	p.prepareInput(&p.multi.jobs[0])
	return p.runJobs(1)
}

// Product is one of several matrix products of the same input.
type Product struct {
	Dst []float32
	W   Matrix
}

// MaxProducts is the most products MatMuls takes at once.
const MaxProducts = 4

// MatMuls computes the products of the same input x (n tokens), as
// MatMul does for each, but quantizing x once and running all of them in
// one pass over the threads (one wake-up and one wait instead of one per
// product) when the matrices share their type and width, as a layer's
// query/key/value or gate/up projections do. It does not allocate.
func (p *Pool) MatMuls(x []float32, n int, ps ...Product) error {
	if len(ps) > MaxProducts {
		return fmt.Errorf("cpu: MatMuls takes at most %d products, got %d", MaxProducts, len(ps))
	}
	for i := 1; i < len(ps); i++ {
		a, b := ps[0].W, ps[i].W
		if a.Type != b.Type || a.Cols != b.Cols || a.Interleaved != b.Interleaved {
			for _, pr := range ps {
				if err := p.MatMul(pr.Dst, pr.W, x, n); err != nil {
					return err
				}
			}
			return nil
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, pr := range ps {
		j := &p.multi.jobs[i]
		*j = matMulJob{}
		if err := p.setup(j, pr.Dst, pr.W, x, n); err != nil {
			for k := 0; k < i; k++ { // keep no references to the caller's memory
				p.multi.jobs[k] = matMulJob{}
			}
			return err
		}
		if i == 0 {
			p.prepareInput(j)
		} else { // same input, same layout: share the quantized tokens
			j.act, j.x = p.multi.jobs[0].act, p.multi.jobs[0].x
		}
	}
	return p.runJobs(len(ps))
}

// setup checks one product and fills in its job, all but the input.
func (p *Pool) setup(j *matMulJob, dst []float32, w Matrix, x []float32, n int) error {
	if !Supported(w.Type) {
		return fmt.Errorf("cpu: MatMul of %s weights is not supported; use F32, F16, BF16, Q8_0, Q4_0, Q4_K or Q6_K", w.Type)
	}
	if w.Rows <= 0 || w.Cols <= 0 || n <= 0 {
		return fmt.Errorf("cpu: MatMul needs rows, cols and tokens > 0, got %d×%d weights and %d tokens", w.Rows, w.Cols, n)
	}
	if w.Cols/w.Type.BlockElems() > math.MaxInt/w.Type.BlockBytes() {
		return fmt.Errorf("cpu: MatMul weights have %d columns, too many to address", w.Cols)
	}
	rowBytes, err := w.Type.RowBytes(w.Cols)
	if err != nil {
		return fmt.Errorf("cpu: MatMul weights: %w", err)
	}
	// Divisions, not products: sizes from a file must not overflow.
	if len(w.Data)/rowBytes < w.Rows {
		return fmt.Errorf("cpu: MatMul weights hold %d bytes, too few for %d rows of %d %s columns (%d bytes a row)", len(w.Data), w.Rows, w.Cols, w.Type, rowBytes)
	}
	if len(x)/w.Cols < n {
		return fmt.Errorf("cpu: MatMul input holds %d values, too few for %d tokens of %d columns", len(x), n, w.Cols)
	}
	if len(dst)/w.Rows < n {
		return fmt.Errorf("cpu: MatMul output holds %d values, too few for %d tokens of %d rows", len(dst), n, w.Rows)
	}
	ks := active
	if w.Interleaved && (ks.laneVec(w.Type) == nil || w.Rows%laneGroupRows != 0) {
		return fmt.Errorf("cpu: MatMul of an interleaved %d-row matrix: only Interleave's results (rows a multiple of %d, these kernels) can be multiplied", w.Rows, laneGroupRows)
	}
	*j = matMulJob{p: p, ks: ks, w: w, rowBytes: rowBytes, x: x, n: n, dst: dst, group: 1}
	switch {
	case w.Interleaved:
		j.nb = w.Cols / 32
		if n > 1 {
			j.group = laneTokens
		}
		j.stride = j.group * laneTokBytes // bytes from a token's block to its next
		j.tokBytes = j.nb * j.stride      // bytes per group of tokens
	case w.Type == quant.Q4_0 || w.Type == quant.Q8_0:
		j.nb = w.Cols / 32
		switch {
		case n > 1 && ks.q8TileZ(w.Type) != nil && j.nb%2 == 0:
			j.layout = q8Layout{g: 4, pair: true}
		case n > 1 && ks.q8Tile(w.Type) != nil:
			j.layout = q8Layout{g: 4}
		default:
			j.layout = q8Layout{g: 1}
		}
		j.group = j.layout.g
		j.stride = q8Stride(j.group)
		j.tokBytes = j.layout.groupBytes(j.nb)
	case w.Type == quant.Q4K || w.Type == quant.Q6K:
		j.nb = w.Cols / 256
		j.tokBytes = j.nb * q8KStride
	}
	// Each thread is best served by long runs of consecutive rows (the
	// prefetchers follow them), a few per thread so that a slowed thread
	// can be helped. (Interleaved matrices keep the rows of a run in L1
	// for all tokens; see laneRows.)
	j.chunk = chunkRows
	if n == 1 || w.Interleaved {
		j.chunk = max(chunkRows, (w.Rows/(4*p.threads))&^15)
	}
	j.chunks = (w.Rows + j.chunk - 1) / j.chunk
	return nil
}

// prepareInput quantizes (or rounds) the job's input as its weights need.
func (p *Pool) prepareInput(j *matMulJob) {
	switch {
	case j.nb > 0: // the 8-bit families
		groups := (j.n + j.group - 1) / j.group
		p.quantize(j, groups*j.tokBytes)
	case j.w.Type == quant.F16 || j.w.Type == quant.BF16:
		j.x = p.roundActivations(j.w.Type, j.x[:j.n*j.w.Cols])
	}
}

// runJobs computes the first k jobs' row chunks on all threads, then
// drops the references to the callers' memory.
func (p *Pool) runJobs(k int) error {
	m := &p.multi
	m.k, m.total = k, 0
	for i := 0; i < k; i++ {
		m.total += m.jobs[i].chunks
	}
	p.run(m.total, 1, m)
	for i := 0; i < k; i++ {
		j := &m.jobs[i]
		j.x, j.dst, j.w.Data = nil, nil, nil
	}
	return nil
}

// multiJob is the chunks of several jobs in a row: chunk c of the whole is
// chunk c − (chunks of the jobs before) of its job.
type multiJob struct {
	jobs  [MaxProducts]matMulJob
	k     int
	total int
}

func (m *multiJob) Range(start, end int) {
	base := 0
	for i := 0; i < m.k && start < end; i++ {
		j := &m.jobs[i]
		if start < base+j.chunks {
			e := min(end, base+j.chunks)
			j.Range(start-base, e-base)
			start = e
		}
		base += j.chunks
	}
}

// chunkRows is the rows one unit of MatMul work covers: four 4-row tiles,
// enough to amortise taking the chunk, small enough to balance two threads
// over the 256 rows of a k/v projection.
const chunkRows = 16

// quantize grows the activation scratch to size bytes and fills it with
// j's tokens, on all threads when there are many.
func (p *Pool) quantize(j *matMulJob, size int) {
	if cap(p.act) < size {
		p.act = make([]byte, size)
	}
	j.act = p.act[:size]
	p.quant.j = j
	per := max(1, 1<<14/j.w.Cols) // tokens worth waking a thread for
	p.run(j.n, per, &p.quant)
	p.quant.j = nil
	if j.group > 1 {
		// Padding tokens of the last group: zero, so their (discarded)
		// results are finite and the scratch's old contents never matter.
		for t := j.n; t%j.group != 0; t++ {
			if j.w.Interleaved {
				base := j.act[t/j.group*j.tokBytes+t%j.group*laneTokBytes:]
				for b := 0; b < j.nb; b++ {
					clear(base[b*j.stride : b*j.stride+laneTokBytes])
				}
				continue
			}
			clearQ8Token(j.act[t/j.group*j.tokBytes:], j.layout, t%j.group, j.nb)
		}
	}
}

// roundActivations returns x rounded to the precision of t (F16 or BF16)
// in pool-owned scratch. llama.cpp converts activations to the weights'
// type before F16 and BF16 products (ggml's vec_dot_type), and rounding
// them the same way keeps leo's results equal to its on the same file;
// the products themselves stay float32 (exact for these precisions).
func (p *Pool) roundActivations(t quant.Type, x []float32) []float32 {
	if cap(p.xr) < len(x) {
		p.xr = make([]float32, len(x))
	}
	xr := p.xr[:len(x)]
	if t == quant.F16 {
		for i, v := range x {
			xr[i] = quant.FP16ToFloat32(quant.Float32ToFP16(v))
		}
	} else {
		for i, v := range x {
			xr[i] = quant.BF16ToFloat32(quant.Float32ToBF16(v))
		}
	}
	return xr
}

// quantJob quantizes a range of tokens of the current MatMul.
type quantJob struct {
	p *Pool
	j *matMulJob
}

func (q *quantJob) Range(start, end int) {
	j := q.j
	k := int32(8)
	if j.w.Type == quant.Q8_0 {
		k = 128
	}
	for t := start; t < end; t++ {
		xt := j.x[t*j.w.Cols : (t+1)*j.w.Cols]
		if j.w.Interleaved {
			j.ks.quantLane(j.act[t/j.group*j.tokBytes+t%j.group*laneTokBytes:], j.stride, xt, k)
			continue
		}
		switch j.w.Type {
		case quant.Q4_0, quant.Q8_0:
			quantizeQ8Token(j.act[t/j.group*j.tokBytes:], j.layout, t%j.group, xt, k)
		default:
			quantizeQ8KToken(j.act[t*j.tokBytes:], xt)
		}
	}
}

// matMulJob is one MatMul in progress; Range computes a range of row chunks
// for all tokens.
type matMulJob struct {
	p        *Pool
	ks       *kernelSet
	w        Matrix
	rowBytes int
	x        []float32
	n        int
	dst      []float32
	act      []byte   // quantized activations
	nb       int      // blocks per row
	layout   q8Layout // of act, for Q4_0 and Q8_0
	group    int      // tokens per group in act
	stride   int      // bytes per block of a group in act
	tokBytes int      // bytes per group (per token for Q8_K) in act
	chunk    int      // rows per unit of work, a multiple of 16
	chunks   int      // units of work
}

func (j *matMulJob) Range(start, end int) {
	for c := start; c < end; c++ {
		r0 := c * j.chunk
		r1 := min(r0+j.chunk, j.w.Rows)
		if j.w.Interleaved {
			j.laneRows(r0, r1)
			continue
		}
		switch j.w.Type {
		case quant.Q4_0, quant.Q8_0:
			j.q8Rows(r0, r1)
		case quant.Q4K, quant.Q6K:
			j.kRows(r0, r1)
		default:
			j.floatRows(r0, r1)
		}
	}
}

// rows4 returns the 4 rows of the tile at r (repeating the last row past
// the end of the matrix: their results are dropped), how many are real,
// and the distance from a row's block to its next (wstep).
func (j *matMulJob) rows4(r int, rows *[4][]byte) (nr, wstep int) {
	nr = min(4, j.w.Rows-r)
	for i := range rows {
		rr := r + min(i, nr-1)
		rows[i] = j.w.Data[rr*j.rowBytes : (rr+1)*j.rowBytes]
	}
	return nr, j.w.Type.BlockBytes()
}

func (j *matMulJob) q8Rows(r0, r1 int) {
	var rows [4][]byte
	if j.group == 4 {
		tile := j.ks.q8Tile(j.w.Type)
		if j.layout.pair {
			tile = j.ks.q8TileZ(j.w.Type)
		}
		for g := 0; g*4 < j.n; g++ {
			a := j.act[g*j.tokBytes : (g+1)*j.tokBytes]
			for r := r0; r < r1; r += 4 {
				nr, wstep := j.rows4(r, &rows)
				out := tile(rows, a, j.nb, wstep)
				for t := 0; t < min(4, j.n-4*g); t++ {
					copy(j.dst[(4*g+t)*j.w.Rows+r:][:nr], out[4*t:4*t+nr])
				}
			}
		}
		return
	}
	vec := j.ks.q8Vec4(j.w.Type)
	coff, doff := q8Offsets(1, 0)
	for r := r0; r < r1; r += 4 {
		nr, wstep := j.rows4(r, &rows)
		for t := 0; t < j.n; t++ {
			out := vec(rows, j.act[t*j.tokBytes:(t+1)*j.tokBytes], j.stride, coff, doff, j.nb, wstep)
			copy(j.dst[t*j.w.Rows+r:][:nr], out[:nr])
		}
	}
}

// laneRows computes rows [r0, r1) (multiples of 16) of an interleaved
// matrix for all tokens. The many-token kernel keeps each group of rows in
// L1 while it goes over the token groups.
func (j *matMulJob) laneRows(r0, r1 int) {
	w := j.w.Data[r0*j.rowBytes : r1*j.rowBytes]
	groups := (r1 - r0) / laneGroupRows
	if j.n == 1 {
		j.ks.laneVec(j.w.Type)(w, j.act, j.nb, groups, j.dst[r0:r1])
		return
	}
	j.ks.laneRows(j.w.Type)(w, j.act, j.nb, groups, j.dst[r0:], j.w.Rows, j.n, j.tokBytes)
}

func (j *matMulJob) kRows(r0, r1 int) {
	dot := j.ks.q6KVec1
	if j.w.Type == quant.Q4K {
		dot = j.ks.q4KVec1
	}
	for r := r0; r < r1; r++ {
		row := j.w.Data[r*j.rowBytes : (r+1)*j.rowBytes]
		for t := 0; t < j.n; t++ {
			j.dst[t*j.w.Rows+r] = dot(row, j.act[t*j.tokBytes:(t+1)*j.tokBytes], j.nb)
		}
	}
}

// floatTiles is floatRows with a 4 rows × 4 tokens kernel: each block of
// the rows is converted once for four tokens. A last tile of fewer than
// four tokens repeats the last one and drops its results.
func (j *matMulJob) floatTiles(r0, r1 int, tile fTile4Func) {
	var rows [4][]byte
	var x [4][]float32
	cols := j.w.Cols
	for r := r0; r < r1; r += 4 {
		nr, _ := j.rows4(r, &rows)
		for t0 := 0; t0 < j.n; t0 += 4 {
			for i := range x {
				t := min(t0+i, j.n-1)
				x[i] = j.x[t*cols : (t+1)*cols]
			}
			out := tile(rows, x)
			for i := 0; i < min(4, j.n-t0); i++ {
				copy(j.dst[(t0+i)*j.w.Rows+r:][:nr], out[4*i:4*i+nr])
			}
		}
	}
}

func (j *matMulJob) floatRows(r0, r1 int) {
	vec, tile := j.ks.f32Vec4, j.ks.f32Tile4
	switch j.w.Type {
	case quant.F16:
		vec, tile = j.ks.f16Vec4, j.ks.f16Tile4
	case quant.BF16:
		vec, tile = j.ks.bf16Vec4, nil
	}
	var rows [4][]byte
	if tile != nil && j.n > 1 {
		j.floatTiles(r0, r1, tile)
		return
	}
	for r := r0; r < r1; r += 4 {
		nr, _ := j.rows4(r, &rows)
		for t := 0; t < j.n; t++ {
			out := vec(rows, j.x[t*j.w.Cols:(t+1)*j.w.Cols])
			copy(j.dst[t*j.w.Rows+r:][:nr], out[:nr])
		}
	}
}
