package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
)

const checkUsage = `Usage: gatehousectl check [flags]

Build an envoy.service.auth.v3.CheckRequest the way Envoy's ext_authz filter
fills it (pseudo-headers, lower-case header names, repeated headers joined with
",", the L4 peer as source address), send it over gRPC and print the decision.
Works against any ext_authz server.

Exit codes: 0 allowed, 1 denied, 2 error (bad flags or file, connection, timeout, gRPC error).

Examples:
  gatehousectl check --path '/api/orders?limit=10' -H 'x-tenant-id: acme' --token "$(cat token.jwt)"
  gatehousectl check --method POST --path /upload -H 'content-type: application/json' --body '{"a":1}'
  gatehousectl check --source-ip 203.0.113.7:41000 -H 'x-forwarded-for: 198.51.100.1, 203.0.113.7'
  gatehousectl check --json -H 'x-allow: yes' | jq .allowed
  gatehousectl check --dry-run -H 'x-debug: 1' > req.json   # write the request, send nothing
  gatehousectl check --request req.json --addr gatehouse.local:9191 --tls --ca-file ca.pem
`

// connOptions says how to reach the ext_authz server.
type connOptions struct {
	addr    string
	timeout time.Duration
	tls     bool
	caFile  string
}

// requestSpec is what the check flags say about the HTTP request being authorized.
type requestSpec struct {
	method            string
	path              string
	host              string
	hostSet           bool // --host was given explicitly
	scheme            string
	headers           []string // raw "name: value" flags, in order
	sourceAddr        string
	destAddr          string
	body              string
	token             string
	principal         string
	contextExtensions []string // raw "k=v" flags
}

// checkOptions is the parsed command line of `gatehousectl check`.
type checkOptions struct {
	conn         connOptions
	spec         requestSpec
	requestFile  string // --request: a protojson CheckRequest, "-" for stdin
	jsonOutput   bool
	printRequest bool
	dryRun       bool
}

// requestShapingFlags cannot be combined with --request: the file is the request.
var requestShapingFlags = []string{
	"method", "path", "host", "scheme", "H", "source-ip", "dest-ip",
	"body", "body-file", "token", "principal", "context-extension",
}

func parseCheckFlags(args []string, stdin io.Reader) (checkOptions, error) {
	return parseRequestFlags("check", checkUsage, "127.0.0.1:9191", args, stdin)
}

