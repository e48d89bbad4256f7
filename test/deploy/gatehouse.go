package deploy

import (
	"fmt"
	"net"
	"strconv"
	"time"

	sigsyaml "sigs.k8s.io/yaml"
)

// GatehouseConfig holds the keys of a Gatehouse configuration file that the
// manifests must agree with. The server module's test (test/deploy_config_test.go)
// loads the same files into the real server; here they are only cross-checked.
type GatehouseConfig struct {
	Listen struct {
		GRPC string `json:"grpc"`
		HTTP string `json:"http"`
	} `json:"listen"`
	GRPC struct {
		ShutdownGrace string `json:"shutdown_grace"`
	} `json:"grpc"`
	Policy struct {
		Paths  []string `json:"paths"`
		DryRun bool     `json:"dry_run"`
	} `json:"policy"`
	ClientIP struct {
		Source         string `json:"source"`
		XFFTrustedHops int    `json:"xff_trusted_hops"`
	} `json:"client_ip"`
}

// ParseGatehouseConfig reads the keys above (other keys are the server's
// business and are checked by the server module).
func ParseGatehouseConfig(data []byte) (*GatehouseConfig, error) {
	var c GatehouseConfig
	if err := sigsyaml.Unmarshal(data, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// Port returns the port of a listen address such as ":9191".
func Port(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(p)
}

// ShutdownGraceDuration returns grpc.shutdown_grace, or the server's default (15s).
func (c *GatehouseConfig) ShutdownGraceDuration() (time.Duration, error) {
	if c.GRPC.ShutdownGrace == "" {
		return 15 * time.Second, nil
	}
	d, err := time.ParseDuration(c.GRPC.ShutdownGrace)
	if err != nil {
		return 0, fmt.Errorf("grpc.shutdown_grace: %w", err)
	}
	return d, nil
}
