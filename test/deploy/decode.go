package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	yamlv3 "go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	sigsyaml "sigs.k8s.io/yaml"
)

// Object is one decoded manifest document.
type Object struct {
	File string // path relative to the repository root
	Doc  int    // index of the document in the file
	Raw  []byte // the document's YAML
	// Map is the document as generic JSON values.
	Map        map[string]any
	APIVersion string
	Kind       string
	Name       string
	Namespace  string
}

// String names the object for error messages.
func (o Object) String() string {
	return fmt.Sprintf("%s#%d %s %s/%s", o.File, o.Doc, o.Kind, o.Namespace, o.Name)
}

// SplitYAML returns the non-empty documents of a multi-document YAML stream,
// each checked to parse with duplicate keys rejected.
func SplitYAML(data []byte) ([][]byte, error) {
	dec := yamlv3.NewDecoder(bytes.NewReader(data))
	var docs [][]byte
	for i := 0; ; i++ {
		var n yamlv3.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(n.Content) == 0 || (n.Content[0].Kind == yamlv3.ScalarNode && n.Content[0].Tag == "!!null") {
			continue
		}
		out, err := yamlv3.Marshal(n.Content[0])
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		// sigs.k8s.io/yaml rejects duplicate keys, as the API server does.
		var probe any
		if err := sigsyaml.UnmarshalStrict(out, &probe); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		docs = append(docs, out)
	}
	return docs, nil
}

