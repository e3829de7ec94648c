// Package route says which endpoint a request to the gateway is for, from
// its path or its Host. It has no dependencies beyond the standard library
// so that its fuzz target builds in seconds (the gateway package pulls in
// the Kubernetes client libraries, which a fuzz build instruments anew).
package route

import (
	"net"
	"strings"
)

// Parse finds the endpoint (namespace and name) and the path to send its
// pods: from /endpoints/<ns>/<name>/<path>, or from a host of the form
// <name>.<ns>.<hostSuffix> (with any port; case-insensitive) when
// hostSuffix is set. Only the pods' API paths (/score and /v1/...) are
// routed; ok is false for anything else.
func Parse(urlPath, host, hostSuffix string) (ns, name, path string, ok bool) {
	if rest, found := strings.CutPrefix(urlPath, "/endpoints/"); found {
		parts := strings.SplitN(rest, "/", 3)
		if len(parts) != 3 {
			return "", "", "", false
		}
		ns, name, path = parts[0], parts[1], "/"+parts[2]
	} else if hostSuffix != "" {
		host = strings.ToLower(host)
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		prefix, found := strings.CutSuffix(host, "."+strings.ToLower(hostSuffix))
		if !found {
			return "", "", "", false
		}
		name, ns, found = strings.Cut(prefix, ".")
		if !found || strings.Contains(ns, ".") {
			return "", "", "", false
		}
		path = urlPath
	} else {
		return "", "", "", false
	}
	if ns == "" || name == "" || (path != "/score" && !strings.HasPrefix(path, "/v1/")) {
		return "", "", "", false
	}
	return ns, name, path, true
}
