// Package kubelettest is a kubelet for tests: a real HTTPS server on
// 127.0.0.1 that speaks the part of the kubelet's API the API server uses
// to answer pod log requests (GET /containerLogs/{namespace}/{pod}/{container}
// with tailLines, limitBytes, sinceSeconds, sinceTime, timestamps, previous
// and follow), serving logs the test sets. With it, a client's
// `GET /api/v1/namespaces/NS/pods/NAME/log` goes through a real
// kube-apiserver (envtest), which looks up the pod's node and proxies the
// request here, exactly as in a cluster; nothing on the client side is mocked.
//
// Wiring, before env.Start():
//
//	k := kubelettest.Start(t)   // or New() ... defer k.Close()
//	k.ConfigureAPIServer(env)   // --kubelet-certificate-authority, --kubelet-preferred-address-types
//	cfg, err := env.Start()
//	err = k.RegisterNode(ctx, c, "node-1") // pods with spec.nodeName "node-1" get their logs here
//	k.SetLog("ns", "pod", "main", "line 1\nline 2\n")
//
// How the API server finds and trusts it:
//
//   - The server's certificate is for IP 127.0.0.1 (and ::1, localhost),
//     signed by a CA made afresh for each Kubelet (ECDSA P-256). The CA is
//     written to a temporary file and passed as --kubelet-certificate-authority,
//     so the API server verifies the connection as it does in production.
//   - The API server sends no client certificate (no --kubelet-client-certificate
//     is set) and this server asks for none.
//   - RegisterNode creates a Node whose status carries the addresses
//     InternalIP 127.0.0.1 and Hostname <name> and, as kubeletEndpoint.port,
//     this server's port. The API server picks the first address of the
//     types in --kubelet-preferred-address-types (by default Hostname first,
//     which would send it to resolve the node's name), so ConfigureAPIServer
//     sets that flag to InternalIP.
//
// Loopback works for pod logs: kube-apiserver (v1.37) refuses addresses
// that are not global unicast only for nodes/proxy (isProxyableHostname in
// pkg/registry/core/node); pod logs (LogLocation in pkg/registry/core/pod)
// dial the node's address as reported, 127.0.0.1 included.
//
// The logs follow the kubelet's CRI log reader (k8s.io/cri-client/pkg/logs):
// a log is a sequence of lines, each stamped with the time it was set or
// appended; tailLines keeps the last N lines, sinceSeconds/sinceTime drop
// lines stamped before, timestamps prefixes each line with its time in
// RFC 3339 with nanoseconds at fixed width, limitBytes cuts the output
// (prefixes included) at that many bytes, even mid-line. follow writes what
// there is, then keeps the response open and streams lines as they are
// appended, until the container's log ends (EndLog, or SetLog starting a new
// one), the request is cancelled, or the Kubelet closes. A pod or
// container is known once a log of it was set (SetLog(..., "") for an
// empty one).
//
// Errors are the kubelet's: 404 `pod "NAME" does not exist` for a pod it
// has no log of, 404 `container "C" not found in pod "NAME"`, 400
// `previous terminated container "C" in pod "NAME" not found` for
// previous=true without SetPreviousLog. What a client sees is the API
// server's translation: a 404 becomes a NotFound without the kubelet's text
// ("the server could not find the requested resource"); a 400 becomes a
// BadRequest whose message is the kubelet's text, which client-go's Stream
// and Do().Raw() return but DoRaw does not (it keeps only the code). A
// container that is not in the pod's spec never reaches the kubelet: the
// API server answers 400 itself.
package kubelettest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// timeFormatOut is the kubelet's format for timestamps=true
// (RFC3339NanoFixed in k8s.io/cri-client/pkg/logs).
const timeFormatOut = "2006-01-02T15:04:05.000000000Z07:00"

// Request is one log request the Kubelet served.
type Request struct {
	Namespace, Pod, Container string
	// Query is the query string as the API server forwarded it.
	Query url.Values
	// Status is the HTTP status answered (0 while a follow is streaming
	// its 200).
	Status int
}

// Kubelet is a fake kubelet serving container logs over HTTPS.
type Kubelet struct {
	srv    *http.Server
	ln     net.Listener
	port   int
	dir    string
	caFile string
	caPEM  []byte

	mu       sync.Mutex
	pods     map[podKey]map[string]*containerLogs // by container name
	requests []Request
	changed  chan struct{} // closed and replaced on every change
	closed   chan struct{}
	once     sync.Once
}

type podKey struct{ ns, name string }

type containerLogs struct {
	current, previous *stream
}

// stream is the log of one container instance.
type stream struct {
	lines []line
	ended bool // the container has exited: follow stops at the end
}

