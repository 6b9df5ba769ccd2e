// Command etcd is etcd's own server entry point (etcdmain), built from the
// pinned go.etcd.io/etcd/server/v3 module: distro etcd (3.4) is older than
// the 3.5.11 minimum that Kubernetes 1.31+ requires.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
