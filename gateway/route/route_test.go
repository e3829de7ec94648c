package route

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		path, host, suffix string
		ns, name, to       string // to == "" means not routed
	}{
		{"/endpoints/team-a/chat/score", "gw:8080", "", "team-a", "chat", "/score"},
		{"/endpoints/team-a/chat/v1/chat/completions", "", "leo.example", "team-a", "chat", "/v1/chat/completions"},
		{"/score", "chat.team-a.leo.example", "leo.example", "team-a", "chat", "/score"},
		{"/v1/models", "CHAT.TEAM-A.LEO.EXAMPLE:443", "leo.example", "team-a", "chat", "/v1/models"},
		{"/score", "chat.team-a.leo.example", "", "", "", ""},           // host routing off
		{"/score", "a.b.team-a.leo.example", "leo.example", "", "", ""}, // namespace with a dot
		{"/score", "team-a.leo.example", "leo.example", "", "", ""},     // no name
		{"/endpoints//x/score", "", "", "", "", ""},                     // empty namespace
		{"/endpoints/ns/chat", "", "", "", "", ""},                      // no path
		{"/endpoints/ns/chat/metrics", "", "", "", "", ""},              // not an API path
		{"/healthz", "chat.ns.leo.example", "leo.example", "", "", ""},
	} {
		ns, name, to, ok := Parse(c.path, c.host, c.suffix)
		if ok != (c.to != "") || ns != c.ns || name != c.name || to != c.to {
			t.Errorf("Parse(%q, %q, %q) = %q, %q, %q, %v; want %q, %q, %q", c.path, c.host, c.suffix, ns, name, to, ok, c.ns, c.name, c.to)
		}
	}
}

// FuzzParse checks that whatever the path and host, a routed request names
// a namespace and a name without slashes, and one of the pods' API paths.
func FuzzParse(f *testing.F) {
	f.Add("/endpoints/ns/chat/score", "gw:8080")
	f.Add("/endpoints/ns/chat/v1/chat/completions", "")
	f.Add("/score", "chat.ns.leo.example")
	f.Add("/v1/models", "CHAT.NS.LEO.EXAMPLE:443")
	f.Add("/endpoints//x/score", "a..leo.example")
	f.Fuzz(func(t *testing.T, path, host string) {
		ns, name, p, ok := Parse(path, host, "leo.example")
		if !ok {
			return
		}
		if ns == "" || name == "" || strings.Contains(ns, "/") || strings.Contains(name, "/") || (p != "/score" && !strings.HasPrefix(p, "/v1/")) {
			t.Errorf("%q on %q routed to %q/%q path %q", path, host, ns, name, p)
		}
	})
}
