package deploy

import (
	"fmt"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	sigsyaml "sigs.k8s.io/yaml"

	// The typed configs the example uses: imported so that protojson can
	// resolve their Any type URLs.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// EnvoyConfig is a decoded bootstrap plus every typed config found in it,
// unpacked, keyed by type URL.
type EnvoyConfig struct {
	Bootstrap *bootstrapv3.Bootstrap
	Typed     map[string][]proto.Message
}

// DecodeEnvoyBootstrap decodes an Envoy bootstrap YAML with protojson (unknown
// fields and unknown Any types are errors), runs the generated validation
// rules on the bootstrap and on every typed config nested in Any fields, which
// the bootstrap's own validation does not look into.
func DecodeEnvoyBootstrap(data []byte) (*EnvoyConfig, error) {
	raw, err := sigsyaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, err
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(raw, &bs); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if err := bs.ValidateAll(); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	ec := &EnvoyConfig{Bootstrap: &bs, Typed: map[string][]proto.Message{}}
	if err := ec.walk(bs.ProtoReflect(), "bootstrap"); err != nil {
		return nil, err
	}
	return ec, nil
}

type validator interface{ ValidateAll() error }

// walk visits every Any in m (in singular, repeated and map fields),
// unpacks it, validates it and walks it in turn.
func (ec *EnvoyConfig) walk(m protoreflect.Message, at string) error {
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		path := at + "." + string(fd.Name())
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				return true
			}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				err = ec.visit(mv.Message(), fmt.Sprintf("%s[%s]", path, k.String()))
				return err == nil
			})
		case fd.IsList():
			if fd.Message() == nil {
				return true
			}
			for i := 0; i < v.List().Len() && err == nil; i++ {
				err = ec.visit(v.List().Get(i).Message(), fmt.Sprintf("%s[%d]", path, i))
			}
		case fd.Message() != nil:
			err = ec.visit(v.Message(), path)
		}
		return err == nil
	})
	return err
}

func (ec *EnvoyConfig) visit(m protoreflect.Message, at string) error {
	a, ok := m.Interface().(*anypb.Any)
	if !ok {
		return ec.walk(m, at)
	}
	inner, err := a.UnmarshalNew()
	if err != nil {
		return fmt.Errorf("%s: %s: %w", at, a.GetTypeUrl(), err)
	}
	v, ok := inner.(validator)
	if !ok {
		return fmt.Errorf("%s: %s has no validation rules", at, a.GetTypeUrl())
	}
	if err := v.ValidateAll(); err != nil {
		return fmt.Errorf("%s: %s: %w", at, a.GetTypeUrl(), err)
	}
	ec.Typed[a.GetTypeUrl()] = append(ec.Typed[a.GetTypeUrl()], inner)
	return ec.walk(inner.ProtoReflect(), at+"("+string(inner.ProtoReflect().Descriptor().FullName())+")")
}
