// Package deploy verifies the manifests under deploy/: every file parses,
// every object decodes strictly into its Kubernetes, Istio, Gateway API or
// Envoy type, kustomize renders every kustomization, and the files agree with
// each other. It is its own Go module so that these heavy dependencies never
// reach the server's.
package deploy
