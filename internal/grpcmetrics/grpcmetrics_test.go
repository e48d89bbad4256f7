package grpcmetrics

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// TestCountsByMethodAndCode: every registered method shows from Init at 0;
// calls are counted by code, through the pre-resolved counters without an
// allocation, and an unregistered method still by its own labels.
func TestCountsByMethodAndCode(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	m.Init(s)
	const svc = "grpc.health.v1.Health"
	if got := testutil.ToFloat64(m.handled.WithLabelValues(svc, "Check", "OK")); got != 0 {
		t.Fatalf("before any call: %v", got)
	}

	unary := m.UnaryInterceptor()
	call := func(method string, err error) {
		_, _ = unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: method},
			func(context.Context, any) (any, error) { return nil, err })
	}
	call("/"+svc+"/Check", nil)
	call("/"+svc+"/Check", nil)
	call("/"+svc+"/Check", status.Error(codes.PermissionDenied, "no"))
	call("/other.Service/Do", status.Error(codes.Unavailable, "down"))

	for _, tc := range []struct {
		service, method, code string
		want                  float64
	}{
		{svc, "Check", "OK", 2},
		{svc, "Check", "PermissionDenied", 1},
		{svc, "Watch", "OK", 0},
		{"other.Service", "Do", "Unavailable", 1},
	} {
		if got := testutil.ToFloat64(m.handled.WithLabelValues(tc.service, tc.method, tc.code)); got != tc.want {
			t.Errorf("%s/%s %s = %v, want %v", tc.service, tc.method, tc.code, got, tc.want)
		}
	}
	if allocs := testing.AllocsPerRun(100, func() { m.count("/"+svc+"/Check", nil) }); allocs != 0 {
		t.Errorf("counting a registered method allocates %v times", allocs)
	}
}
