// Command kubectl is upstream's cmd/kubectl main, built in the same module as
// kube-apiserver so client and server are the exact same version on every
// machine (a system kubectl may be missing or skewed).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"

	// Import to initialize client auth plugins.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

func main() {
	// Upstream sets the log verbosity before building the command so klog
	// honours -v while kubectl reads its .kuberc and plugins.
	logs.GlogSetter(cmd.GetLogVerbosity(os.Args)) // nolint:errcheck
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
