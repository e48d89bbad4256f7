package testutil

import (
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// ServeAuthorization serves srv as Envoy's Authorization service on a free
// loopback port until the test ends, and returns the address.
func ServeAuthorization(t testing.TB, srv authv3.AuthorizationServer, opts ...grpc.ServerOption) string {
	t.Helper()
	lis := Listen(t)
	gs := grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(gs, srv)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

// AuthorizationClient dials addr over plaintext gRPC, closed when the test
// ends.
func AuthorizationClient(t testing.TB, addr string) authv3.AuthorizationClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}
