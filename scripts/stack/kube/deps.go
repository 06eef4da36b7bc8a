//go:build tools

// Package tools pins the Kubernetes commands the stack builds from this module.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubectl/pkg/cmd"
)
