package authz

import (
	"fmt"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
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
	err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, out)
	if err == nil || !strings.Contains(err.Error(), "refused before decoding") {
		t.Fatalf("err = %v", err)
	}
	// A large request with few elements (a big body) decodes.
	body := checkReq("POST", "/", nil, strings.Repeat("x", 1<<20))
	b, _ = proto.Marshal(body)
	var got = checkReq("", "", nil, "")
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got); err != nil || got.Attributes.Request.Http.Body != body.Attributes.Request.Http.Body {
		t.Fatalf("large body refused: %v", err)
	}
}
