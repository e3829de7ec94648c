package gateway

import (
	"sort"
	"sync"
	"time"
)

// Endpoint is what the gateway knows of one OnlineEndpoint: who may call
// it and where its deployments' ready pods are. A source (the Kubernetes
// watcher in kube.go, or a test) builds them and hands the whole set to
// Gateway.SetEndpoints.
type Endpoint struct {
	Namespace, Name string
	// Keys are the endpoint's API keys (Azure ML's primary and secondary);
	// a request needs one as "Authorization: Bearer <key>". With no keys
	// (its Secret not made yet) every request is refused, unless Open.
	Keys []string
	// Open: no authentication (authMode none).
	Open bool
	// Deployments by name, with their traffic and mirror shares.
	Deployments []Deployment
}

// Deployment is one deployment of an endpoint.
type Deployment struct {
	Name string
	// Traffic is the percentage of the endpoint's requests it answers;
	// Mirror the percentage it gets a copy of (answers dropped).
	Traffic, Mirror int32
	// Timeout bounds a request once it is forwarded (requestTimeoutMs):
	// past it the client gets 408. 0: 5 s, Azure ML's default.
	Timeout time.Duration
	// MaxConcurrentPerInstance is maxConcurrentRequestsPerInstance: more
	// than twice this per ready instance in flight is answered 429.
	MaxConcurrentPerInstance int
	// Replicas is the number of instances asked for (the Deployment's
	// replicas); Pods are the ready ones, as "host:port".
	Replicas int32
	Pods     []string
	// Wakeable says the deployment may be scaled from zero by a request
	// (target_utilization with minInstances 0).
	Wakeable bool
}

// Azure ML's default requestTimeoutMs.
const defaultTimeout = 5 * time.Second

// table is one immutable snapshot of the endpoints, looked up by
// "namespace/name".
type table struct {
	endpoints map[string]*endpointEntry
}

// endpointEntry is an Endpoint prepared for serving.
type endpointEntry struct {
	Endpoint
	keys        []keyEntry
	deployments map[string]*Deployment
	live        []weighted // deployments with traffic > 0, by name
	liveTotal   int32
	mirrors     []weighted // deployments with mirror > 0, by name
}

type weighted struct {
	name   string
	weight int32
}

// keyEntry is a key and when this gateway first saw it: requests are
// forwarded to the pods with the oldest valid key (see forwardKey).
type keyEntry struct {
	value string
	since time.Time
}

// keyAges remembers when each key of each endpoint was first seen, across
// table updates.
type keyAges struct {
	mu   sync.Mutex
	seen map[string]map[string]time.Time // endpoint → key → first seen
}

func newTable(eps []Endpoint, ages *keyAges, now time.Time) *table {
	t := &table{endpoints: make(map[string]*endpointEntry, len(eps))}
	ages.mu.Lock()
	defer ages.mu.Unlock()
	if ages.seen == nil {
		ages.seen = map[string]map[string]time.Time{}
	}
	current := map[string]bool{}
	for _, ep := range eps {
		id := ep.Namespace + "/" + ep.Name
		current[id] = true
		e := &endpointEntry{Endpoint: ep, deployments: map[string]*Deployment{}}
		seen := ages.seen[id]
		next := map[string]time.Time{}
		for _, k := range ep.Keys {
			if k == "" {
				continue
			}
			since, ok := seen[k]
			if !ok {
				since = now
			}
			next[k] = since
			e.keys = append(e.keys, keyEntry{value: k, since: since})
		}
		ages.seen[id] = next
		for i := range ep.Deployments {
			d := &ep.Deployments[i]
			e.deployments[d.Name] = d
			if d.Traffic > 0 {
				e.live = append(e.live, weighted{d.Name, d.Traffic})
				e.liveTotal += d.Traffic
			}
			if d.Mirror > 0 {
				e.mirrors = append(e.mirrors, weighted{d.Name, d.Mirror})
			}
		}
		sort.Slice(e.live, func(i, j int) bool { return e.live[i].name < e.live[j].name })
		sort.Slice(e.mirrors, func(i, j int) bool { return e.mirrors[i].name < e.mirrors[j].name })
		t.endpoints[id] = e
	}
	for id := range ages.seen {
		if !current[id] {
			delete(ages.seen, id)
		}
	}
	return t
}

// pick chooses a deployment for a request by the traffic weights, given a
// uniform roll in [0, liveTotal); "" when none gets traffic.
func (e *endpointEntry) pick(roll int32) string {
	for _, w := range e.live {
		if roll < w.weight {
			return w.name
		}
		roll -= w.weight
	}
	return ""
}

// forwardKey is the key to send to the pods with a request that passed the
// gateway's check: the one this gateway has known the longest. Keys are
// rotated one at a time, and the pods learn a new key from their mounted
// Secret only after the kubelet syncs it (up to a minute or more), while
// the gateway learns it within seconds; the older key is the one the pods
// surely have. "" when the endpoint has no keys.
func (e *endpointEntry) forwardKey() string {
	best := -1
	for i, k := range e.keys {
		if best < 0 || k.since.Before(e.keys[best].since) {
			best = i
		}
	}
	if best < 0 {
		return ""
	}
	return e.keys[best].value
}
