// Command leo-gateway is leo's endpoint gateway: one scoring URI per
// OnlineEndpoint, key auth, traffic split and mirroring, Azure ML's
// 429/408/424, least-load routing to the runtime pods and scale from zero
// (see package gateway). It watches the cluster for endpoints, keys and
// pods; run as many replicas as the traffic needs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/leo-operator/leo/controllers/desired"
	"github.com/leo-operator/leo/gateway"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "leo-gateway:", err)
		os.Exit(1)
	}
}

// drainFor is how long a stopping gateway keeps answering while load
// balancers take it out of rotation, before it stops accepting.
const drainFor = 5 * time.Second

func run() error {
	var (
		addr        string
		metricsAddr string
		hostSuffix  string
		wakeTimeout time.Duration
		maxBody     int64
		logJSON     bool
	)
	flag.StringVar(&addr, "addr", ":8080", "address to listen on (endpoints, /healthz, /readyz)")
	flag.StringVar(&metricsAddr, "metrics-addr", fmt.Sprintf(":%d", desired.GatewayMetricsPort), "address for /metrics (the autoscaler reads it), apart from the endpoints' clients")
	flag.StringVar(&hostSuffix, "host-suffix", "", "route requests for <endpoint>.<namespace>.<suffix> by host, besides /endpoints/<namespace>/<endpoint>/...")
	flag.DurationVar(&wakeTimeout, "wake-timeout", gateway.DefaultWakeTimeout, "how long a request is held for a deployment scaling from zero (then 503 with Retry-After)")
	flag.Int64Var(&maxBody, "max-body-bytes", gateway.DefaultMaxBodyBytes, "largest request body (413 beyond)")
	flag.BoolVar(&logJSON, "log-json", true, "log JSON lines (else text)")
	flag.Parse()

	var handler slog.Handler = slog.NewJSONHandler(os.Stderr, nil)
	if !logJSON {
		handler = slog.NewTextHandler(os.Stderr, nil)
	}
	log := slog.New(handler)

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("no cluster to watch: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	o := gateway.Options{HostSuffix: hostSuffix, WakeTimeout: wakeTimeout, MaxBodyBytes: maxBody, Log: log}
	var src *gateway.Source
	o.Waker = gateway.WakerFunc(func(ctx context.Context, ns, ep, dep string) error { return src.Wake(ctx, ns, ep, dep) })
	g := gateway.New(o)
	src, err = gateway.NewSource(cfg, g, log)
	if err != nil {
		return err
	}
	watchErr := make(chan error, 1)
	go func() { watchErr <- src.Run(ctx) }()

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mln, err := net.Listen("tcp", metricsAddr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	msrv := &http.Server{Handler: g.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	served := make(chan error, 2)
	go func() { served <- srv.Serve(ln) }()
	go func() { served <- msrv.Serve(mln) }()
	log.Info("gateway listening", "addr", ln.Addr().String(), "metricsAddr", mln.Addr().String(), "hostSuffix", hostSuffix)

	select {
	case err := <-served:
		return err
	case err := <-watchErr:
		if err != nil && ctx.Err() == nil {
			return err
		}
	case <-ctx.Done():
	}
	log.Info("stopping: draining", "for", drainFor)
	g.Drain()
	time.Sleep(drainFor)
	shutdown, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	_ = msrv.Close() // scrapes are short; the endpoints' requests get the grace
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
