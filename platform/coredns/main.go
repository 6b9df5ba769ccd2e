// Command coredns is CoreDNS built from the pinned github.com/coredns/coredns
// module with only the plugins the local cluster's Corefile uses
// (loopline/cluster/dns.py): the kubernetes plugin answers for Services and
// pods, forward sends every other name to the host's resolvers. No distro
// ships a CoreDNS as new as the Kubernetes it serves, and nothing can be pulled
// as an image here, so it runs as a host process of the cluster.
//
// Importing a plugin package registers it; the order plugins run in is
// CoreDNS's own (dnsserver.Directives), not the order of these imports.
package main

import (
	_ "github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/debug"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() {
	coremain.Run()
}
