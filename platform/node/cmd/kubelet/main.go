// Command kubelet is upstream's cmd/kubelet main, built from the pinned
// k8s.io/kubernetes module (the same pin as the control plane), so the real
// node of `loopline cluster up --runtime containerd` runs the exact version of
// the API server it talks to.
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	command := app.NewKubeletCommand(context.Background())
	os.Exit(cli.Run(command))
}
