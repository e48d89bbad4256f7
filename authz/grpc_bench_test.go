package authz

import (
	"context"
	"io"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"

	gjwt "github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/internal/asynclog"
	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

type noopAuthz struct{ ok *authv3.CheckResponse }

func (n noopAuthz) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return n.ok, nil
}

// BenchmarkGRPCCheck runs whole checks over a real loopback gRPC connection,
// client and server in this process: "noop" is a server that allows
// everything (the limit of the design); the others are Gatehouse's native
// paths with the decision log on, written asynchronously to io.Discard.
// Compare as ratios within one run; for the server's CPU alone, use
// make bench (test/bench), which measures separate processes.
func BenchmarkGRPCCheck(b *testing.B) {
	req := checkReq("GET", "/orders/42?expand=items", map[string]string{
		"user-agent": "curl/8.5", "accept": "*/*", "x-request-id": "3f1c", "x-forwarded-proto": "https",
		"x-tenant-id": "acme", "x-env": "prod", "authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
	}, "")
	rules := config.HeaderRules{Deny: []config.HeaderMatch{{Name: "user-agent", Regex: "(?i)sqlmap|nikto"}}}
	valid := fixedTokens{&gjwt.Result{Valid: true, Provider: "corp", Headers: []gjwt.Header{{Key: "x-jwt-sub", Value: "alice"}}}}
	cases := []struct {
		name string
		srv  func(b *testing.B) authv3.AuthorizationServer
	}{
		{"noop", func(*testing.B) authv3.AuthorizationServer {
			return noopAuthz{&authv3.CheckResponse{Status: &status.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}}}
		}},
		{"native/valid_token/log", func(b *testing.B) authv3.AuthorizationServer {
			s := benchServer(b, withBypass(cidrs(10), rules), nil, valid)
			w := asynclog.New(io.Discard, asynclog.Options{})
			b.Cleanup(func() { w.Close() })
			s.opts.DecisionLog = w
			return s
		}},
		{"native/valid_token/nolog", func(b *testing.B) authv3.AuthorizationServer {
			return benchServer(b, withBypass(cidrs(10), rules), nil, valid)
		}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			addr := testutil.ServeAuthorization(b, tc.srv(b), grpc.ForceServerCodecV2(Codec(Limits{})))
			c := testutil.AuthorizationClient(b, addr)
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.Check(context.Background(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
