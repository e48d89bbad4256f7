package opaenvoy

import (
	"context"
	"reflect"

	"github.com/open-policy-agent/opa/v1/plugins"
)

// extAuthzFactory registers OPA-Envoy's plugin name with the plugin manager,
// so that the manager (and discovery) validate its configuration as
// OPA-Envoy does and list it among the plugins /health?plugins checks. The
// gRPC server itself is Gatehouse's, started by cmd/gatehouse from the
// configuration read at start (Runtime.ExtAuthz).
type extAuthzFactory struct{ runtime *Runtime }

var _ plugins.Factory = (*extAuthzFactory)(nil)

// Validate parses the plugin's configuration.
func (*extAuthzFactory) Validate(_ *plugins.Manager, config []byte) (any, error) {
	return ParseExtAuthz(config)
}

// New returns the plugin; its status is not ready until Runtime.Serving.
func (f *extAuthzFactory) New(m *plugins.Manager, config any) plugins.Plugin {
	m.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateNotReady})
	return &extAuthzPlugin{runtime: f.runtime}
}

// extAuthzPlugin stands for Gatehouse's ext_authz server in the manager.
type extAuthzPlugin struct{ runtime *Runtime }

// Start does nothing: the listener is Gatehouse's.
func (*extAuthzPlugin) Start(context.Context) error { return nil }

// Stop does nothing: Gatehouse stops its listener on SIGTERM.
func (*extAuthzPlugin) Stop(context.Context) {}

// Reconfigure is called when discovery delivers a new configuration. The
// listener and decision path were fixed at start, so a different
// configuration is logged as needing a restart rather than half applied.
func (p *extAuthzPlugin) Reconfigure(_ context.Context, config any) {
	if c, ok := config.(ExtAuthz); ok && !reflect.DeepEqual(c, p.runtime.ext) {
		p.runtime.logger.Error("plugins." + PluginName + " changed (discovery); restart Gatehouse to apply it, the configuration read at start stays in effect")
	}
}