// line is one record, as a CRI log file holds them; text ends with "\n"
// except for a last, incomplete line.
type line struct {
	at   time.Time
	text string
}

// Start starts a Kubelet that is closed when the test ends.
func Start(t testing.TB) *Kubelet {
	t.Helper()
	k, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	return k
}

// New starts a Kubelet on 127.0.0.1 with a fresh CA, whose certificate it
// writes to a temporary directory that Close removes. For suites set up
// in TestMain, where there is no testing.TB.
func New() (*Kubelet, error) {
	caCert, caKey, caPEM, err := newCA()
	if err != nil {
		return nil, err
	}
	cert, err := newServingCert(caCert, caKey)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kubelettest-")
	if err != nil {
		return nil, err
	}
	caFile := filepath.Join(dir, "kubelet-ca.crt")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	k := &Kubelet{
		ln:      ln,
		port:    ln.Addr().(*net.TCPAddr).Port,
		dir:     dir,
		caFile:  caFile,
		caPEM:   caPEM,
		pods:    map[podKey]map[string]*containerLogs{},
		changed: make(chan struct{}),
		closed:  make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", k.serveContainerLogs)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	k.srv = &http.Server{
		Handler: mux,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.NoClientCert,
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = k.srv.ServeTLS(ln, "", "") }()
	return k, nil
}

// Close stops the server, ends the streams it is following and removes
// the CA file.
func (k *Kubelet) Close() error {
	var err error
	k.once.Do(func() {
		close(k.closed)
		err = k.srv.Close()
		if rmErr := os.RemoveAll(k.dir); err == nil {
			err = rmErr
		}
	})
	return err
}

// Host is the address the server listens on: 127.0.0.1.
func (k *Kubelet) Host() string { return "127.0.0.1" }

// Port is the server's port, the node's kubeletEndpoint.port.
func (k *Kubelet) Port() int { return k.port }

// URL is https://127.0.0.1:PORT.
func (k *Kubelet) URL() string { return "https://" + net.JoinHostPort(k.Host(), strconv.Itoa(k.port)) }

// CAFile is the path of the PEM file of the CA that signed the server's
// certificate (valid until Close).
func (k *Kubelet) CAFile() string { return k.caFile }

// CAPEM is that CA certificate, PEM-encoded.
func (k *Kubelet) CAPEM() []byte { return append([]byte(nil), k.caPEM...) }

// APIServerFlags are the kube-apiserver flags (without "--") it needs to
// reach this kubelet: trust its CA, and dial the node's InternalIP.
func (k *Kubelet) APIServerFlags() map[string]string {
	return map[string]string{
		"kubelet-certificate-authority":   k.caFile,
		"kubelet-preferred-address-types": string(corev1.NodeInternalIP),
	}
}

// ConfigureAPIServer sets APIServerFlags on env's kube-apiserver. Call it
// before env.Start().
func (k *Kubelet) ConfigureAPIServer(env *envtest.Environment) {
	args := env.ControlPlane.GetAPIServer().Configure()
	for name, value := range k.APIServerFlags() {
		args.Set(name, value)
	}
}

// RegisterNode creates (or updates) the Node name with a Ready status whose
// addresses and kubelet endpoint point at this server, so that pods with
// spec.nodeName = name get their logs from it.
func (k *Kubelet) RegisterNode(ctx context.Context, c client.Client, name string) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:   name,
		Labels: map[string]string{corev1.LabelHostname: name},
	}}
	if err := c.Create(ctx, node); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating node %s: %w", name, err)
		}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
			return fmt.Errorf("reading node %s: %w", name, err)
		}
	}
	now := metav1.Now()
	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: k.Host()},
		{Type: corev1.NodeHostName, Address: name},
	}
	node.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(k.port) //nolint:gosec // a TCP port
	node.Status.Conditions = []corev1.NodeCondition{{
		Type:               corev1.NodeReady,
		Status:             corev1.ConditionTrue,
		Reason:             "KubeletReady",
		Message:            "kubelettest is serving container logs",
		LastHeartbeatTime:  now,
		LastTransitionTime: now,
	}}
	if err := c.Status().Update(ctx, node); err != nil {
		return fmt.Errorf("setting the status of node %s: %w", name, err)
	}
	return nil
}

// SetLog starts a new instance of the container with text as its log so
// far (every line stamped now). A follow of the previous instance ends.
func (k *Kubelet) SetLog(ns, pod, container, text string) {
	k.update(ns, pod, container, func(c *containerLogs) {
		if c.current != nil {
			c.current.ended = true
		}
		c.current = &stream{lines: split(text, time.Now())}
	})
}

