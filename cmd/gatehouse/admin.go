package main

import (
	"context"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse-dev/gatehouse/authz"
	"github.com/gatehouse-dev/gatehouse/internal/version"
	"github.com/gatehouse-dev/gatehouse/policy"
	adminv1 "github.com/gatehouse-dev/gatehouse/proto/gatehouse/admin/v1"
)

// adminServer serves gatehouse.admin.v1 over the parts: it only maps
// between the admin protos and authz/policy/jwt, which own the answers.
type adminServer struct {
	adminv1.UnimplementedAdminServiceServer
	p *parts
}

var _ adminv1.AdminServiceServer = (*adminServer)(nil)

// Explain implements adminv1.AdminServiceServer.
func (a *adminServer) Explain(ctx context.Context, req *adminv1.ExplainRequest) (*adminv1.Explanation, error) {
	var check authv3.CheckRequest
	if err := proto.Unmarshal(req.GetCheckRequest(), &check); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "check_request is not a serialized envoy.service.auth.v3.CheckRequest: %v", err)
	}
	x, err := a.p.authz.Explain(ctx, &check)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	out := &adminv1.Explanation{
		Allowed:        x.Allowed,
		HttpStatus:     int32(x.Status),
		Outcome:        x.Outcome,
		Reason:         x.Reason,
		Error:          x.Error,
		PolicyRevision: x.Revision,
		Native:         a.p.policy.Native(),
		Bypass:         x.Bypass,
		ClientIp: &adminv1.ClientIP{
			Address:  x.ClientIP.ClientIP(),
			Source:   x.ClientIP.Source,
			Fallback: x.ClientIP.Fallback,
		},
		Body: x.Body,
	}
	if t := x.Token; t != nil {
		out.Token = &adminv1.Token{Valid: t.Valid, Provider: t.Provider, Error: t.Error, Detail: t.Detail}
	}
	for _, s := range x.Steps {
		out.Steps = append(out.Steps, &adminv1.Step{Name: s.Name, Outcome: s.Outcome, Detail: s.Detail})
	}
	for _, h := range x.Headers {
		if h.Key == authz.DecisionIDHeader {
			continue
		}
		out.Headers = append(out.Headers, &adminv1.Header{Key: h.Key, Value: h.Value})
	}
	return out, nil
}

// Status implements adminv1.AdminServiceServer.
func (a *adminServer) Status(context.Context, *adminv1.StatusRequest) (*adminv1.Status, error) {
	build := version.Get()
	st := &adminv1.Status{Version: build.Version, Revision: build.Revision, Policy: policyStatus(a.p.policy)}
	if a.p.shadowPolicy != nil {
		st.Shadow = policyStatus(a.p.shadowPolicy)
	}
	stats := a.p.tokens.Stats()
	keys := a.p.tokens.Keys()
	for i, ps := range stats.Providers {
		pr := &adminv1.Provider{
			Name:                ps.Name,
			Ready:               ps.Ready,
			Fetches:             ps.Fetches,
			FetchFailures:       ps.FetchFailures,
			UnknownKidRefetches: ps.UnknownKidRefetches,
			LastRefresh:         timestamp(ps.Updated),
			LastError:           ps.LastError,
			LastErrorTime:       timestamp(ps.LastErrorAt),
		}
		if i < len(keys) && keys[i].Name == ps.Name {
			pr.KeyIds = keys[i].KeyIDs
		}
		st.Providers = append(st.Providers, pr)
	}
	st.TokenCache = &adminv1.TokenCache{
		Entries: uint64(a.p.tokens.CacheLen()),
		Hits:    stats.CacheHits,
		Misses:  stats.CacheMisses,
	}
	if a.p.bundles != nil {
		for _, b := range a.p.bundles() {
			st.Bundles = append(st.Bundles, &adminv1.Bundle{
				Name: b.Name, Revision: b.Revision, ActivatedAt: timestamp(b.ActivatedAt), Error: b.Error,
			})
		}
	}
	return st, nil
}

func policyStatus(e *policy.Engine) *adminv1.Policy {
	ps := &adminv1.Policy{
		Revision: e.Revision(),
		LoadedAt: timestamp(e.LoadedAt()),
		Native:   e.Native(),
		Paths:    e.Paths(),
		Decision: e.DecisionPath(),
	}
	if le := e.LastReloadError(); le != nil {
		ps.LastReloadError = le.Err.Error()
		ps.LastReloadErrorAt = timestamp(le.At)
	}
	return ps
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// newAdminGRPC is the admin listener's gRPC server: the admin service and
// health, on a server of its own so that it never shares limits or
// interceptors with Check.
func newAdminGRPC(p *parts) *grpc.Server {
	s := grpc.NewServer()
	adminv1.RegisterAdminServiceServer(s, &adminServer{p: p})
	reflection.Register(s)
	return s
}
