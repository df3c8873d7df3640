// Package envoy holds the bootstrap that points a real Envoy 1.37–1.40 at ccproxy's control plane
// over ADS with mutual TLS (bootstrap.yaml, and the SDS files in sds/ that name its certificate
// files). Envoy gets the rest of its configuration from package controlplane; envoysim, the Go
// data plane for development and tests, lives in envoy/envoysim.
package envoy

import (
	"bytes"
	_ "embed"
)

//go:embed bootstrap.yaml
var bootstrapYAML []byte

// BootstrapYAML returns a copy of bootstrap.yaml, the Envoy 1.40 bootstrap for a gateway pod.
func BootstrapYAML() []byte { return bytes.Clone(bootstrapYAML) }