// AppendLog appends text to the container's log (stamped now).
func (k *Kubelet) AppendLog(ns, pod, container, text string) {
	k.AppendLogAt(ns, pod, container, text, time.Now())
}

// AppendLogAt appends text to the container's log with its lines stamped
// at, for tests of sinceTime and timestamps.
func (k *Kubelet) AppendLogAt(ns, pod, container, text string, at time.Time) {
	k.update(ns, pod, container, func(c *containerLogs) {
		if c.current == nil {
			c.current = &stream{}
		}
		c.current.lines = append(c.current.lines, split(text, at)...)
	})
}

// SetPreviousLog sets the log of the container's previous (terminated)
// instance, served for previous=true.
func (k *Kubelet) SetPreviousLog(ns, pod, container, text string) {
	k.update(ns, pod, container, func(c *containerLogs) {
		c.previous = &stream{lines: split(text, time.Now()), ended: true}
	})
}

// EndLog marks the container as exited: follows stop at the end of its log.
func (k *Kubelet) EndLog(ns, pod, container string) {
	k.update(ns, pod, container, func(c *containerLogs) {
		if c.current == nil {
			c.current = &stream{}
		}
		c.current.ended = true
	})
}

// ForgetPod drops every log of the pod: it answers 404 again.
func (k *Kubelet) ForgetPod(ns, pod string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.pods[podKey{ns, pod}] {
		if c.current != nil {
			c.current.ended = true
		}
	}
	delete(k.pods, podKey{ns, pod})
	k.notifyLocked()
}

// Requests returns the log requests served so far, oldest first.
func (k *Kubelet) Requests() []Request {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]Request, len(k.requests))
	for i, r := range k.requests {
		r.Query = cloneValues(r.Query)
		out[i] = r
	}
	return out
}

// RequestCount is how many log requests for the pod (any container,
// answered or not) it received.
func (k *Kubelet) RequestCount(ns, pod string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, r := range k.requests {
		if r.Namespace == ns && r.Pod == pod {
			n++
		}
	}
	return n
}

func (k *Kubelet) update(ns, pod, container string, f func(*containerLogs)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := podKey{ns, pod}
	if k.pods[key] == nil {
		k.pods[key] = map[string]*containerLogs{}
	}
	c := k.pods[key][container]
	if c == nil {
		c = &containerLogs{}
		k.pods[key][container] = c
	}
	f(c)
	k.notifyLocked()
}

func (k *Kubelet) notifyLocked() {
	close(k.changed)
	k.changed = make(chan struct{})
}

// split cuts text into lines, each keeping its "\n".
func split(text string, at time.Time) []line {
	at = at.UTC()
	var out []line
	for text != "" {
		i := strings.IndexByte(text, '\n')
		if i < 0 {
			out = append(out, line{at, text})
			break
		}
		out = append(out, line{at, text[:i+1]})
		text = text[i+1:]
	}
	return out
}

func (k *Kubelet) serveContainerLogs(w http.ResponseWriter, r *http.Request) {
	ns, pod, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	k.mu.Lock()
	k.requests = append(k.requests, Request{Namespace: ns, Pod: pod, Container: container, Query: cloneValues(r.URL.Query())})
	idx := len(k.requests) - 1
	k.mu.Unlock()
	status := k.writeLogs(w, r, ns, pod, container)
	k.mu.Lock()
	k.requests[idx].Status = status
	k.mu.Unlock()
}

