// Command kube-proxy is upstream's cmd/kube-proxy main, built from the pinned
// k8s.io/kubernetes module: it programs the iptables rules that make Service
// ClusterIPs (kube-dns's among them) reachable from pods and from the host.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	os.Exit(cli.Run(app.NewProxyCommand()))
}
