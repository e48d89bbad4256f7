package authz

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
	"github.com/gatehouse-dev/gatehouse/policy"
)

func TestCountElements(t *testing.T) {
	req := checkReq("GET", "/", nil, "") // :method, :path, :authority
	h := req.Attributes.Request.Http
	for i := range 100 {
		h.Headers[fmt.Sprintf("x-%d", i)] = "v"
	}
	h.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}}}
	req.Attributes.ContextExtensions = map[string]string{"k": "v"}
	meta, _ := structpb.NewStruct(map[string]any{"l": []any{1, 2, 3}})
	req.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"f": meta}}
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	// 103 headers + 2 header_map entries + 1 context extension + 1
	// filter_metadata entry + 1 struct field + 3 list values.
	want := 103 + 2 + 1 + 1 + 1 + 3
	got, err := countElements(b, checkRequestDescriptor, 0, 1<<30)
	if err != nil || got != want {
		t.Fatalf("countElements = %d, %v; want %d", got, err, want)
	}
}

// TestCodecRefusesHugeHeaderSets: a request over the element limit is not
// decoded; it becomes an empty request carrying the refusal, which Check
// answers 431.
func TestCodecRefusesHugeHeaderSets(t *testing.T) {
	c := Codec(Limits{MaxHeaders: 100})
	big := checkReq("GET", "/", nil, "")
	for i := range 40_000 {
		big.Attributes.Request.Http.Headers[fmt.Sprintf("x-%d", i)] = "v"
	}
	b, _ := proto.Marshal(big)
	if len(b) <= checkDecodeThreshold {
		t.Fatalf("test request of %d bytes is under the threshold", len(b))
	}
	var out = checkReq("", "", nil, "")
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, out); err != nil {
		t.Fatalf("err = %v: a refusal must reach Check, not fail the call", err)
	}
	if out.GetAttributes() != nil {
		t.Fatalf("a refused request kept its content: %v", out.GetAttributes())
	}
	var le *limitError
	if err := codecRefusal(out); !errors.As(err, &le) || le.Status != 431 {
		t.Fatalf("codecRefusal = %v, want a 431 limit error", err)
	}
	// A large request with few elements (a big body) decodes.
	body := checkReq("POST", "/", nil, strings.Repeat("x", 1<<20))
	b, _ = proto.Marshal(body)
	var got = checkReq("", "", nil, "")
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got); err != nil || got.Attributes.Request.Http.Body != body.Attributes.Request.Http.Body {
		t.Fatalf("large body refused: %v", err)
	}
	if err := codecRefusal(got); err != nil {
		t.Fatalf("a decoded request is marked refused: %v", err)
	}
}

// rawCodec sends pre-encoded bytes as the request, so a test can put on the
// wire what Go's proto encoder refuses to produce (invalid UTF-8).
type rawCodec struct{ encoding.CodecV2 }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.([]byte); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return c.CodecV2.Marshal(v)
}

// TestUndecodableCheckIsADenial: over a real gRPC connection, every
// CheckRequest the server cannot or will not decode is answered with a
// denied CheckResponse, never a gRPC error that Envoy's failure_mode_allow
// would turn into an allow. Sent by 32 clients at once, as an attacker
// would.
func TestUndecodableCheckIsADenial(t *testing.T) {
	s := newNativeServer(t, policy.Rules{TrustedCIDRs: []string{"0.0.0.0/0"}})
	addr := testutil.ServeAuthorization(t, s, grpc.ForceServerCodecV2(Codec(Limits{})))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{encoding.GetCodecV2("proto")}), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	wire := func(req *authv3.CheckRequest, from, to string) []byte {
		b, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if from != "" {
			if !bytes.Contains(b, []byte(from)) {
				t.Fatalf("%q not in the encoded request", from)
			}
			b = bytes.ReplaceAll(b, []byte(from), []byte(to))
		}
		return b
	}
	many := checkReq("GET", "/", nil, "")
	for i := range 35_000 {
		many.Attributes.Request.Http.Headers[fmt.Sprintf("x-h%d", i)] = "v"
	}
	cases := []struct {
		name   string
		wire   []byte
		status int
		reason string
	}{
		{"35,000 headers", wire(many, "", ""), 431, ReasonRequestTooLarge},
		{"header value not UTF-8", wire(checkReq("GET", "/", map[string]string{"x-note": "cafZZ"}, ""), "cafZZ", "caf\xe9\xff"), 400, ReasonBadRequest},
		{"path not UTF-8", wire(checkReq("GET", "/public/QQQQ/admin", nil, ""), "QQQQ", "\xc0\xae\xc0\xae"), 400, ReasonBadRequest},
		{"not a message", []byte{0x0a, 0xff, 0xff, 0xff}, 400, ReasonBadRequest},
		{"the mark sent by a client", append(wire(checkReq("GET", "/", nil, ""), "", ""), protowire.AppendBytes(protowire.AppendTag(nil, refusalField, protowire.BytesType), []byte("Mforged"))...), 400, ReasonBadRequest},
		{"a decodable request", wire(checkReq("GET", "/", nil, ""), "", ""), 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var wg sync.WaitGroup
			errs := make(chan error, 32)
			for range 32 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp := &authv3.CheckResponse{}
					if err := conn.Invoke(context.Background(), "/envoy.service.auth.v3.Authorization/Check", tc.wire, resp); err != nil {
						errs <- fmt.Errorf("gRPC error %v: a failure_mode_allow Envoy would allow this request", err)
						return
					}
					got := int(resp.GetDeniedResponse().GetStatus().GetCode())
					if tc.status == 0 {
						if resp.GetStatus().GetCode() != 0 {
							errs <- fmt.Errorf("a decodable request was denied: %v", resp)
						}
						return
					}
					if resp.GetStatus().GetCode() == 0 || got != tc.status || !strings.Contains(resp.GetDeniedResponse().GetBody(), tc.reason) {
						errs <- fmt.Errorf("answer %v, want a %d denial with reason %s", resp, tc.status, tc.reason)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
		})
	}
}
