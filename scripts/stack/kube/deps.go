//go:build tools

// Package tools pins the Kubernetes commands the stack builds from this module: the API server and
// kubectl (scripts/stack/kubernetes.ts), the node's kubelet, controller-manager and scheduler
// (scripts/stack/node.ts).
package tools

import (
	_ "k8s.io/kubectl/pkg/cmd"
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
