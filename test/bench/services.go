package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
)

// bundleResource is where the loopback service serves the scenario's
// bundle; logsPath is where OPA's decision log plugin uploads.
const (
	bundleResource = "/bundles/authz.tar.gz"
	logsPath       = "/logs"
)

// opaServices is the control plane of the OPA-configured scenarios, on
// loopback in the harness's process: a bundle service serving the
// scenario's policy as a bundle built with OPA's bundle package, and a
// decision log collector that reads (and gunzips nothing: it counts bytes)
// every upload and answers 204, as a collector that keeps up would.
type opaServices struct {
	*httptest.Server
	uploads, uploadBytes atomic.Int64
}

// startOPAServices builds the bundle of module (roots envoy) and serves it.
func startOPAServices(module string) (*opaServices, error) {
	parsed, err := ast.ParseModuleWithOpts("/envoy/authz.rego", module, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("bundle policy: %w", err)
	}
	roots := []string{"envoy"}
	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: "bench", Roots: &roots},
		Data:     map[string]any{},
		Modules:  []bundle.ModuleFile{{URL: "/envoy/authz.rego", Path: "/envoy/authz.rego", Raw: []byte(module), Parsed: parsed}},
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	tarball := buf.Bytes()
	s := &opaServices{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && r.URL.Path == bundleResource:
			if r.Header.Get("If-None-Match") == `"bench"` {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			w.Header().Set("Content-Type", "application/gzip")
			w.Header().Set("ETag", `"bench"`)
			_, _ = w.Write(tarball)
		case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, logsPath):
			n, _ := io.Copy(io.Discard, r.Body)
			s.uploads.Add(1)
			s.uploadBytes.Add(n)
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, r)
		}
	}))
	return s, nil
}

// opaConfig fills an OPA-configured scenario's configuration template:
// @ADDR@ is the ext_authz listener, @SERVICE@ the loopback services' URL.
func opaConfig(template, addr, serviceURL string) string {
	return strings.NewReplacer("@ADDR@", addr, "@SERVICE@", serviceURL).Replace(template)
}

// bundleFedConfig is the OPA configuration of the bundle-fed scenario: the
// policy from the loopback bundle service, polled as a deployment would
// (the bundle does not change during the run), no decision logs.
const bundleFedConfig = `services:
  - name: control
    url: @SERVICE@
bundles:
  authz:
    service: control
    resource: ` + bundleResource + `
    polling: {min_delay_seconds: 10, max_delay_seconds: 20}
plugins:
  envoy_ext_authz_grpc:
    addr: @ADDR@
    path: envoy/authz/allow
`

// decisionLogConfig is bundleFedConfig with decision log upload on: every
// decision (OPA's decision log plugin samples nothing out) uploaded to the
// loopback collector, gzip-compressed in OPA's batches, every second.
const decisionLogConfig = bundleFedConfig + `decision_logs:
  service: control
  reporting: {min_delay_seconds: 1, max_delay_seconds: 1}
`
