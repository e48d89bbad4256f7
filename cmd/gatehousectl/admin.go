package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/gatehouse-dev/gatehouse/proto/gatehouse/admin/v1"
)

// defaultAdminAddr is Gatehouse's listen.admin default.
const defaultAdminAddr = "127.0.0.1:9192"

const explainUsage = `Usage: gatehousectl explain [flags]

Ask a running Gatehouse (its admin listener, listen.admin) why a request would
be allowed or denied: the decision, the resolved client IP and how it was found,
the token verdict, and the policy steps that fired. The request is built exactly
as 'gatehousectl check' builds it, from the same flags. Explaining has no side
effects: no decision log line, no metrics.

Exit codes: 0 allowed, 1 denied, 2 error.

Examples:
  gatehousectl explain --path /admin -H 'x-debug: 1'
  gatehousectl explain --source-ip 203.0.113.7 -H 'x-forwarded-for: 10.0.0.1'
  gatehousectl explain --token "$(cat token.jwt)" --json | jq .steps
`

const statusUsage = `Usage: gatehousectl status [flags]

Show a running Gatehouse's state from its admin listener: version and VCS
revision, policy revision and load time, the last reload error, each JWT
provider's key ids and last refresh, and the verified-token cache.

Exit codes: 0 done, 2 error.
`

func (a *app) explain(ctx context.Context, args []string) error {
	o, err := parseRequestFlags("explain", explainUsage, defaultAdminAddr, args, a.stdin)
	if err != nil {
		return err
	}
	req, err := a.prepareRequest(&o)
	if err != nil || req == nil {
		return err
	}
	raw, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	conn, err := dial(o.conn)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, o.conn.timeout)
	defer cancel()
	x, err := adminv1.NewAdminServiceClient(conn).Explain(ctx, &adminv1.ExplainRequest{CheckRequest: raw})
	if err != nil {
		return fmt.Errorf("explain %s: %w", o.conn.addr, err)
	}
	if o.jsonOutput {
		err = writeProtoJSON(a.stdout, x)
	} else {
		err = writeExplanation(a.stdout, x)
	}
	if err != nil {
		return err
	}
	if !x.GetAllowed() {
		return errDenied
	}
	return nil
}

func (a *app) status(ctx context.Context, args []string) error {
	var c connOptions
	var asJSON, plaintext bool
	fs := newFlagSet("status")
	fs.StringVar(&c.addr, "addr", defaultAdminAddr, "Gatehouse admin gRPC `host:port` (listen.admin)")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Second, "deadline of the call")
	fs.BoolVar(&plaintext, "insecure", false, "plaintext gRPC, no TLS (the default; conflicts with --tls)")
	fs.BoolVar(&c.tls, "tls", false, "use TLS, verifying the server with the system roots or --ca-file")
	fs.StringVar(&c.caFile, "ca-file", "", "PEM CA bundle to verify the server (implies --tls)")
	fs.BoolVar(&asJSON, "json", false, "print the status as one JSON object (the admin API's Status message)")
	pos, err := parseFlags(fs, "status", statusUsage, args)
	if err != nil {
		return err
	}
	if err := refuseArguments("status", statusUsage, pos, 0, ""); err != nil {
		return err
	}
	if c.caFile != "" {
		c.tls = true
	}
	if plaintext && c.tls {
		return usageErrorf("status", "--insecure (plaintext) conflicts with --tls/--ca-file")
	}
	if c.timeout <= 0 {
		return usageErrorf("status", "--timeout must be positive")
	}
	conn, err := dial(c)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	st, err := adminv1.NewAdminServiceClient(conn).Status(ctx, &adminv1.StatusRequest{})
	if err != nil {
		return fmt.Errorf("status %s: %w", c.addr, err)
	}
	if asJSON {
		return writeProtoJSON(a.stdout, st)
	}
	return writeStatus(a.stdout, st)
}

