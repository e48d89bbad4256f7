package loadgen

import (
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
)

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"none", nil, 50, 0},
		{"one", ms(7), 99, 7 * time.Millisecond},
		{"median of four is the second", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p50 of 1..100", ms(hundred...), 50, 50 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100 is the maximum", ms(hundred...), 100, 100 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("Percentile(p%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

func TestOutcome(t *testing.T) {
	denied := func(code typev3.StatusCode) *authv3.CheckResponse {
		resp := &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.PermissionDenied)}}
		if code != 0 {
			resp.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: code}}}
		}
		return resp
	}
	tests := []struct {
		name string
		resp *authv3.CheckResponse
		want int
	}{
		{"allowed", &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.OK)}}, 200},
		{"allowed without a status", &authv3.CheckResponse{}, 200},
		{"denied 401", denied(typev3.StatusCode_Unauthorized), 401},
		{"denied without an HTTP status is Envoy's 403", denied(0), 403},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Outcome(tc.resp); got != tc.want {
				t.Errorf("Outcome = %d, want %d", got, tc.want)
			}
		})
	}
}
