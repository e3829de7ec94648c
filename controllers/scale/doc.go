// Package scale measures the reconcilers at scale against a real
// kube-apiserver and etcd: how long many OnlineEndpoints take to settle
// from scratch, how many API writes that takes, and that a restarted
// operator facing a settled cluster writes nothing at all.
//
//	go test ./controllers/scale                      the zero-writes check (make test)
//	go test -run '^$' -bench . ./controllers/scale   the figures (make bench-operator)
package scale
