package authz

import (
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/gatehouse-dev/gatehouse/policy"
)

// prunedMessageValue is messageValue limited to the fields need names: a
// policy that reads only attributes.request.http.path does not pay for the
// rest of the message. Where need is All (or the message is converted
// whole), it is messageValue exactly.
func prunedMessageValue(m protoreflect.Message, need *policy.Need) ast.Value {
	if need.All() || isWellKnown(m) {
		return messageValue(m)
	}
	obj := ast.NewObject()
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		child := need.Child(fd.JSONName())
		if child == nil {
			return true
		}
		var value ast.Value
		if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() {
			value = prunedMessageValue(v.Message(), child)
		} else {
			value = fieldValue(fd, v)
		}
		obj.Insert(ast.InternedTerm(fd.JSONName()), ast.NewTerm(value))
		return true
	})
	return obj
}

// isWellKnown: messages messageValue converts whole rather than field by
// field (a Struct becomes its plain map).
func isWellKnown(m protoreflect.Message) bool {
	return m.Descriptor().FullName() == "google.protobuf.Struct"
}
