package autoscale

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// phase is a stretch of a load trace: the load goes linearly from `from`
// to `to` over `length`, with ±noise (a share of the load) on each reading.
type phase struct {
	name     string
	length   time.Duration
	from, to float64
	noise    float64
}

// The trace of the simulation: requests in flight read every second.
var trace = []phase{
	{"ramp up", 2 * time.Minute, 0, 20, 0.1},
	{"steady", 10 * time.Minute, 20, 20, 0.2},
	{"spike", 15 * time.Second, 60, 60, 0.1},
	{"steady after spike", 12 * time.Minute, 20, 20, 0.2},
	{"idle", 20 * time.Minute, 0, 0, 0},
}

var simSettings = Settings{
	Min: 0, Max: 12, PerInstance: 4, TargetPercent: 70,
	Window: time.Minute, ScaleDownDelay: 2 * time.Minute, IdleToZero: 5 * time.Minute,
}

// podStart is how long a new pod takes to become ready (a GPU node, a model
// to load).
const podStart = 45 * time.Second

// cluster plays the Deployment: pods become ready podStart after they are
// asked for, and go at once when removed.
type cluster struct {
	replicas int32
	starting []time.Time // when each pending pod will be ready
	ready    int32
}

func (c *cluster) step(now time.Time) {
	kept := c.starting[:0]
	for _, at := range c.starting {
		if !now.Before(at) {
			c.ready++
		} else {
			kept = append(kept, at)
		}
	}
	c.starting = kept
}

func (c *cluster) scale(to int32, now time.Time) {
	for c.replicas < to {
		c.replicas++
		c.starting = append(c.starting, now.Add(podStart))
	}
	for c.replicas > to {
		c.replicas--
		if len(c.starting) > 0 {
			c.starting = c.starting[:len(c.starting)-1]
		} else {
			c.ready--
		}
	}
}

type reading struct {
	t        time.Duration
	phase    string
	load     float64
	replicas int32
	pending  int32
}

// simulate runs the trace through a policy, restarting it (as a new
// manager would, from the last removal in the status history) at restartAt
// if it is not zero.
func simulate(t *testing.T, restartAt time.Duration) ([]reading, []Decision) {
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	c := &cluster{}
	p := &Policy{}
	var out []reading
	var decisions []Decision
	requests := 0.0
	elapsed := time.Duration(0)
	for _, ph := range trace {
		for at := time.Duration(0); at < ph.length; at += time.Second {
			now := start.Add(elapsed)
			if restartAt != 0 && elapsed == restartAt {
				var lastDown time.Time
				for _, d := range decisions {
					if d.To < d.From {
						lastDown = d.Time
					}
				}
				p = Restore(lastDown, now)
			}
			c.step(now)
			load := ph.from + (ph.to-ph.from)*float64(at)/float64(ph.length)
			load *= 1 + ph.noise*(2*rng.Float64()-1)
			load = float64(int(load + 0.5))
			requests += load
			s := Sample{Time: now, Load: load, Requests: requests, Replicas: c.replicas, Ready: c.ready, Pending: int32(len(c.starting))}
			to, d := p.Decide(s, simSettings)
			if d != nil {
				if d.To < d.From && s.Pending > 0 {
					t.Errorf("%v (%s): scaled down %d → %d while %d pods were pending", elapsed, ph.name, d.From, d.To, s.Pending)
				}
				decisions = append(decisions, *d)
				c.scale(to, now)
			}
			out = append(out, reading{elapsed, ph.name, load, c.replicas, int32(len(c.starting))})
			elapsed += time.Second
		}
	}
	return out, decisions
}

func TestPolicyOverLoadTrace(t *testing.T) {
	series, decisions := simulate(t, 0)
	// The replica series, a reading every 30 s.
	var b strings.Builder
	for i, r := range series {
		if i%30 == 0 {
			fmt.Fprintf(&b, "%6v %-19s load %4.0f replicas %2d (pending %d)\n", r.t, r.phase, r.load, r.replicas, r.pending)
		}
	}
	t.Logf("replica series (every 30 s):\n%s", b.String())
	for _, d := range decisions {
		t.Logf("%s: %d → %d: %s", d.Time.Format("15:04:05"), d.From, d.To, d.Reason)
	}
	checkTrace(t, series, decisions)
}

