package fetch

import (
	"context"
	"crypto/md5"  //nolint:gosec // S3's ETags are MD5; used to check, not to sign
	"crypto/sha1" //nolint:gosec // git's blob ids are SHA-1; used to check, not to sign
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// partialDir holds downloads in progress under the destination: NAME.part
// (the bytes, at their offsets) and NAME.part.json (which bytes are there).
const partialDir = ".leo-partial"

// partState is what a later run needs to resume a download.
type partState struct {
	Identity string  `json:"identity"`
	Size     int64   `json:"size"`
	SHA256   string  `json:"sha256,omitempty"`
	PartSize int64   `json:"part_size"`
	Done     []int64 `json:"done"` // bytes written from each part's start
}

// part is one ranged piece of a file: [off, end), end < 0 when the size is
// unknown (then the only part, read to the end).
type part struct {
	off, end int64
	done     atomic.Int64
}

func (p *part) complete() bool { return p.end >= 0 && p.off+p.done.Load() >= p.end }

// fileJob downloads one remote file into its partial file.
type fileJob struct {
	r       remote
	o       *Options
	run     *run
	partial string
	f       *os.File
	parts   []*part
	moved   chan struct{} // cap 1: a part advanced (wakes the hasher)
	sum     *digest
}

var errStalled = errors.New("stalled")

// download fetches r into dest (resuming a partial download), checks it
// and renames it into place; it returns the file's SHA-256. A checksum
// mismatch throws the bytes away and fetches the file once more.
func (rn *run) download(ctx context.Context, r remote) (string, error) {
	for attempt := 1; ; attempt++ {
		sum, err := rn.downloadOnce(ctx, r)
		var bad *checksumError
		if errors.As(err, &bad) && attempt == 1 {
			rn.o.Report.Event(Event{Kind: "retry", File: r.name, Attempt: 1, Error: err.Error() + "; fetching the whole file again"})
			continue
		}
		return sum, err
	}
}

// ErrChecksumMismatch is in the chain of the error a pull returns when a
// file's bytes, fetched twice, do not match the checksum or size its
// source publishes (errors.Is).
var ErrChecksumMismatch = errors.New("checksum mismatch")

// checksumError: the bytes do not match what the source published.
type checksumError struct{ name, what, want, got string }

func (e *checksumError) Is(target error) bool { return target == ErrChecksumMismatch }

func (e *checksumError) Error() string {
	return fmt.Sprintf("%s: %s mismatch: the source says %s, the downloaded bytes have %s", e.name, e.what, e.want, e.got)
}

func (rn *run) downloadOnce(ctx context.Context, r remote) (string, error) {
	j := &fileJob{r: r, o: rn.o, run: rn, moved: make(chan struct{}, 1), sum: newDigest(r),
		partial: filepath.Join(rn.dest, partialDir, filepath.FromSlash(r.name)+".part")}
	if err := os.MkdirAll(filepath.Dir(j.partial), 0o755); err != nil {
		return "", err
	}
	if err := j.open(); err != nil {
		return "", err
	}
	defer func() { _ = j.f.Close() }()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Save the state now and then, so that a killed process loses little.
	saved := make(chan struct{})
	go func() {
		defer close(saved)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = j.saveState()
			}
		}
	}()
	hashed := make(chan hashResult, 1)
	fetched := make(chan struct{})
	go func() { hashed <- j.hash(ctx, fetched) }()

	err := j.fetchParts(ctx)
	if err == nil {
		close(fetched)
		h := <-hashed
		err = h.err
		if err == nil {
			err = j.finish(h)
		}
		cancel()
		<-saved
		if err != nil {
			return "", err
		}
		return h.sha256, nil
	}
	cancel()
	<-saved
	if serr := j.saveState(); serr != nil {
		err = errors.Join(err, serr)
	}
	return "", err
}

