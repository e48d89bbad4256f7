// Package grpcmetrics counts the RPCs a gRPC server handles, by service,
// method and status code, with the counters of every registered method
// resolved once so that counting a call costs no allocation.
package grpcmetrics

import (
	"context"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// numCodes is the number of gRPC status codes (OK to Unauthenticated).
const numCodes = int(codes.Unauthenticated) + 1

// Metrics are a gRPC server's RPC counters:
//
//	gatehouse_grpc_server_handled_total{grpc_service, grpc_method, grpc_code}
type Metrics struct {
	handled *prometheus.CounterVec
	// methods maps a full method name to its counters by code; built by
	// Init once the services are registered, then read without a lock.
	methods atomic.Pointer[map[string]*[numCodes]prometheus.Counter]
}

// New registers the metrics on reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{handled: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_grpc_server_handled_total",
		Help: "RPCs completed by the gRPC servers, by service, method and status code.",
	}, []string{"grpc_service", "grpc_method", "grpc_code"})}
	if err := reg.Register(m.handled); err != nil {
		return nil, err
	}
	empty := map[string]*[numCodes]prometheus.Counter{}
	m.methods.Store(&empty)
	return m, nil
}

// Init resolves the counters of every method registered on servers, and
// creates those of OK so that each method shows from the first scrape.
func (m *Metrics) Init(servers ...*grpc.Server) {
	methods := map[string]*[numCodes]prometheus.Counter{}
	for _, s := range servers {
		for service, info := range s.GetServiceInfo() {
			for _, mi := range info.Methods {
				var byCode [numCodes]prometheus.Counter
				for c := range numCodes {
					byCode[c] = m.handled.WithLabelValues(service, mi.Name, codes.Code(c).String())
				}
				methods["/"+service+"/"+mi.Name] = &byCode
			}
		}
	}
	m.methods.Store(&methods)
}

// UnaryInterceptor counts unary calls.
func (m *Metrics) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		m.count(info.FullMethod, err)
		return resp, err
	}
}

// StreamInterceptor counts streaming calls (health Watch, reflection).
func (m *Metrics) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(srv, ss)
		m.count(info.FullMethod, err)
		return err
	}
}

func (m *Metrics) count(fullMethod string, err error) {
	code := codes.OK
	if err != nil {
		code = status.Code(err)
	}
	if byCode, ok := (*m.methods.Load())[fullMethod]; ok && int(code) < numCodes {
		byCode[code].Inc()
		return
	}
	// An unregistered method (answered Unimplemented): still bounded, gRPC
	// rejects it before the interceptor for unknown services.
	service, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	m.handled.WithLabelValues(service, method, code.String()).Inc()
}
