// Command pause is the pod sandbox's container for the local cluster
// (hack/cluster): it holds the pod's namespaces and does nothing until it
// is told to stop, like Kubernetes' own pause image (which cannot be pulled
// here).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
