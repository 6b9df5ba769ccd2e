"""The containerd node of the local cluster (`loopline cluster up --runtime containerd`):
containerd, the kubelet and kube-proxy running real pods on this machine."""