// writeLogs answers one request as the kubelet's getContainerLogs and the
// CRI log reader do, and returns the status.
func (k *Kubelet) writeLogs(w http.ResponseWriter, r *http.Request, ns, pod, container string) int {
	fail := func(status int, msg string) int {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(msg))
		return status
	}
	query := r.URL.Query()
	if tail := query.Get("tail"); tail != "" { // the kubelet's legacy parameter
		query["tailLines"] = []string{tail}
		if tail == "all" {
			delete(query, "tailLines")
		}
	}
	opts, err := decodeLogOptions(query)
	if err != nil {
		return fail(http.StatusBadRequest, `{"message": "Unable to decode query."}`)
	}
	if invalid(opts) {
		return fail(http.StatusUnprocessableEntity, `{"message": "Invalid request."}`)
	}
	if opts.Stream != nil && *opts.Stream != corev1.LogStreamAll {
		return fail(http.StatusBadRequest, fmt.Sprintf("unable to return the given log stream: %q. Please enable PodLogsQuerySplitStreams feature gate in kubelet", *opts.Stream))
	}

	k.mu.Lock()
	containers, ok := k.pods[podKey{ns, pod}]
	var logs *containerLogs
	if ok {
		logs = containers[container]
	}
	var s *stream
	if logs != nil {
		s = logs.current
		if opts.Previous {
			s = logs.previous
		}
	}
	k.mu.Unlock()
	switch {
	case !ok:
		return fail(http.StatusNotFound, fmt.Sprintf("pod %q does not exist", pod))
	case logs == nil:
		return fail(http.StatusNotFound, fmt.Sprintf("container %q not found in pod %q", container, pod))
	case s == nil && opts.Previous:
		return fail(http.StatusBadRequest, fmt.Sprintf("previous terminated container %q in pod %q not found", container, pod))
	case s == nil:
		s = &stream{}
	}

	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush() // the API server waits for the headers before it streams

	tail := int64(-1)
	if opts.TailLines != nil {
		tail = *opts.TailLines
	}
	remain := int64(-1)
	if opts.LimitBytes != nil {
		remain = *opts.LimitBytes
	}
	var since time.Time
	if opts.SinceSeconds != nil {
		since = time.Now().Add(-time.Duration(*opts.SinceSeconds) * time.Second)
	}
	if opts.SinceTime != nil && opts.SinceTime.After(since) {
		since = opts.SinceTime.Time
	}

	k.mu.Lock()
	next := 0
	if tail >= 0 && int64(len(s.lines)) > tail {
		next = len(s.lines) - int(tail)
	}
	k.mu.Unlock()
	limited := tail >= 0 && !opts.Follow
	left := tail
	newLine := true
	for {
		k.mu.Lock()
		lines := append([]line(nil), s.lines[next:]...)
		next = len(s.lines)
		ended := s.ended
		changed := k.changed
		k.mu.Unlock()

		for _, l := range lines {
			if limited && left == 0 {
				return http.StatusOK
			}
			if !l.at.Before(since) {
				out := l.text
				if opts.Timestamps && newLine {
					out = l.at.Format(timeFormatOut) + " " + out
				}
				if remain >= 0 && int64(len(out)) > remain {
					out = out[:remain]
				}
				n, err := w.Write([]byte(out))
				if err != nil {
					return http.StatusOK
				}
				if remain >= 0 {
					remain -= int64(n)
				}
				_ = rc.Flush()
				if remain == 0 {
					return http.StatusOK
				}
			}
			left--
			newLine = strings.HasSuffix(l.text, "\n")
		}
		if !opts.Follow || ended {
			return http.StatusOK
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return http.StatusOK
		case <-k.closed:
			return http.StatusOK
		}
	}
}

// decodeLogOptions reads the query parameters of v1.PodLogOptions, as the
// kubelet's generated conversion does. (client-go's scheme has no
// conversion from url.Values to PodLogOptions; k8s.io/kubernetes does.)
func decodeLogOptions(q url.Values) (*corev1.PodLogOptions, error) {
	var o corev1.PodLogOptions
	var err error
	integer := func(name string) *int64 {
		v := q.Get(name)
		if v == "" || err != nil {
			return nil
		}
		var n int64
		if n, err = strconv.ParseInt(v, 10, 64); err != nil {
			return nil
		}
		return &n
	}
	boolean := func(name string) bool {
		v := q.Get(name)
		if v == "" || err != nil {
			return false
		}
		var b bool
		b, err = strconv.ParseBool(v)
		return b
	}
	o.Container = q.Get("container")
	o.TailLines = integer("tailLines")
	o.LimitBytes = integer("limitBytes")
	o.SinceSeconds = integer("sinceSeconds")
	o.Follow = boolean("follow")
	o.Previous = boolean("previous")
	o.Timestamps = boolean("timestamps")
	o.InsecureSkipTLSVerifyBackend = boolean("insecureSkipTLSVerifyBackend")
	if v := q.Get("sinceTime"); v != "" && err == nil {
		var t metav1.Time
		if err = t.UnmarshalQueryParameter(v); err == nil {
			o.SinceTime = &t
		}
	}
	if v := q.Get("stream"); v != "" {
		o.Stream = &v
	}
	if err != nil {
		return nil, err
	}
	return &o, nil
}

// invalid is the kubelet's ValidatePodLogOptions.
func invalid(o *corev1.PodLogOptions) bool {
	return (o.TailLines != nil && *o.TailLines < 0) ||
		(o.LimitBytes != nil && *o.LimitBytes < 1) ||
		(o.SinceSeconds != nil && *o.SinceSeconds < 1) ||
		(o.SinceSeconds != nil && o.SinceTime != nil)
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

func newCA() (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "kubelettest CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func newServingCert(ca *x509.Certificate, caKey *ecdsa.PrivateKey) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kubelettest"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(errors.New("kubelettest: no randomness for a certificate serial"))
	}
	return n
}
