// Package autoscale sets the replicas of OnlineEndpoint deployments with
// scaleSettings.type target_utilization from their load, as read from the
// gateway's and the runtime pods' metrics.
//
// The policy (Policy.Decide) is a pure function of the readings and the
// clock, so that it is tested over recorded load traces; the Autoscaler
// (autoscaler.go) polls, decides and writes the scale subresource.
package autoscale

import (
	"fmt"
	"math"
	"time"
)

// Settings are one deployment's scale settings in the policy's terms.
type Settings struct {
	Min, Max int32
	// PerInstance is maxConcurrentRequestsPerInstance; TargetPercent the
	// share of it each instance should carry (targetUtilizationPercentage).
	PerInstance   int32
	TargetPercent int32
	// Window is how long the load is averaged over for scaling down.
	Window time.Duration
	// ScaleDownDelay is how long the load must stay low before one
	// instance is removed, and the least time between two removals.
	ScaleDownDelay time.Duration
	// IdleToZero is how long a deployment with Min 0 must get no request
	// before it goes to zero.
	IdleToZero time.Duration
}

// Sample is one reading of a deployment.
type Sample struct {
	Time time.Time
	// Load is the requests in flight: held by the gateways for a wake-up,
	// forwarded, or queued and running in the pods.
	Load float64
	// Requests is a counter of requests the gateways received (any
	// increase means the deployment is not idle).
	Requests float64
	// KVCacheUsage is the highest share of a pod's KV cache in use (0..1).
	KVCacheUsage float64
	// Replicas is the Deployment's replicas; Ready its ready pods;
	// Pending those created but not ready yet (pulling, loading a model).
	Replicas, Ready, Pending int32
	// Partial: some pod's or gateway's metrics could not be read. The
	// load may be understated, so nothing is removed on this reading.
	Partial bool
}

// Decision is a change of replicas and why.
type Decision struct {
	Time     time.Time
	From, To int32
	Reason   string
}

// shortWindow is what the load is averaged over for scaling up, and
// tolerance how far past the capacity that average must be (as the
// HorizontalPodAutoscaler's 10%).
const (
	shortWindow = 10 * time.Second
	tolerance   = 0.1
)

// kvFull is the KV cache usage past which a deployment gets another
// instance whatever its request count: requests then wait for memory.
const kvFull = 0.95

// Policy is the autoscaler's memory of one deployment between readings.
// The zero Policy is a fresh one; Restore rebuilds it after a restart.
type Policy struct {
	window       []Sample
	lowSince     time.Time // since when the averaged load wants fewer replicas
	lastDown     time.Time // the last removal of an instance
	lastActive   time.Time // the last reading with load or new requests
	lastRequests float64
	seen         bool
}

// Restore starts a policy from what the status recorded: the time of the
// last removal (so the delay between two removals holds across a restart)
// and now as the last activity (so a restart never scales to zero early).
func Restore(lastDown, now time.Time) *Policy {
	return &Policy{lastDown: lastDown, lastActive: now}
}

// Decide takes a reading and returns the replicas the deployment should
// have, and whether that is a change (with its reason).
func (p *Policy) Decide(s Sample, set Settings) (int32, *Decision) {
	now := s.Time
	if !p.seen {
		p.seen = true
		p.lastRequests = s.Requests
		if p.lastActive.IsZero() {
			p.lastActive = now
		}
	}
	if s.Load > 0 || s.Requests > p.lastRequests {
		p.lastActive = now
	}
	p.lastRequests = s.Requests
	p.window = append(p.window, s)
	for len(p.window) > 1 && now.Sub(p.window[0].Time) > set.Window {
		p.window = p.window[1:]
	}
	avg := p.average(now, set.Window)

	perPod := float64(max(set.PerInstance, 1)) * float64(min(max(set.TargetPercent, 1), 100)) / 100
	want := func(load float64) int32 { return int32(min(math.Ceil(load/perPod-1e-9), float64(math.MaxInt32))) }
	floor := max(set.Min, 1)
	cur := s.Replicas
	change := func(to int32, format string, args ...any) (int32, *Decision) {
		if to < cur {
			p.lastDown = now
		}
		p.lowSince = time.Time{}
		return to, &Decision{Time: now, From: cur, To: to, Reason: fmt.Sprintf(format, args...)}
	}

	// Out of bounds (the settings changed): move in at once.
	if cur > set.Max {
		return change(set.Max, "above maxInstances %d", set.Max)
	}
	if cur < set.Min {
		return change(set.Min, "below minInstances %d", set.Min)
	}

	// Up, fast: on the average of the last few seconds once it is past the
	// capacity by the tolerance (so that noise around a steady load does
	// not add an instance that the slow way down then removes: flapping),
	// or at once on a reading of twice the capacity (a spike).
	// The capacity is the ready pods' alone: pending ones serve nothing yet
	// (they do count towards the replicas, so they are not asked for twice).
	capacity := float64(s.Ready) * perPod
	short := p.average(now, shortWindow)
	up, reason := cur, ""
	switch {
	case s.Load >= 2*capacity && s.Load > 0:
		up, reason = want(s.Load), fmt.Sprintf("load %.1f in flight is over twice the capacity of %d ready instances at %.1f each", s.Load, s.Ready, perPod)
	case short > capacity*(1+tolerance):
		up, reason = want(short), fmt.Sprintf("load %.1f in flight over %v, over the capacity of %d ready instances at %.1f each", short, shortWindow, s.Ready, perPod)
	case s.KVCacheUsage >= kvFull && s.Ready > 0:
		up, reason = cur+1, fmt.Sprintf("KV cache %.0f%% full", 100*s.KVCacheUsage)
	}
	if up = min(up, set.Max); up > cur {
		return change(up, "%s", reason)
	}

	// Down, slowly: one instance at a time, after the averaged load has
	// wanted fewer for the whole delay, never while pods are pending (a
	// new GPU node can take minutes: its pod is capacity to come, and the
	// load per ready pod is not what it will be).
	down := max(want(avg), floor)
	if cur > floor && down < cur {
		if s.Pending > 0 || s.Partial {
			p.lowSince = time.Time{}
			return cur, nil
		}
		if p.lowSince.IsZero() {
			p.lowSince = now
		}
		if now.Sub(p.lowSince) >= set.ScaleDownDelay && now.Sub(p.lastDown) >= set.ScaleDownDelay {
			return change(cur-1, "load %.1f averaged over %v wants %d (one step at a time)", avg, set.Window, down)
		}
		return cur, nil
	}
	p.lowSince = time.Time{}

	// To zero, when allowed and idle long enough.
	if set.Min == 0 && cur == 1 && s.Load == 0 && !s.Partial && now.Sub(p.lastActive) >= set.IdleToZero && now.Sub(p.lastDown) >= set.ScaleDownDelay {
		return change(0, "idle for %v (scaleToZeroIdleTime)", now.Sub(p.lastActive).Round(time.Second))
	}
	return cur, nil
}

// average is the mean load of the readings of the last d (at least the
// latest one).
func (p *Policy) average(now time.Time, d time.Duration) float64 {
	sum, n := 0.0, 0
	for i := len(p.window) - 1; i >= 0; i-- {
		if n > 0 && now.Sub(p.window[i].Time) >= d {
			break
		}
		sum += p.window[i].Load
		n++
	}
	return sum / float64(n)
}