// ParseObjects splits a file into objects with apiVersion, kind and metadata.
func ParseObjects(file string, data []byte) ([]Object, error) {
	docs, err := SplitYAML(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var objs []Object
	for i, d := range docs {
		o := Object{File: file, Doc: i, Raw: d}
		if err := sigsyaml.Unmarshal(d, &o.Map); err != nil {
			return nil, fmt.Errorf("%s#%d: %w", file, i, err)
		}
		o.APIVersion, _ = o.Map["apiVersion"].(string)
		o.Kind, _ = o.Map["kind"].(string)
		if md, ok := o.Map["metadata"].(map[string]any); ok {
			o.Name, _ = md["name"].(string)
			o.Namespace, _ = md["namespace"].(string)
		}
		objs = append(objs, o)
	}
	return objs, nil
}

// istioSpecs maps Istio kinds to the istio.io/api message of their spec.
var istioSpecs = map[string]func() proto.Message{
	"security.istio.io/AuthorizationPolicy":    func() proto.Message { return &securityv1beta1.AuthorizationPolicy{} },
	"security.istio.io/RequestAuthentication":  func() proto.Message { return &securityv1beta1.RequestAuthentication{} },
	"security.istio.io/PeerAuthentication":     func() proto.Message { return &securityv1beta1.PeerAuthentication{} },
	"networking.istio.io/Gateway":              func() proto.Message { return &networkingv1alpha3.Gateway{} },
	"networking.istio.io/VirtualService":       func() proto.Message { return &networkingv1alpha3.VirtualService{} },
	"networking.istio.io/DestinationRule":      func() proto.Message { return &networkingv1alpha3.DestinationRule{} },
	"networking.istio.io/EnvoyFilter":          func() proto.Message { return &networkingv1alpha3.EnvoyFilter{} },
	"networking.istio.io/ServiceEntry":         func() proto.Message { return &networkingv1alpha3.ServiceEntry{} },
	"install.istio.io/IstioOperator":           nil, // handled by DecodeIstioOperator
	"kustomize.config.k8s.io/Kustomization":    nil, // handled by DecodeKustomization
	"gateway.networking.k8s.io/Gateway":        nil, // Gateway API: typed below
	"gateway.networking.k8s.io/HTTPRoute":      nil,
	"gateway.networking.k8s.io/GatewayClass":   nil,
	"gateway.networking.k8s.io/ReferenceGrant": nil,
}

// Decoded is what Decode returns for each kind of object.
type Decoded struct {
	// K8s is the typed Kubernetes or Gateway API object, when it is one.
	K8s any
	// Spec is the Istio spec message, when the object is an Istio resource.
	Spec proto.Message
	// Mesh is the meshConfig of an IstioOperator.
	Mesh *meshv1alpha1.MeshConfig
}

// Decode decodes o strictly into its type: unknown fields, duplicate keys and
// wrong types are errors, and so is a kind no decoder knows.
func Decode(o Object) (Decoded, error) {
	gv, err := schema.ParseGroupVersion(o.APIVersion)
	if err != nil || o.Kind == "" {
		return Decoded{}, fmt.Errorf("%s: not an object with apiVersion and kind", o)
	}
	groupKind := gv.Group + "/" + o.Kind
	switch {
	case groupKind == "install.istio.io/IstioOperator":
		m, err := DecodeIstioOperator(o)
		return Decoded{Mesh: m}, err
	case groupKind == "kustomize.config.k8s.io/Kustomization":
		var k kusttypes.Kustomization
		if err := sigsyaml.UnmarshalStrict(o.Raw, &k); err != nil {
			return Decoded{}, fmt.Errorf("%s: %w", o, err)
		}
		return Decoded{K8s: &k}, nil
	case gv.Group == gatewayv1.GroupName:
		var obj any
		switch o.Kind {
		case "Gateway":
			obj = &gatewayv1.Gateway{}
		case "HTTPRoute":
			obj = &gatewayv1.HTTPRoute{}
		case "GatewayClass":
			obj = &gatewayv1.GatewayClass{}
		case "GRPCRoute":
			obj = &gatewayv1.GRPCRoute{}
		default:
			return Decoded{}, fmt.Errorf("%s: no decoder for Gateway API kind %s", o, o.Kind)
		}
		if gv.Version != "v1" {
			return Decoded{}, fmt.Errorf("%s: use gateway.networking.k8s.io/v1", o)
		}
		if err := sigsyaml.UnmarshalStrict(o.Raw, obj); err != nil {
			return Decoded{}, fmt.Errorf("%s: %w", o, err)
		}
		return Decoded{K8s: obj}, nil
	case gv.Group == monitoringv1.SchemeGroupVersion.Group:
		// The Prometheus Operator's kinds (the chart's optional ServiceMonitor).
		if gv.Version != monitoringv1.Version || o.Kind != monitoringv1.ServiceMonitorsKind {
			return Decoded{}, fmt.Errorf("%s: no decoder for %s %s", o, o.APIVersion, o.Kind)
		}
		var sm monitoringv1.ServiceMonitor
		if err := sigsyaml.UnmarshalStrict(o.Raw, &sm); err != nil {
			return Decoded{}, fmt.Errorf("%s: %w", o, err)
		}
		return Decoded{K8s: &sm}, nil
	case strings.HasSuffix(gv.Group, ".istio.io"):
		newSpec := istioSpecs[groupKind]
		if newSpec == nil {
			return Decoded{}, fmt.Errorf("%s: no decoder for Istio kind %s", o, groupKind)
		}
		spec := newSpec()
		if err := decodeIstio(o, spec); err != nil {
			return Decoded{}, err
		}
		return Decoded{Spec: spec}, nil
	}
	gvk := gv.WithKind(o.Kind)
	obj, err := scheme.Scheme.New(gvk)
	if err != nil {
		return Decoded{}, fmt.Errorf("%s: %w", o, err)
	}
	if err := sigsyaml.UnmarshalStrict(o.Raw, obj); err != nil {
		return Decoded{}, fmt.Errorf("%s: %w", o, err)
	}
	return Decoded{K8s: obj}, nil
}

// decodeIstio checks the envelope of an Istio resource (apiVersion, kind,
// metadata, spec and nothing else), decodes metadata strictly into ObjectMeta
// and the spec with protojson, which rejects unknown fields.
func decodeIstio(o Object, spec proto.Message) error {
	if err := onlyKeys(o.Map, "apiVersion", "kind", "metadata", "spec"); err != nil {
		return fmt.Errorf("%s: %w", o, err)
	}
	if err := strictMeta(o); err != nil {
		return err
	}
	raw, err := json.Marshal(o.Map["spec"])
	if err != nil {
		return fmt.Errorf("%s: spec: %w", o, err)
	}
	if err := protojson.Unmarshal(raw, spec); err != nil {
		return fmt.Errorf("%s: spec: %w", o, err)
	}
	return nil
}

func strictMeta(o Object) error {
	raw, err := json.Marshal(o.Map["metadata"])
	if err != nil {
		return fmt.Errorf("%s: metadata: %w", o, err)
	}
	var md metav1.ObjectMeta
	if err := sigsyaml.UnmarshalStrict(raw, &md); err != nil {
		return fmt.Errorf("%s: metadata: %w", o, err)
	}
	if md.Name == "" {
		return fmt.Errorf("%s: metadata.name is empty", o)
	}
	return nil
}

// DecodeIstioOperator decodes an IstioOperator that only sets meshConfig (the
// overlays shipped here), with meshConfig decoded strictly into MeshConfig.
func DecodeIstioOperator(o Object) (*meshv1alpha1.MeshConfig, error) {
	if err := onlyKeys(o.Map, "apiVersion", "kind", "metadata", "spec"); err != nil {
		return nil, fmt.Errorf("%s: %w", o, err)
	}
	if err := strictMeta(o); err != nil {
		return nil, err
	}
	spec, _ := o.Map["spec"].(map[string]any)
	// The overlays shipped here set meshConfig only; anything else would go
	// unchecked, so it is an error until a decoder for it exists.
	if err := onlyKeys(spec, "meshConfig"); err != nil {
		return nil, fmt.Errorf("%s: spec: %w", o, err)
	}
	return DecodeMeshConfig(spec["meshConfig"])
}

// DecodeMeshConfig decodes a meshConfig value strictly.
func DecodeMeshConfig(v any) (*meshv1alpha1.MeshConfig, error) {
	if v == nil {
		return nil, errors.New("meshConfig is missing")
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var mc meshv1alpha1.MeshConfig
	if err := protojson.Unmarshal(raw, &mc); err != nil {
		return nil, fmt.Errorf("meshConfig: %w", err)
	}
	return &mc, nil
}

// DecodeIstiodValues decodes Helm values for the istiod chart that set
// meshConfig only.
func DecodeIstiodValues(file string, data []byte) (*meshv1alpha1.MeshConfig, error) {
	var values map[string]any
	if err := sigsyaml.UnmarshalStrict(data, &values); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if err := onlyKeys(values, "meshConfig"); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	mc, err := DecodeMeshConfig(values["meshConfig"])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return mc, nil
}

func onlyKeys(m map[string]any, allowed ...string) error {
	ok := map[string]bool{}
	for _, k := range allowed {
		ok[k] = true
	}
	var extra []string
	for k := range m {
		if !ok[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		return fmt.Errorf("unexpected keys %v (allowed: %v)", extra, allowed)
	}
	return nil
}

// RepoRoot returns the repository root (this module lives in test/deploy).
func RepoRoot() (string, error) {
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(abs, "deploy", "istio", "kustomization.yaml")); err != nil {
		return "", fmt.Errorf("repository root not found from the working directory: %w", err)
	}
	return abs, nil
}