func TestPolicySurvivesRestart(t *testing.T) {
	// A manager restart in the middle of the scale-down after the spike:
	// the same replicas go on (no reset to min), and the delay between two
	// removals still holds.
	restart := 2*time.Minute + 10*time.Minute + 15*time.Second + 3*time.Minute
	series, decisions := simulate(t, restart)
	if r := series[restart/time.Second]; r.replicas < 5 {
		t.Errorf("replicas right after the restart: %d", r.replicas)
	}
	checkTrace(t, series, decisions)
}

func checkTrace(t *testing.T, series []reading, decisions []Decision) {
	t.Helper()
	// No more than one removal per delay window.
	var lastDown time.Time
	for _, d := range decisions {
		if d.To < d.From {
			if d.From-d.To != 1 && d.To != 0 {
				t.Errorf("%v: removed %d instances at once", d.Time, d.From-d.To)
			}
			if !lastDown.IsZero() && d.Time.Sub(lastDown) < simSettings.ScaleDownDelay {
				t.Errorf("%v: a removal %v after the previous one (delay %v)", d.Time, d.Time.Sub(lastDown), simSettings.ScaleDownDelay)
			}
			lastDown = d.Time
		}
	}
	// Steady load (after the ramp's pods are up): no change at all.
	changes := func(phase string, skip time.Duration) int {
		n, first := 0, time.Duration(-1)
		var prev int32 = -1
		for _, r := range series {
			if r.phase != phase {
				continue
			}
			if first < 0 {
				first = r.t
			}
			if r.t-first < skip {
				prev = r.replicas
				continue
			}
			if prev >= 0 && r.replicas != prev {
				n++
			}
			prev = r.replicas
		}
		return n
	}
	// The first minute of it may still finish the ramp (one more instance
	// when the noise first crosses the tolerance); then nothing moves.
	if n := changes("steady", time.Minute); n != 0 {
		t.Errorf("steady load: %d changes of replicas", n)
	}
	// No flapping anywhere: no removal within the delay after an addition,
	// and no addition within the delay after a removal unless the load
	// truly rose (the spike, or the end of idle).
	for i := 1; i < len(decisions); i++ {
		prev, d := decisions[i-1], decisions[i]
		reversed := (prev.To > prev.From) != (d.To > d.From)
		if reversed && d.Time.Sub(prev.Time) < simSettings.ScaleDownDelay && !strings.Contains(d.Reason, "twice") {
			t.Errorf("flapping: %d → %d at %s, then %d → %d at %s", prev.From, prev.To, prev.Time.Format("15:04:05"), d.From, d.To, d.Time.Format("15:04:05"))
		}
	}
	// 20 in flight at 2.8 per instance needs 8.
	if r := series[(2*time.Minute+9*time.Minute)/time.Second]; r.replicas != 8 {
		t.Errorf("steady load of 20: %d replicas, want 8", r.replicas)
	}
	// The spike is met within two readings (up to max).
	spikeAt := (2*time.Minute + 10*time.Minute) / time.Second
	if r := series[spikeAt+2]; r.replicas != simSettings.Max {
		t.Errorf("2 s into the spike: %d replicas, want %d", r.replicas, simSettings.Max)
	}
	// After the idle time it reaches zero, not before.
	idleAt := 2*time.Minute + 10*time.Minute + 15*time.Second + 12*time.Minute
	last := series[len(series)-1]
	if last.replicas != 0 {
		t.Errorf("after %v idle: %d replicas", last.t-idleAt, last.replicas)
	}
	for _, r := range series {
		if r.replicas == 0 && r.t > time.Minute && r.t-idleAt < simSettings.IdleToZero {
			t.Errorf("at zero %v after the load stopped (idle time %v)", r.t-idleAt, simSettings.IdleToZero)
			break
		}
	}
}

