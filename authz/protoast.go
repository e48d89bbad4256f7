package authz

import (
	"encoding/base64"
	"strconv"

	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// messageValue converts a protobuf message to the ast.Value OPA-Envoy builds
// for it. OPA-Envoy walks the message with protoreflect (envoyauth/protomap.go)
// rather than using protojson, and the test in test/compat pins the result to
// what the real binary gives: lowerCamelCase field names, populated fields
// only, every integer a number (64-bit ones included), enums by number, bytes
// as base64, a Timestamp as {"seconds", "nanos"} like any other message, and a
// Struct as its plain map.
func messageValue(m protoreflect.Message) ast.Value {
	if st, ok := m.Interface().(*structpb.Struct); ok {
		return structValue(st)
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
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return ast.Number(strconv.FormatInt(v.Int(), 10))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return ast.Number(strconv.FormatUint(v.Uint(), 10))
	case protoreflect.FloatKind:
		// OPA-Envoy hands float32 to ast.InterfaceToValue, which encodes it
		// as JSON: the same conversion gives the same digits.
		return interfaceValue(float32(v.Float()))
	case protoreflect.DoubleKind:
		return interfaceValue(v.Float())
	case protoreflect.BytesKind:
		return ast.String(base64.StdEncoding.EncodeToString(v.Bytes()))
	case protoreflect.EnumKind:
		return ast.Number(strconv.FormatInt(int64(v.Enum()), 10))
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return messageValue(v.Message())
	}
	return ast.Null{}
}

// interfaceValue converts as OPA-Envoy does. A value JSON cannot hold (NaN,
// infinities; Envoy sends no float fields today) becomes null.
func interfaceValue(x any) ast.Value {
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		return ast.Null{}
	}
	return v
}

// structValue is a Struct's plain map (its numbers are float64s, as in
// OPA-Envoy).
func structValue(st *structpb.Struct) ast.Value {
	return interfaceValue(st.AsMap())
}
