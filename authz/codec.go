package authz

import (
	"fmt"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
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
// per request. Every other message is the standard proto codec's.
// Install it with grpc.ForceServerCodecV2.
//
// A CheckRequest the codec refuses, or cannot decode (invalid UTF-8 in a
// string field, a malformed message), is not a failed call: a gRPC error is
// left to Envoy's failure_mode_allow, which some operators turn on, and would
// let the request through. The codec hands Check an empty request marked with
// the refusal instead (refusalField), and Check answers it with a denied
// CheckResponse: 431 request_too_large or 400 bad_request.
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
			markRefused(v, refusedMalformed, "CheckRequest is not a valid message: "+err.Error())
			return nil
		}
		if n > c.maxElements {
			markRefused(v, refusedTooLarge, fmt.Sprintf("CheckRequest of %d bytes has more than %d headers and other elements (limits.max_headers)", data.Len(), c.maxElements))
			return nil
		}
	}
	err := c.CodecV2.Unmarshal(data, v)
	if err != nil {
		if _, ok := v.(*authv3.CheckRequest); ok {
			markRefused(v, refusedMalformed, "CheckRequest cannot be decoded: "+err.Error())
			return nil
		}
	}
	return err
}

// refusalField is the field number of the mark the codec leaves on a
// CheckRequest it refused: the highest protobuf field number, which no
// CheckRequest field uses. Its value is one kind byte (refusedTooLarge,
// refusedMalformed) and the reason's text. A client that sends the field
// itself only gets its own request denied.
const refusalField protowire.Number = protowire.MaxValidNumber

// Refusal kinds, the first byte of the mark.
const (
	refusedTooLarge  = 'L'
	refusedMalformed = 'M'
)

// markRefused replaces v's content, whatever the decoder left in it, with
// the refusal mark alone: no part of a refused request is ever decided on.
func markRefused(v any, kind byte, reason string) {
	m := v.(*authv3.CheckRequest)
	proto.Reset(m)
	var b []byte
	b = protowire.AppendTag(b, refusalField, protowire.BytesType)
	b = protowire.AppendBytes(b, append([]byte{kind}, reason...))
	m.ProtoReflect().SetUnknown(b)
}

// codecRefusal returns the refusal the codec marked req with, or nil. It
// costs a slice length on every request the codec decoded normally.
func codecRefusal(req *authv3.CheckRequest) error {
	u := req.ProtoReflect().GetUnknown()
	for len(u) > 0 {
		num, typ, n := protowire.ConsumeTag(u)
		if n < 0 {
			return nil
		}
		u = u[n:]
		n = protowire.ConsumeFieldValue(num, typ, u)
		if n < 0 {
			return nil
		}
		if num == refusalField && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(u[:n])
			if len(v) > 0 && v[0] == refusedTooLarge {
				return &limitError{431, string(v[1:])}
			}
			return fmt.Errorf("%w: %s", errBadRequest, string(v[min(1, len(v)):]))
		}
		u = u[n:]
	}
	return nil
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