// open creates or reopens the partial file, keeping the bytes a saved
// state vouches for when it was made for the same file.
func (j *fileJob) open() error {
	partSize := partSizeFor(j.r, j.o)
	st, keep := loadPartial(j.partial, j.r, partSize)
	flags := os.O_RDWR | os.O_CREATE
	if !keep {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(j.partial, flags, 0o644)
	if err != nil {
		return err
	}
	j.f = f
	if keep {
		if fi, err := f.Stat(); err != nil || fi.Size() != j.r.size {
			keep = false // the bytes are not what the state says
		}
	}
	if j.r.size >= 0 {
		if err := f.Truncate(j.r.size); err != nil {
			return err
		}
	}
	switch {
	case j.r.size < 0:
		j.parts = []*part{{off: 0, end: -1}}
	case partSize <= 0 || j.r.size <= partSize:
		j.parts = []*part{{off: 0, end: j.r.size}}
	default:
		for off := int64(0); off < j.r.size; off += partSize {
			j.parts = append(j.parts, &part{off: off, end: min(off+partSize, j.r.size)})
		}
	}
	if keep && len(st.Done) == len(j.parts) {
		for i, p := range j.parts {
			if d := st.Done[i]; d > 0 && d <= p.end-p.off {
				p.done.Store(d)
			}
		}
	}
	return nil
}

// partSizeFor is the part size a download of r uses: one part for what
// cannot be ranged (or has no known size).
func partSizeFor(r remote, o *Options) int64 {
	if !r.get.ranged() || r.size < 0 {
		return max(r.size, 0)
	}
	return o.PartSize
}

// loadPartial reads the saved state of an interrupted download of r and
// says whether it was made for the same bytes (identity, size, checksum)
// with the same parts.
func loadPartial(partial string, r remote, partSize int64) (partState, bool) {
	var st partState
	b, err := os.ReadFile(partial + ".json")
	if err != nil || json.Unmarshal(b, &st) != nil {
		return st, false
	}
	return st, st.Identity == r.get.identity() && st.Size == r.size && st.SHA256 == r.sha256 &&
		st.PartSize == partSize && r.get.ranged()
}

func (j *fileJob) saveState() error {
	st := partState{Identity: j.r.get.identity(), Size: j.r.size, SHA256: j.r.sha256}
	if len(j.parts) > 1 {
		st.PartSize = j.parts[0].end - j.parts[0].off
	} else {
		st.PartSize = max(j.r.size, 0)
	}
	for _, p := range j.parts {
		st.Done = append(st.Done, p.done.Load())
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return writeFileAtomic(j.partial+".json", b)
}

// fetchParts runs the parts on up to Connections connections.
func (j *fileJob) fetchParts(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan *part, len(j.parts))
	for _, p := range j.parts {
		if !p.complete() {
			next <- p
		}
	}
	close(next)
	var wg sync.WaitGroup
	for range min(j.o.Connections, len(j.parts)) {
		wg.Go(func() {
			for p := range next {
				if err := j.fetchPart(ctx, p); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx) // the first part's error, the caller's cancellation, or nil
}

// resetAfter is the progress that makes a failed attempt a success of
// sorts: a long download over a flaky link may fail many times, each after
// real progress, while one that dies after a trickle must not retry
// forever.
const resetAfter = 1 << 20

// fetchPart fetches what p lacks, retrying with backoff: failed attempts
// count towards Retries, except those that got resetAfter bytes or more,
// which start the count again.
func (j *fileJob) fetchPart(ctx context.Context, p *part) error {
	failures := 0
	for {
		if p.complete() {
			return nil
		}
		if d := p.done.Load(); d > 0 && !j.r.get.ranged() {
			p.done.Store(0) // the server cannot resume: start over
			j.run.transferred.Add(-d)
		}
		got, err := j.try(ctx, p)
		if err == nil {
			if p.end < 0 || p.complete() {
				return nil
			}
			err = fmt.Errorf("the connection ended at byte %d of %d", p.off+p.done.Load(), j.r.size)
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if isPermanent(err) {
			return fmt.Errorf("%s: %w", j.r.name, err)
		}
		if got >= resetAfter {
			failures = 0
		}
		failures++
		if failures > j.o.Retries {
			return fmt.Errorf("%s: giving up after %d failed attempts in a row: %w", j.r.name, failures, err)
		}
		delay := backoff(j.o.Backoff, failures)
		var ra *retryAfterError
		if errors.As(err, &ra) && ra.after > delay {
			delay = min(ra.after, 5*time.Minute)
		}
		j.o.Report.Event(Event{Kind: "retry", File: j.r.name, Attempt: failures, Error: err.Error(), RetryIn: delay.Seconds()})
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// backoff is base·2^(n-1), at most 30 s, with ±25% jitter so that many
// pods do not retry in step.
func backoff(base time.Duration, n int) time.Duration {
	d := base << min(n-1, 16)
	if d > 30*time.Second || d <= 0 {
		d = 30 * time.Second
	}
	return time.Duration(float64(d) * (0.75 + 0.5*rand.Float64()))
}

const copyBuf = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBuf); return &b }}

// try makes one request for the rest of p and writes what arrives at its
// offsets. A stall (no byte for StallTimeout) ends it with an error.
func (j *fileJob) try(ctx context.Context, p *part) (int64, error) {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(j.o.StallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()
	why := func(err error) error {
		if errors.Is(context.Cause(actx), errStalled) {
			return fmt.Errorf("no data for %s: the connection stalled", j.o.StallTimeout)
		}
		return err
	}
	start := p.off + p.done.Load()
	body, err := j.r.get.get(actx, start, p.end)
	if err != nil {
		return 0, why(err)
	}
	defer func() { _ = body.Close() }()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var got int64
	for {
		// Each read is written at once, from a small buffer that is
		// still in the CPU's cache: copying 1 MiB buffers into the page
		// cache cost this machine four times the system time of 16-64 KiB
		// ones (written hot).
		n, rerr := body.Read(buf)
		if n > 0 {
			stall.Reset(j.o.StallTimeout)
		}
		if p.end >= 0 {
			n = int(min(int64(n), p.end-start-got)) // never past the part
		}
		if n > 0 {
			if _, werr := j.f.WriteAt(buf[:n], start+got); werr != nil {
				return got, permanent("writing %s: %w", j.partial, werr) // %w: errors.Is(err, syscall.ENOSPC)
			}
			j.sum.add(start+got, buf[:n])
			got += int64(n)
			p.done.Add(int64(n))
			j.run.transferred.Add(int64(n))
			select {
			case j.moved <- struct{}{}:
			default:
			}
		}
		switch {
		case errors.Is(rerr, io.EOF):
			return got, nil
		case errors.Is(rerr, io.ErrUnexpectedEOF):
			return got, fmt.Errorf("the connection ended early at byte %d (%w)", start+got, rerr)
		case rerr != nil:
			return got, why(rerr)
		case p.end >= 0 && start+got >= p.end:
			return got, nil
		}
	}
}

type hashResult struct {
	sha256, gitSHA1, md5 string
	size                 int64
	err                  error
}

// prefix is how many bytes from the start are written.
func (j *fileJob) prefix() int64 {
	for _, p := range j.parts {
		if !p.complete() {
			return p.off + p.done.Load()
		}
	}
	return j.parts[len(j.parts)-1].end
}

// hash reads the file back as its written prefix grows, so that checking
// it costs no time after the last byte arrives. fetched is closed when
// every part is done.
func (j *fileJob) hash(ctx context.Context, fetched <-chan struct{}) hashResult {
	buf := make([]byte, 64<<10) // small, as in try: the bytes stay in the CPU's cache
	last := false
	for {
		end := j.prefix()
		if last && j.parts[0].end < 0 {
			end = j.parts[0].done.Load() // unknown size: what arrived
		}
		// Read back what the writers did not hash as they wrote (the
		// bytes of parts past the first unfinished one, and of an earlier
		// run).
		for at := j.sum.hashed(); at < end; at = j.sum.hashed() {
			n := int(min(int64(len(buf)), end-at))
			if _, err := j.f.ReadAt(buf[:n], at); err != nil {
				return hashResult{err: fmt.Errorf("reading back %s: %w", j.partial, err)}
			}
			j.sum.add(at, buf[:n])
		}
		if last {
			return j.sum.result()
		}
		select {
		case <-j.moved:
		case <-fetched:
			last = true
		case <-ctx.Done():
			return hashResult{err: ctx.Err()}
		}
	}
}

// digest is a file's checksums over its bytes from the start, fed by the
// writers (the bytes they write where the hashed prefix ends, from their
// buffer) and by hash (the rest, read back from the file).
type digest struct {
	mu         sync.Mutex
	sh, gh, mh hash.Hash // SHA-256; the git blob id and MD5 when the source publishes them
	at         int64     // bytes hashed
}

func newDigest(r remote) *digest {
	d := &digest{sh: sha256.New()}
	if r.gitSHA1 != "" && r.size >= 0 {
		d.gh = sha1.New() //nolint:gosec // git's blob id
		_, _ = d.gh.Write([]byte("blob " + strconv.FormatInt(r.size, 10) + "\x00"))
	}
	if r.md5 != "" {
		d.mh = md5.New() //nolint:gosec // S3's ETag is an MD5; checked, not trusted for security
	}
	return d
}

// add hashes b, the bytes at off, if they continue the hashed prefix.
func (d *digest) add(off int64, b []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off != d.at {
		return
	}
	for _, h := range []hash.Hash{d.sh, d.gh, d.mh} {
		if h != nil {
			_, _ = h.Write(b)
		}
	}
	d.at += int64(len(b))
}

func (d *digest) hashed() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.at
}

func (d *digest) result() hashResult {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := hashResult{sha256: hex.EncodeToString(d.sh.Sum(nil)), size: d.at}
	if d.gh != nil {
		r.gitSHA1 = hex.EncodeToString(d.gh.Sum(nil))
	}
	if d.mh != nil {
		r.md5 = hex.EncodeToString(d.mh.Sum(nil))
	}
	return r
}

// finish checks the file against its source's checksums and moves it into
// place.
func (j *fileJob) finish(h hashResult) error {
	r := j.r
	bad := func(what, want, got string) error {
		_ = j.f.Close()
		_ = os.Remove(j.partial)
		_ = os.Remove(j.partial + ".json")
		return &checksumError{r.name, what, want, got}
	}
	switch {
	case r.size >= 0 && h.size != r.size:
		return bad("size", strconv.FormatInt(r.size, 10)+" bytes", strconv.FormatInt(h.size, 10))
	case r.sha256 != "" && h.sha256 != r.sha256:
		return bad("SHA-256", r.sha256, h.sha256)
	case r.gitSHA1 != "" && h.gitSHA1 != r.gitSHA1:
		return bad("git blob id", r.gitSHA1, h.gitSHA1)
	case r.md5 != "" && h.md5 != r.md5:
		return bad("MD5 (ETag)", r.md5, h.md5)
	}
	if j.o.Fsync {
		if err := j.f.Sync(); err != nil {
			return err
		}
	}
	final := filepath.Join(j.run.dest, filepath.FromSlash(r.name))
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return err
	}
	if err := os.Rename(j.partial, final); err != nil {
		return err
	}
	_ = os.Remove(j.partial + ".json")
	if j.o.Fsync {
		return syncDir(filepath.Dir(final))
	}
	return nil
}

// writeFileAtomic writes b to path through a temporary file and a rename,
// so that readers see the old or the new contents, never a mix.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	return d.Sync()
}