// parseRequestFlags parses the flags that build a CheckRequest, shared by
// check and explain (cmd names the command in errors; defaultAddr is the
// server --addr defaults to).
func parseRequestFlags(cmd, usage, defaultAddr string, args []string, stdin io.Reader) (checkOptions, error) {
	var o checkOptions
	var plaintext bool
	var bodyFile string
	var headers, exts stringList
	fs := newFlagSet(cmd)
	fs.StringVar(&o.conn.addr, "addr", defaultAddr, "gRPC server `host:port`")
	fs.DurationVar(&o.conn.timeout, "timeout", 5*time.Second, "deadline of the call")
	fs.BoolVar(&plaintext, "insecure", false, "plaintext gRPC, no TLS (the default; conflicts with --tls)")
	fs.BoolVar(&o.conn.tls, "tls", false, "use TLS, verifying the server with the system roots or --ca-file")
	fs.StringVar(&o.conn.caFile, "ca-file", "", "PEM CA bundle to verify the server (implies --tls)")
	fs.StringVar(&o.spec.method, "method", "GET", "HTTP method")
	fs.StringVar(&o.spec.path, "path", "/", "request target: path with optional query string")
	fs.StringVar(&o.spec.host, "host", "example.com", "Host / :authority")
	fs.StringVar(&o.spec.scheme, "scheme", "http", "URL scheme (:scheme)")
	fs.Var(&headers, "H", "request header `'name: value'` (repeatable; names lower-cased, repeats joined with \",\")")
	fs.StringVar(&o.spec.sourceAddr, "source-ip", "127.0.0.1", "source (downstream peer) `ip[:port]`; IPv6 with a port as [::1]:port")
	fs.StringVar(&o.spec.destAddr, "dest-ip", "", "destination `ip[:port]` (default 127.0.0.1, port 80 or 443 by scheme)")
	fs.StringVar(&o.spec.body, "body", "", "request body (adds content-length)")
	fs.StringVar(&bodyFile, "body-file", "", "read the request body from `file` (\"-\" for stdin)")
	fs.StringVar(&o.spec.token, "token", "", "bearer token: adds 'authorization: Bearer <token>'")
	fs.StringVar(&o.spec.principal, "principal", "", "source principal (mTLS peer identity, e.g. spiffe://...)")
	fs.Var(&exts, "context-extension", "route context extension `k=v` (repeatable)")
	fs.StringVar(&o.requestFile, "request", "", "send this protojson CheckRequest `file` instead (\"-\" for stdin)")
	fs.BoolVar(&o.jsonOutput, "json", false, "print the decision as one JSON object (see docs/gatehousectl.md)")
	fs.BoolVar(&o.printRequest, "print-request", false, "also print the CheckRequest as protojson on stderr before sending")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print the CheckRequest as protojson on stdout and exit without sending")

	pos, err := parseFlags(fs, cmd, usage, args)
	if err != nil {
		return o, err
	}
	hint := ""
	if len(pos) > 0 && strings.HasPrefix(pos[0], "/") {
		hint = " (the request path is given with --path)"
	}
	if err := refuseArguments(cmd, usage, pos, 0, hint); err != nil {
		return o, err
	}
	set := flagsSet(fs)
	o.spec.headers, o.spec.contextExtensions = headers, exts
	o.spec.hostSet = set["host"]
	if o.conn.caFile != "" {
		o.conn.tls = true
	}
	if plaintext && o.conn.tls {
		return o, usageErrorf(cmd, "--insecure (plaintext) conflicts with --tls/--ca-file")
	}
	if o.conn.timeout <= 0 {
		return o, usageErrorf(cmd, "--timeout must be positive")
	}
	if set["body"] && set["body-file"] {
		return o, usageErrorf(cmd, "use --body or --body-file, not both")
	}
	if bodyFile != "" {
		b, err := readFileOrStdin(bodyFile, stdin)
		if err != nil {
			return o, fmt.Errorf("--body-file: %w", err)
		}
		o.spec.body = string(b)
	}
	if o.requestFile != "" {
		for _, name := range requestShapingFlags {
			if set[name] {
				return o, usageErrorf(cmd, "--%s cannot be combined with --request (the file is the whole request)", name)
			}
		}
	}
	return o, nil
}

// prepareRequest reads or builds the CheckRequest the flags describe and
// prints it when asked (--print-request on stderr, --dry-run on stdout). A
// nil request with a nil error means --dry-run: nothing is to be sent.
func (a *app) prepareRequest(o *checkOptions) (*authv3.CheckRequest, error) {
	var req *authv3.CheckRequest
	var err error
	if o.requestFile != "" {
		req, err = readCheckRequest(o.requestFile, a.stdin)
	} else {
		req, err = buildCheckRequest(o.spec, newRequestIDs())
	}
	if err != nil {
		return nil, err
	}
	if o.dryRun || o.printRequest {
		out, err := marshalProtoJSON(req)
		if err != nil {
			return nil, err
		}
		w := a.stderr
		if o.dryRun {
			w = a.stdout
		}
		fmt.Fprintln(w, string(out))
		if o.dryRun {
			return nil, nil
		}
	}
	return req, nil
}

func (a *app) check(ctx context.Context, args []string) error {
	o, err := parseCheckFlags(args, a.stdin)
	if err != nil {
		return err
	}
	req, err := a.prepareRequest(&o)
	if err != nil || req == nil {
		return err
	}
	resp, err := sendCheck(ctx, o.conn, req)
	if err != nil {
		return err
	}
	r := resultFromCheckResponse(resp)
	if err := a.writeResult(r, o.jsonOutput); err != nil {
		return err
	}
	for _, note := range r.notes {
		fmt.Fprintf(a.stderr, "note: %s\n", note)
	}
	if !r.Allowed {
		return errDenied
	}
	return nil
}

