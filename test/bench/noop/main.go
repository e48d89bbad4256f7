// Command noop is the no-op ext_authz server of the benchmark harness: a
// grpc-go server that allows every CheckRequest without looking at it. Its
// CPU time per check is the physical limit of an ext_authz gRPC server in Go
// (HTTP/2 framing, protobuf decoding, scheduling), the baseline that every
// other server's cost is divided by.
//
//	noop --addr 127.0.0.1:9191
//
// It serves grpc.health.v1 (SERVING once listening) and stops on SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// allowAll answers every Check with OK. The response is built once: the
// baseline must not spend CPU a real server could also avoid.
type allowAll struct {
	ok *authv3.CheckResponse
}

var _ authv3.AuthorizationServer = (*allowAll)(nil)

func (a *allowAll) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return a.ok, nil
}

// newServer returns a gRPC server with the allow-all Authorization service
// and a health service reporting SERVING.
func newServer() *grpc.Server {
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, &allowAll{ok: &authv3.CheckResponse{
		Status:       &status.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
	}})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	return gs
}

func main() {
	fs := flag.NewFlagSet("noop", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "`host:port` to serve ext_authz gRPC on")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "noop:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	gs := newServer()
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	fmt.Fprintf(os.Stderr, "noop: listening on %s\n", lis.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		gs.GracefulStop()
		return nil
	}
}
