package authz

import (
	"fmt"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// checkDecodeThreshold: CheckRequests larger than this on the wire are
// counted before they are decoded. Below it, decoding is cheap whatever the
// content; above it, a request of tiny headers decodes to ten times its size
// (4 MiB of headers is ~300,000 map entries, ~45 MiB of Go objects).
const checkDecodeThreshold = 256 << 10

// Codec returns a gRPC codec that refuses, before decoding, a CheckRequest
// carrying more repeated and map elements (headers, header_map entries,
// context extensions, metadata) than lim allows, so that the largest request
// the gRPC limit admits cannot make the server allocate tens of megabytes
// per request. Such a request fails the call (fail closed: Envoy answers
// its status_on_error, and Envoy itself never sends one: its own header
// limits are far lower). Every other message is the standard proto codec's.
// Install it with grpc.ForceServerCodecV2.
func Codec(lim Limits) encoding.CodecV2 {
	lim.applyDefaults()
	return limitCodec{
		CodecV2: encoding.GetCodecV2("proto"),
		// Headers, plus room for the rest of a legitimate request
		// (context extensions, metadata, TLS details).
		maxElements: lim.MaxHeaders + 4096,
	}
}

type limitCodec struct {
	encoding.CodecV2
	maxElements int
}

var checkRequestDescriptor = (&authv3.CheckRequest{}).ProtoReflect().Descriptor()

func (c limitCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if _, ok := v.(*authv3.CheckRequest); ok && data.Len() > checkDecodeThreshold {
		var b []byte
		if len(data) == 1 {
			b = data[0].ReadOnlyData() // the usual case: no copy
		} else {
			buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
			defer buf.Free()
			b = buf.ReadOnlyData()
		}
		n, err := countElements(b, checkRequestDescriptor, 0, c.maxElements)
		if err != nil {
			return err
		}
		if n > c.maxElements {
			return fmt.Errorf("CheckRequest of %d bytes has more than %d headers and other elements (limits.max_headers): refused before decoding", data.Len(), c.maxElements)
		}
	}
	return c.CodecV2.Unmarshal(data, v)
}

// countElements counts the elements of repeated and map fields in b, a
// message of type md, recursing into message fields; it stops counting past
// limit. It reads the wire format without allocating.
func countElements(b []byte, md protoreflect.MessageDescriptor, depth, limit int) (int, error) {
	if depth > 32 {
		return 0, fmt.Errorf("CheckRequest nested more than 32 deep")
	}
	n := 0
	for len(b) > 0 && n <= limit {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return 0, protowire.ParseError(l)
		}
		b = b[l:]
		fd := md.Fields().ByNumber(num)
		if fd != nil && (fd.IsList() || fd.IsMap()) {
			n++
		}
		if typ != protowire.BytesType {
			l = protowire.ConsumeFieldValue(num, typ, b)
			if l < 0 {
				return 0, protowire.ParseError(l)
			}
			b = b[l:]
			continue
		}
		v, l := protowire.ConsumeBytes(b)
		if l < 0 {
			return 0, protowire.ParseError(l)
		}
		b = b[l:]
		if fd != nil && fd.Message() != nil {
			m, err := countElements(v, fd.Message(), depth+1, limit-n)
			if err != nil {
				return 0, err
			}
			n += m
		}
	}
	return n, nil
}