// writeProtoJSON prints m as protojson with the proto field names, every
// field present, one object.
func writeProtoJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func writeExplanation(w io.Writer, x *adminv1.Explanation) error {
	var b strings.Builder
	verdict := "DENIED"
	if x.GetAllowed() {
		verdict = "ALLOWED"
	}
	fmt.Fprintf(&b, "%s %d  reason=%s  outcome=%s\n", verdict, x.GetHttpStatus(), x.GetReason(), x.GetOutcome())
	if x.GetError() != "" {
		fmt.Fprintf(&b, "error:     %s\n", x.GetError())
	}
	mode := "custom Rego"
	if x.GetNative() {
		mode = "native default decision"
	}
	fmt.Fprintf(&b, "policy:    %s (%s)\n", x.GetPolicyRevision(), mode)
	ip := x.GetClientIp()
	fmt.Fprintf(&b, "client ip: %s  source=%s", orDash(ip.GetAddress()), ip.GetSource())
	if ip.GetFallback() != "" {
		fmt.Fprintf(&b, "  fallback=%s", ip.GetFallback())
	}
	b.WriteByte('\n')
	if t := x.GetToken(); t == nil {
		b.WriteString("token:     none presented\n")
	} else if t.GetValid() {
		fmt.Fprintf(&b, "token:     valid (provider %s)\n", t.GetProvider())
	} else {
		fmt.Fprintf(&b, "token:     invalid: %s", t.GetError())
		if t.GetDetail() != "" {
			fmt.Fprintf(&b, " (%s)", t.GetDetail())
		}
		b.WriteByte('\n')
	}
	if x.GetBypass() {
		b.WriteString("bypass:    trusted client IP\n")
	}
	b.WriteString("steps:\n")
	for i, s := range x.GetSteps() {
		fmt.Fprintf(&b, "  %2d. %-10s %s", i+1, s.GetOutcome(), s.GetName())
		if s.GetDetail() != "" {
			fmt.Fprintf(&b, ": %s", s.GetDetail())
		}
		b.WriteByte('\n')
	}
	if x.GetBody() != "" {
		fmt.Fprintf(&b, "body:      %s\n", x.GetBody())
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeStatus(w io.Writer, st *adminv1.Status) error {
	var b strings.Builder
	fmt.Fprintf(&b, "version:   %s\n", st.GetVersion())
	fmt.Fprintf(&b, "revision:  %s\n", orDash(st.GetRevision()))
	writePolicyStatus(&b, "policy", st.GetPolicy())
	if st.GetShadow() != nil {
		writePolicyStatus(&b, "shadow", st.GetShadow())
	}
	if len(st.GetProviders()) == 0 {
		b.WriteString("jwt:       no providers\n")
	}
	for _, p := range st.GetProviders() {
		fmt.Fprintf(&b, "provider:  %s  ready=%t  keys=[%s]  last_refresh=%s  fetches=%d failures=%d unknown_kid_refetches=%d\n",
			p.GetName(), p.GetReady(), strings.Join(p.GetKeyIds(), ", "), when(p.GetLastRefresh()),
			p.GetFetches(), p.GetFetchFailures(), p.GetUnknownKidRefetches())
		if p.GetLastError() != "" {
			fmt.Fprintf(&b, "           last error at %s: %s\n", when(p.GetLastErrorTime()), p.GetLastError())
		}
	}
	c := st.GetTokenCache()
	fmt.Fprintf(&b, "cache:     %d entries, %d hits, %d misses\n", c.GetEntries(), c.GetHits(), c.GetMisses())
	for _, bu := range st.GetBundles() {
		fmt.Fprintf(&b, "bundle:    %s  revision=%s  activated=%s\n", bu.GetName(), orDash(bu.GetRevision()), when(bu.GetActivatedAt()))
		if bu.GetError() != "" {
			fmt.Fprintf(&b, "           last attempt FAILED (serving the revision above): %s\n", bu.GetError())
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writePolicyStatus(b *strings.Builder, label string, p *adminv1.Policy) {
	mode := "custom Rego " + strings.Join(p.GetPaths(), ", ")
	if p.GetNative() {
		mode = "native default decision"
	}
	fmt.Fprintf(b, "%-10s %s loaded %s, %s, decision %s\n", label+":", p.GetRevision(), when(p.GetLoadedAt()), mode, p.GetDecision())
	if p.GetLastReloadError() != "" {
		fmt.Fprintf(b, "  last reload FAILED at %s (serving the revision above): %s\n", when(p.GetLastReloadErrorAt()), p.GetLastReloadError())
	}
}

func when(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "never"
	}
	t := ts.AsTime()
	return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), time.Since(t).Round(time.Second))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
