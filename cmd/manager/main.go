// Command manager runs leo's controllers: LlamaModel, OnlineEndpoint and
// BatchDeployment, with leader election, health and readiness probes and a
// Prometheus metrics endpoint.
package main

import (
	"flag"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/controllers"
	"github.com/leo-operator/leo/controllers/desired"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

// metricsOptions serves metrics over plain HTTP by default (for a
// Prometheus in the cluster network), or over HTTPS where every scrape is
// authenticated and authorized by the API server (TokenReview and
// SubjectAccessReview: the scraper needs `get` on the /metrics URL).
func metricsOptions(addr string, secure bool) metricsserver.Options {
	o := metricsserver.Options{BindAddress: addr, SecureServing: secure}
	if secure {
		o.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	return o
}

// The manager's own permissions for authenticating metrics scrapes.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

func run() error {
	var (
		metricsAddr   string
		probeAddr     string
		leaderElect   bool
		leaderElectNS string
		secureMetrics bool
		runtimeImage  string
		pullPolicy    string
		clusterDomain string
		gatewayURL    string
		gatewayNS     string
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint; \"0\" turns it off")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	flag.BoolVar(&leaderElect, "leader-elect", true, "elect a leader so that only one of several replicas reconciles")
	flag.StringVar(&leaderElectNS, "leader-election-namespace", "", "namespace of the leader election Lease (default: the pod's namespace)")
	flag.BoolVar(&secureMetrics, "metrics-secure", false, "serve metrics over HTTPS (self-signed unless certificates are mounted), each scrape authenticated and authorized by the API server")
	flag.StringVar(&runtimeImage, "runtime-image", "ghcr.io/leo-operator/leo-runtime:latest", "the leo-runtime image of the pods the operator makes (prepare, serve and batch)")
	flag.StringVar(&pullPolicy, "runtime-image-pull-policy", "", "imagePullPolicy of those pods: Always, IfNotPresent, Never, or empty for Kubernetes' default")
	flag.StringVar(&clusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain, for endpoints' scoring URIs")
	flag.StringVar(&gatewayNS, "gateway-namespace", "leo-system", "namespace of leo-gateway's pods, whose metrics the autoscaler reads (pods elsewhere are not trusted as gateways)")
	flag.StringVar(&gatewayURL, "gateway-url", "", "base URL of leo-gateway, e.g. http://leo-gateway.leo-system.svc.cluster.local: scoring URIs are <url>/endpoints/<namespace>/<endpoint>/score (empty: each endpoint's own Service)")
	opts := zap.Options{Development: false}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(servingv1alpha1.AddToScheme(scheme))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("no Kubernetes API server to talk to (set KUBECONFIG or run in a pod): %w", err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Cache:                   controllers.CacheOptions(),
		Metrics:                 metricsOptions(metricsAddr, secureMetrics),
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "leo-manager.serving.leo.dev",
		LeaderElectionNamespace: leaderElectNS,
		// The manager exits right after losing the lease, so a new leader
		// need not wait for the old one's lease to run out on shutdown.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	switch corev1.PullPolicy(pullPolicy) {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return fmt.Errorf("--runtime-image-pull-policy %q: want Always, IfNotPresent, Never or empty", pullPolicy)
	}
	if runtimeImage == "" {
		return fmt.Errorf("--runtime-image must name the leo-runtime image")
	}
	if err := controllers.SetupAll(mgr, controllers.Options{Config: desired.Config{
		RuntimeImage: runtimeImage, ImagePullPolicy: corev1.PullPolicy(pullPolicy), ClusterDomain: clusterDomain, GatewayURL: gatewayURL,
	}, GatewayNamespace: gatewayNS}); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	log.Info("starting manager", "metrics", metricsAddr, "probes", probeAddr, "leaderElection", leaderElect)
	return mgr.Start(ctrl.SetupSignalHandler())
}