func TestPolicyWakesFromZeroAndHonoursBounds(t *testing.T) {
	p := &Policy{}
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	set := simSettings
	if to, d := p.Decide(Sample{Time: now, Load: 1, Replicas: 0}, set); to != 1 || d == nil {
		t.Errorf("a held request at zero: %d %v", to, d)
	}
	set.Min, set.Max = 2, 3
	if to, d := p.Decide(Sample{Time: now.Add(time.Second), Replicas: 1, Ready: 1}, set); to != 2 || d == nil || !strings.Contains(d.Reason, "minInstances") {
		t.Errorf("below min: %d %v", to, d)
	}
	if to, d := p.Decide(Sample{Time: now.Add(2 * time.Second), Replicas: 5, Ready: 5}, set); to != 3 || d == nil || !strings.Contains(d.Reason, "maxInstances") {
		t.Errorf("above max: %d %v", to, d)
	}
	if to, d := p.Decide(Sample{Time: now.Add(3 * time.Second), Replicas: 2, Ready: 2, Load: 1, KVCacheUsage: 0.97}, set); to != 3 || d == nil || !strings.Contains(d.Reason, "KV cache") {
		t.Errorf("KV cache full: %d %v", to, d)
	}
}

func TestPolicyDoesNotCountPendingPods(t *testing.T) {
	p := &Policy{}
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	set := simSettings
	// Four asked for, three still pending (a GPU node on its way), and the
	// load gone: no removal while they are pending, however long.
	for i := range 600 {
		if to, d := p.Decide(Sample{Time: now.Add(time.Duration(i) * time.Second), Replicas: 4, Ready: 1, Pending: 3, Load: 1}, set); to != 4 || d != nil {
			t.Fatalf("after %ds with pods pending: %d %v", i, to, d)
		}
	}
	// Load that one ready pod cannot carry, though four would: the pending
	// ones are not capacity, but they are not asked for again either.
	if to, d := p.Decide(Sample{Time: now.Add(601 * time.Second), Replicas: 4, Ready: 1, Pending: 3, Load: 11}, set); to != 4 || d != nil {
		t.Errorf("load 11 with 4 asked for, 1 ready: %d %v", to, d)
	}
	if to, d := p.Decide(Sample{Time: now.Add(602 * time.Second), Replicas: 4, Ready: 1, Pending: 3, Load: 14}, set); to != 5 || d == nil || !strings.Contains(d.Reason, "1 ready") {
		t.Errorf("load 14 with 4 asked for, 1 ready: %d %v", to, d)
	}
	// Once ready and still idle, the removals begin, one per delay.
	p = &Policy{}
	var got []int32
	replicas := int32(4)
	for i := range 600 {
		to, _ := p.Decide(Sample{Time: now.Add(time.Duration(i) * time.Second), Replicas: replicas, Ready: replicas, Load: 1}, set)
		if to != replicas {
			got = append(got, to)
			replicas = to
		}
	}
	if fmt.Sprint(got) != "[3 2 1]" {
		t.Errorf("removals over 10 minutes of load 1 once ready: %v", got)
	}
}

func TestPolicyRemovesNothingOnPartialReadings(t *testing.T) {
	// A pod's or gateway's metrics missing: the load may be understated,
	// so no instance goes, nor does the last one (to zero).
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	set := simSettings
	p := &Policy{}
	for i := range 900 {
		at := now.Add(time.Duration(i) * time.Second)
		if to, d := p.Decide(Sample{Time: at, Replicas: 3, Ready: 3, Partial: true}, set); to != 3 || d != nil {
			t.Fatalf("after %ds of partial readings at 3: %d %v", i, to, d)
		}
	}
	p = &Policy{}
	for i := range 900 {
		at := now.Add(time.Duration(i) * time.Second)
		if to, d := p.Decide(Sample{Time: at, Replicas: 1, Ready: 1, Partial: true}, set); to != 1 || d != nil {
			t.Fatalf("after %ds of partial readings at 1 (min 0): %d %v", i, to, d)
		}
	}
	// Load is still met: a partial reading that wants more adds.
	if to, d := p.Decide(Sample{Time: now.Add(901 * time.Second), Replicas: 1, Ready: 1, Load: 10, Partial: true}, set); to <= 1 || d == nil {
		t.Errorf("load 10 on a partial reading: %d %v", to, d)
	}
}
