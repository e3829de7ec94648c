// Package gateway is leo's endpoint gateway: one scoring URI per
// OnlineEndpoint, as Azure ML gives, in front of the runtime pods of its
// deployments.
//
// A request for /endpoints/<namespace>/<endpoint>/score (or /v1/...; or
// /score on the host <endpoint>.<namespace>.<suffix>) is checked against
// the endpoint's keys (401), sent to a deployment by the traffic weights
// or to the one the azureml-model-deployment header pins, copied to the
// mirror deployments (their answers dropped), and forwarded to the ready
// pod with the fewest requests in flight; a pod that fails before
// answering (connection refused or broken, draining) is replaced by
// another. Streams (SSE) pass through as they come.
//
// Azure ML's semantics: more than 2 × maxConcurrentRequestsPerInstance ×
// ready instances in flight is a 429; a request not answered within
// requestTimeoutMs is a 408; a model's server error (5xx) is a 424 with
// the model's status in ms-azureml-model-error-statuscode. A deployment
// with no instance that may scale from zero is woken (Options.Waker) and
// the request held until a pod is ready, for at most WakeTimeout (then
// 503 with Retry-After).
//
// The gateway keeps no state but load counters, so it scales
// horizontally; its knowledge of endpoints comes from a source that calls
// SetEndpoints (kube.go watches the cluster).
package gateway
