// Command gatehouse is the Gatehouse ext_authz server: Envoy's
// Authorization/Check over gRPC, decided by Rego policies.
//
//	gatehouse [--config gatehouse.yaml] [--grpc-addr :9191] [--http-addr :8181] [--admin-addr 127.0.0.1:9192] [--address-file PATH]
//	gatehouse validate [--config gatehouse.yaml] [--jwks]
//	gatehouse run --server [OPA-Envoy's flags] [paths...]
//	gatehouse --version
//
// With no --config it runs on the embedded defaults. validate loads the
// configuration and its policies as the server does at start, without
// listening, and exits 0 when the server would start (validate.go). run takes
// OPA-Envoy's command line and OPA's configuration file (run.go).
//
// With --address-file it writes the bound listener addresses as a JSON
// object once it listens ({"grpc": "127.0.0.1:40123", "http":
// "127.0.0.1:40124"}), so a supervisor or a test that asked for port 0 learns
// the ports without reading the log.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/internal/asynclog"
	"github.com/gatehouse-dev/gatehouse/internal/version"
)

const mainUsage = `Usage: gatehouse [--config FILE] [--grpc-addr ADDR] [--http-addr ADDR] [--admin-addr ADDR] [--address-file PATH]
       gatehouse validate [--config FILE] [--jwks]   (check a configuration; --help for more)
       gatehouse run --server [OPA-Envoy's flags] [paths...]   (drop-in for OPA-Envoy; --help for more)
       gatehouse --version

`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run parses the flags, loads the configuration and serves until SIGINT or
// SIGTERM, or runs the validate subcommand. Exit codes: 0 after a clean stop,
// 1 when serving failed, 2 for a usage or configuration error.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "validate" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return validate(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "run" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return runOPAEnvoy(ctx, args[1:], stderr)
	}
	fs := flag.NewFlagSet("gatehouse", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file (YAML); empty runs on the embedded defaults")
	grpcAddr := fs.String("grpc-addr", "", "ext_authz gRPC listen address, overrides listen.grpc (default \":9191\")")
	httpAddr := fs.String("http-addr", "", "operations HTTP listen address, overrides listen.http (default \":8181\")")
	adminAddr := fs.String("admin-addr", "", "admin gRPC listen address, overrides listen.admin (default \"127.0.0.1:9192\")")
	addressFile := fs.String("address-file", "", "write the bound listener addresses as JSON to this file once listening (replaced atomically)")
	showVersion := fs.Bool("version", false, "print the version, the VCS revision and the Go version, and exit")
	fs.Usage = func() {
		fmt.Fprint(stderr, mainUsage)
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(fs, args, stderr); !ok {
		return code
	}
	if *showVersion {
		fmt.Fprintln(stdout, "gatehouse", version.Get())
		return 0
	}
	cfg := config.Default()
	if *configPath != "" {
		var err error
		if cfg, err = config.Load(*configPath); err != nil {
			fmt.Fprintf(stderr, "gatehouse: %v\n", err)
			return 2
		}
	}
	if *grpcAddr != "" {
		cfg.Listen.GRPC = *grpcAddr
	}
	if *httpAddr != "" {
		cfg.Listen.HTTP = *httpAddr
	}
	if *adminAddr != "" {
		cfg.Listen.Admin = *adminAddr
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "gatehouse: flags: %v\n", err)
		return 2
	}

	logger, out := newLogger(stderr, cfg.Log.Level, "json")
	defer out.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	overrides := func(c *config.Config) {
		if *grpcAddr != "" {
			c.Listen.GRPC = *grpcAddr
		}
		if *httpAddr != "" {
			c.Listen.HTTP = *httpAddr
		}
		if *adminAddr != "" {
			c.Listen.Admin = *adminAddr
		}
	}
	if err := serve(ctx, cfg, serveOptions{configFile: *configPath, addressFile: *addressFile, overrides: overrides}, logger, out); err != nil {
		var ce *configError
		if errors.As(err, &ce) {
			fmt.Fprintf(stderr, "gatehouse: %v\n", err)
			return 2
		}
		logger.Error("gatehouse stopped", "error", err.Error())
		return 1
	}
	return 0
}

// newLogger returns the operational logger and the writer decision records
// go to. One writer goroutine owns stderr: decision records are queued
// (dropped and counted when the queue is full, never blocking a check);
// operational records wait for room and are never dropped. format is json
// (or json-pretty, written as json) or text.
func newLogger(stderr io.Writer, lvl, format string) (*slog.Logger, *asynclog.Writer) {
	handlerOpts := &slog.HandlerOptions{Level: level(lvl)}
	handler := func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, handlerOpts) }
	if format == "text" {
		handler = func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, handlerOpts) }
	}
	direct := slog.New(handler(stderr))
	out := asynclog.New(stderr, asynclog.Options{ReportDropped: func(n uint64) {
		direct.Warn("decision log records dropped: the log output is slower than the checks", "dropped", n)
	}})
	return slog.New(handler(out.Blocking())), out
}

func level(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}
