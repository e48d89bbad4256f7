package authz

import (
	"sync/atomic"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/gatehouse-dev/gatehouse/policy"
)

// msgPlan is what to convert of one message for a policy: the fields its
// Need names, resolved to descriptors once per policy revision rather than
// found by walking every populated field of every request. all converts the
// message whole (messageValue), as where Need is All or the message is a
// Struct.
type msgPlan struct {
	all    bool
	fields []fieldPlan
}

type fieldPlan struct {
	fd  protoreflect.FieldDescriptor
	key *ast.Term // the field's JSON name, shared by every request's input
	sub *msgPlan  // singular message fields: what to convert of them
}

// newMsgPlan resolves need against md. It recurses only where need names a
// field, so it ends even on recursive message types.
func newMsgPlan(md protoreflect.MessageDescriptor, need *policy.Need) *msgPlan {
	if need.All() || md.FullName() == "google.protobuf.Struct" {
		return &msgPlan{all: true}
	}
	p := &msgPlan{}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		child := need.Child(fd.JSONName())
		if child == nil {
			continue
		}
		f := fieldPlan{fd: fd, key: ast.StringTerm(fd.JSONName())}
		if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() {
			f.sub = newMsgPlan(fd.Message(), child)
		}
		p.fields = append(p.fields, f)
	}
	return p
}

// value converts m's planned fields: the populated ones, as messageValue
// would convert them, in one object built at once.
func (p *msgPlan) value(m protoreflect.Message) ast.Value {
	if p.all {
		return messageValue(m)
	}
	var buf [8][2]*ast.Term
	items := buf[:0]
	for _, f := range p.fields {
		if !m.Has(f.fd) {
			continue
		}
		v := m.Get(f.fd)
		var t *ast.Term
		switch {
		case f.sub != nil:
			t = ast.NewTerm(f.sub.value(v.Message()))
		case f.fd.Kind() == protoreflect.StringKind && !f.fd.IsList() && !f.fd.IsMap():
			t = stringTerm(v.String())
		default:
			t = ast.NewTerm(fieldValue(f.fd, v))
		}
		items = append(items, [2]*ast.Term{f.key, t})
	}
	return ast.NewObject(items...)
}

// commonStrings are request values that recur on every request (methods,
// schemes, protocols): their terms are shared rather than allocated per
// request. OPA never modifies an input term.
var commonStrings = func() map[string]*ast.Term {
	m := map[string]*ast.Term{}
	for _, s := range []string{
		"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
		"http", "https", "HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3",
	} {
		m[s] = ast.StringTerm(s)
	}
	return m
}()

// stringTerm is ast.StringTerm, shared for commonStrings.
func stringTerm(s string) *ast.Term {
	if t, ok := commonStrings[s]; ok {
		return t
	}
	return ast.StringTerm(s)
}

// attributesDescriptor is the message input.attributes converts.
var attributesDescriptor = (&authv3.AttributeContext{}).ProtoReflect().Descriptor()

// planned is one Need's plan for input.attributes.
type planned struct {
	need  *policy.Need
	attrs *msgPlan
}

// plans remembers the attribute plans of the last few Needs (the active
// revision's, the shadow policy's, one being replaced by a reload). A miss
// builds the plan, which costs a walk of the Need, and pushes out the oldest.
type plans struct {
	recent atomic.Pointer[[]planned]
}

const plansKept = 4

// attributes returns the plan for need.
func (ps *plans) attributes(need *policy.Need) *msgPlan {
	cur := ps.recent.Load()
	if cur != nil {
		for _, p := range *cur {
			if p.need == need {
				return p.attrs
			}
		}
	}
	p := planned{need: need, attrs: newMsgPlan(attributesDescriptor, need)}
	next := []planned{p}
	if cur != nil {
		next = append(next, (*cur)[:min(len(*cur), plansKept-1)]...)
	}
	// A lost race only costs the other plan a rebuild later.
	ps.recent.CompareAndSwap(cur, &next)
	return p.attrs
}