// requestIDs supplies the random identifiers of a built request; tests pin them.
type requestIDs struct {
	streamID  string // attributes.request.http.id: Envoy's stream id, a decimal uint64
	requestID string // x-request-id header: a UUIDv4 as Envoy generates
}

func newRequestIDs() requestIDs {
	var b [24]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	u := b[8:24]
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(u)
	return requestIDs{
		streamID:  strconv.FormatUint(binary.BigEndian.Uint64(b[:8]), 10),
		requestID: h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32],
	}
}

// buildCheckRequest fills a CheckRequest as Envoy's HTTP ext_authz filter does
// for an HTTP/1.1 request: header names lower-cased, repeated headers joined
// with ",", the pseudo-headers :authority :method :path :scheme in the header
// map, the Host header folded into :authority, x-request-id and
// x-forwarded-proto added as the connection manager adds them, and the body
// with its content-length.
func buildCheckRequest(s requestSpec, ids requestIDs) (*authv3.CheckRequest, error) {
	if s.method == "" || strings.ContainsAny(s.method, " \t\r\n") {
		return nil, usageErrorf("check", "--method %q is not an HTTP method", s.method)
	}
	if s.path == "" {
		return nil, usageErrorf("check", "--path must not be empty")
	}
	if s.scheme != "http" && s.scheme != "https" {
		return nil, usageErrorf("check", "--scheme %q: want http or https", s.scheme)
	}
	headers := map[string]string{}
	for _, raw := range s.headers {
		name, value, err := parseHeaderFlag(raw)
		if err != nil {
			return nil, err
		}
		if name == "host" {
			// HTTP/1.1 Host becomes :authority in Envoy; there is no separate host entry.
			if s.hostSet && value != s.host {
				return nil, usageErrorf("check", "-H 'host: %s' conflicts with --host %s", value, s.host)
			}
			s.host = value
			continue
		}
		addHeader(headers, name, value)
	}
	if s.token != "" {
		addHeader(headers, "authorization", "Bearer "+s.token)
	}
	if s.host == "" {
		return nil, usageErrorf("check", "--host must not be empty")
	}
	if s.body != "" {
		if _, ok := headers["content-length"]; !ok {
			headers["content-length"] = strconv.Itoa(len(s.body))
		}
	}
	if _, ok := headers["x-request-id"]; !ok {
		headers["x-request-id"] = ids.requestID
	}
	if _, ok := headers["x-forwarded-proto"]; !ok {
		headers["x-forwarded-proto"] = s.scheme
	}
	headers[":authority"] = s.host
	headers[":method"] = s.method
	headers[":path"] = s.path
	headers[":scheme"] = s.scheme

	source, err := parseSocketAddress(s.sourceAddr, 0)
	if err != nil {
		return nil, usageErrorf("check", "--source-ip: %v", err)
	}
	destPort := uint32(80)
	if s.scheme == "https" {
		destPort = 443
	}
	dest := s.destAddr
	if dest == "" {
		dest = "127.0.0.1"
	}
	destination, err := parseSocketAddress(dest, destPort)
	if err != nil {
		return nil, usageErrorf("check", "--dest-ip: %v", err)
	}
	var exts map[string]string
	for _, kv := range s.contextExtensions {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErrorf("check", "--context-extension %q: want key=value", kv)
		}
		if exts == nil {
			exts = map[string]string{}
		}
		exts[k] = v
	}

	return &authv3.CheckRequest{
		Attributes: &authv3.AttributeContext{
			Source:      &authv3.AttributeContext_Peer{Address: source, Principal: s.principal},
			Destination: &authv3.AttributeContext_Peer{Address: destination},
			Request: &authv3.AttributeContext_Request{
				Http: &authv3.AttributeContext_HttpRequest{
					Id:       ids.streamID,
					Method:   s.method,
					Headers:  headers,
					Path:     s.path,
					Host:     s.host,
					Scheme:   s.scheme,
					Protocol: "HTTP/1.1",
					Body:     s.body,
					Size:     int64(len(s.body)),
				},
			},
			ContextExtensions: exts,
		},
	}, nil
}

