package authz

import (
	"encoding/base64"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// messageValue converts a protobuf message to the ast.Value that protojson
// followed by a JSON decode would give (lowerCamelCase field names, populated
// fields only, 64-bit integers as strings, bytes as base64, enums by name), so
// OPA-Envoy policies see the same document, without the JSON round trip.
func messageValue(m protoreflect.Message) ast.Value {
	switch m.Descriptor().FullName() {
	case "google.protobuf.Timestamp":
		return timestampValue(m)
	case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue":
		return structValue(m)
	}
	obj := ast.NewObject()
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		obj.Insert(ast.InternedTerm(fd.JSONName()), ast.NewTerm(fieldValue(fd, v)))
		return true
	})
	return obj
}

func fieldValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) ast.Value {
	switch {
	case fd.IsList():
		list := v.List()
		terms := make([]*ast.Term, list.Len())
		for i := range terms {
			terms[i] = ast.NewTerm(scalarValue(fd, list.Get(i)))
		}
		return ast.NewArray(terms...)
	case fd.IsMap():
		obj := ast.NewObject()
		vd := fd.MapValue()
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			obj.Insert(ast.StringTerm(k.String()), ast.NewTerm(scalarValue(vd, mv)))
			return true
		})
		return obj
	default:
		return scalarValue(fd, v)
	}
}

func scalarValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) ast.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return ast.Boolean(v.Bool())
	case protoreflect.StringKind:
		return ast.String(v.String())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return ast.Number(strconv.FormatInt(v.Int(), 10))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return ast.Number(strconv.FormatUint(v.Uint(), 10))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return ast.String(strconv.FormatInt(v.Int(), 10))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return ast.String(strconv.FormatUint(v.Uint(), 10))
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return floatValue(v.Float())
	case protoreflect.BytesKind:
		return ast.String(base64.StdEncoding.EncodeToString(v.Bytes()))
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return ast.String(string(ev.Name()))
		}
		return ast.Number(strconv.FormatInt(int64(v.Enum()), 10))
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return messageValue(v.Message())
	}
	return ast.Null{}
}

func floatValue(f float64) ast.Value {
	switch {
	case math.IsNaN(f):
		return ast.String("NaN")
	case math.IsInf(f, 1):
		return ast.String("Infinity")
	case math.IsInf(f, -1):
		return ast.String("-Infinity")
	}
	return ast.Number(strconv.FormatFloat(f, 'g', -1, 64))
}

// timestampValue formats like protojson: RFC 3339 in UTC with 0, 3, 6 or 9
// fractional digits.
func timestampValue(m protoreflect.Message) ast.Value {
	fields := m.Descriptor().Fields()
	secs := m.Get(fields.ByName("seconds")).Int()
	nanos := m.Get(fields.ByName("nanos")).Int()
	s := time.Unix(secs, nanos).UTC().Format("2006-01-02T15:04:05.000000000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, ".000")
	return ast.String(s + "Z")
}

func structValue(m protoreflect.Message) ast.Value {
	var x any
	switch msg := m.Interface().(type) {
	case *structpb.Struct:
		x = msg.AsMap()
	case *structpb.Value:
		x = msg.AsInterface()
	case *structpb.ListValue:
		x = msg.AsSlice()
	}
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		return ast.Null{}
	}
	return v
}