// parseHeaderFlag splits a -H flag "Name: value" into a lower-case name and a
// value trimmed of surrounding whitespace, as an HTTP/1.1 parser would.
func parseHeaderFlag(raw string) (name, value string, err error) {
	name, value, ok := strings.Cut(raw, ":")
	if !ok {
		return "", "", usageErrorf("check", "-H %q: want 'name: value'", raw)
	}
	if name == "" {
		return "", "", usageErrorf("check", "-H %q: pseudo-headers come from --method, --path, --host and --scheme", raw)
	}
	name = strings.ToLower(strings.TrimSpace(name))
	if name == "" || strings.ContainsAny(name, " \t\r\n\"(),/;<=>?@[\\]{}") {
		return "", "", usageErrorf("check", "-H %q: invalid header name", raw)
	}
	return name, strings.Trim(value, " \t"), nil
}

// addHeader adds a header the way Envoy's ext_authz fills its header map:
// a repeated name is joined to the earlier values with ",".
func addHeader(headers map[string]string, name, value string) {
	if prev, ok := headers[name]; ok {
		headers[name] = prev + "," + value
		return
	}
	headers[name] = value
}

// parseSocketAddress reads "ip", "ip:port" or "[ipv6]:port" into an Envoy
// socket address; defaultPort applies when no port is given.
func parseSocketAddress(s string, defaultPort uint32) (*corev3.Address, error) {
	var addr netip.Addr
	port := defaultPort
	if ap, err := netip.ParseAddrPort(s); err == nil {
		addr, port = ap.Addr(), uint32(ap.Port())
	} else {
		a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address with an optional port", s)
		}
		addr = a
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       addr.String(),
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}, nil
}

// readCheckRequest reads a protojson CheckRequest from a file or stdin ("-").
// Unknown fields are an error, so a typo does not silently vanish.
func readCheckRequest(path string, stdin io.Reader) (*authv3.CheckRequest, error) {
	data, err := readFileOrStdin(path, stdin)
	if err != nil {
		return nil, fmt.Errorf("--request: %w", err)
	}
	req := &authv3.CheckRequest{}
	if err := protojson.Unmarshal(data, req); err != nil {
		return nil, fmt.Errorf("--request %s: not a protojson CheckRequest: %w", path, err)
	}
	return req, nil
}

// marshalProtoJSON encodes a CheckRequest as indented protojson. protojson
// deliberately varies its whitespace between builds; re-indenting with
// encoding/json makes the output stable, so it diffs and greps cleanly.
func marshalProtoJSON(req *authv3.CheckRequest) ([]byte, error) {
	raw, err := protojson.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return out.Bytes(), nil
}

func readFileOrStdin(path string, stdin io.Reader) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(stdin)
	}
	return os.ReadFile(path)
}

// sendCheck dials the server and makes one Authorization/Check call bounded by
// the configured timeout. Any gRPC error (unreachable server, deadline, a
// server answering an error instead of a CheckResponse) is returned as is.
func sendCheck(ctx context.Context, c connOptions, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	conn, err := dial(c)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("check %s: %w", c.addr, err)
	}
	return resp, nil
}

// dial returns a client connection to c.addr, with TLS when c says so.
func dial(c connOptions) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if c.tls {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.caFile != "" {
			pem, err := os.ReadFile(c.caFile)
			if err != nil {
				return nil, fmt.Errorf("--ca-file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--ca-file %s: no PEM certificates found", c.caFile)
			}
			cfg.RootCAs = pool
		}
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", c.addr, err)
	}
	return conn, nil
}
