package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	securityv1beta1 "istio.io/api/security/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// rendered is one rendering of Gatehouse's manifests, typed: the base as
// `kustomize build deploy/istio` renders it, or the Helm chart as `helm
// install` renders it.
type rendered struct {
	deployment     *appsv1.Deployment
	service        *corev1.Service
	serviceAccount *corev1.ServiceAccount
	configMaps     map[string]*corev1.ConfigMap
	pdb            *policyv1.PodDisruptionBudget
	hpa            *autoscalingv2.HorizontalPodAutoscaler // nil when autoscaling is off
	netpol         *networkingv1.NetworkPolicy
	serviceMonitor *monitoringv1.ServiceMonitor // the chart's, when enabled
	config         *GatehouseConfig
	configText     string // the mounted gatehouse.yaml
}

func render(t *testing.T, root, dir string) *rendered {
	t.Helper()
	objs, _, err := Build(root, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	r := typed(t, dir, objs)
	if r.hpa == nil || len(r.configMaps) != 2 {
		t.Fatalf("%s must render an HPA and two ConfigMaps", dir)
	}
	return r
}

// typed decodes every object of one rendering strictly and keeps Gatehouse's
// by kind; there must be one Deployment, Service, PDB and NetworkPolicy, and
// the config file mounted where the server reads it.
func typed(t *testing.T, source string, objs []Object) *rendered {
	t.Helper()
	r := &rendered{configMaps: map[string]*corev1.ConfigMap{}}
	for _, o := range objs {
		d, err := Decode(o)
		if err != nil {
			t.Fatal(err)
		}
		switch v := d.K8s.(type) {
		case *appsv1.Deployment:
			r.deployment = v
		case *corev1.Service:
			r.service = v
		case *corev1.ServiceAccount:
			r.serviceAccount = v
		case *corev1.ConfigMap:
			r.configMaps[v.Name] = v
		case *policyv1.PodDisruptionBudget:
			r.pdb = v
		case *autoscalingv2.HorizontalPodAutoscaler:
			r.hpa = v
		case *networkingv1.NetworkPolicy:
			r.netpol = v
		case *monitoringv1.ServiceMonitor:
			r.serviceMonitor = v
		}
	}
	if r.deployment == nil || r.service == nil || r.pdb == nil || r.netpol == nil {
		t.Fatalf("%s must render a Deployment, a Service, a PDB and a NetworkPolicy", source)
	}
	if r.container() == nil {
		t.Fatalf("%s: no container named gatehouse", source)
	}
	var err error
	if r.configText, err = r.mountedFile("/etc/gatehouse/gatehouse.yaml"); err != nil {
		t.Fatalf("%s: %v", source, err)
	}
	if r.config, err = ParseGatehouseConfig([]byte(r.configText)); err != nil {
		t.Fatalf("%s: %v", source, err)
	}
	return r
}

func (r *rendered) container() *corev1.Container {
	for i, c := range r.deployment.Spec.Template.Spec.Containers {
		if c.Name == "gatehouse" {
			return &r.deployment.Spec.Template.Spec.Containers[i]
		}
	}
	return nil
}

// mountedFile returns the content the pod sees at path: the ConfigMap key
// behind the volume mounted there (subPath) or the directory above it.
func (r *rendered) mountedFile(path string) (string, error) {
	c := r.container()
	for _, m := range c.VolumeMounts {
		key := ""
		switch {
		case m.SubPath != "" && m.MountPath == path:
			key = m.SubPath
		case m.SubPath == "" && filepath.Dir(path) == m.MountPath:
			key = filepath.Base(path)
		default:
			continue
		}
		cm, err := r.volumeConfigMap(m.Name)
		if err != nil {
			return "", err
		}
		v, ok := cm.Data[key]
		if !ok {
			return "", fmt.Errorf("%s is mounted from ConfigMap %s, which has no key %q (keys: %v)", path, cm.Name, key, keys(cm.Data))
		}
		return v, nil
	}
	return "", fmt.Errorf("nothing is mounted at %s", path)
}

func (r *rendered) volumeConfigMap(volume string) (*corev1.ConfigMap, error) {
	for _, v := range r.deployment.Spec.Template.Spec.Volumes {
		if v.Name != volume {
			continue
		}
		if v.ConfigMap == nil {
			return nil, fmt.Errorf("volume %s is not a ConfigMap", volume)
		}
		cm, ok := r.configMaps[v.ConfigMap.Name]
		if !ok {
			return nil, fmt.Errorf("volume %s names ConfigMap %s, which is not rendered (have %v)", volume, v.ConfigMap.Name, keys(r.configMaps))
		}
		return cm, nil
	}
	return nil, fmt.Errorf("no volume %s", volume)
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func containerPort(c *corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func servicePort(s *corev1.Service, name string) *corev1.ServicePort {
	for i, p := range s.Spec.Ports {
		if p.Name == name {
			return &s.Spec.Ports[i]
		}
	}
	return nil
}

// TestBaseIsConsistent checks what neither the API server nor Istio's offline
// analysis checks: that the base's parts point at each other.
func TestBaseIsConsistent(t *testing.T) {
	root := repoRoot(t)
	for _, dir := range []string{"deploy/istio", "deploy/istio/examples/client-ip/xff"} {
		t.Run(dir, func(t *testing.T) {
			checkBase(t, render(t, root, dir))
		})
	}
}

func checkBase(t *testing.T, r *rendered) {
	t.Helper()
	d, c := r.deployment, r.container()
	podLabels := labels.Set(d.Spec.Template.Labels)

	// The Service, PDB and NetworkPolicy select the Deployment's pods, and the
	// Deployment's own selector does too.
	if !labels.SelectorFromSet(r.service.Spec.Selector).Matches(podLabels) || len(r.service.Spec.Selector) == 0 {
		t.Errorf("Service selector %v does not match the pod labels %v", r.service.Spec.Selector, podLabels)
	}
	for name, sel := range map[string]*metav1.LabelSelector{"Deployment": d.Spec.Selector, "PodDisruptionBudget": r.pdb.Spec.Selector, "NetworkPolicy": &r.netpol.Spec.PodSelector} {
		if err := matches(sel, podLabels); err != nil {
			t.Errorf("%s selector: %v", name, err)
		}
	}
	if r.hpa != nil {
		if ref := r.hpa.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.Name != d.Name {
			t.Errorf("HPA targets %s/%s, not Deployment %s", ref.Kind, ref.Name, d.Name)
		}
		// The chart leaves replicas to the HPA (an upgrade would reset it).
		if (d.Spec.Replicas != nil && *d.Spec.Replicas < 2) || r.hpa.Spec.MinReplicas == nil || *r.hpa.Spec.MinReplicas < 2 {
			t.Errorf("want at least 2 replicas in the Deployment (when set) and the HPA's minReplicas")
		}
	} else if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("without an HPA, want at least 2 replicas in the Deployment")
	}

	// Ports: the gRPC port is named grpc with appProtocol grpc (Istio would
	// otherwise speak HTTP/1.1 to it) and reaches the container port the
	// config listens on; so does the ops port.
	grpcPort, err := Port(r.config.Listen.GRPC)
	if err != nil {
		t.Fatalf("listen.grpc: %v", err)
	}
	opsPort, err := Port(r.config.Listen.HTTP)
	if err != nil {
		t.Fatalf("listen.http: %v", err)
	}
	sp := servicePort(r.service, "grpc")
	if sp == nil || sp.AppProtocol == nil || *sp.AppProtocol != "grpc" {
		t.Fatal("the Service needs a port named grpc with appProtocol: grpc")
	}
	if p, ok := containerPort(c, sp.TargetPort); !ok || int(p) != grpcPort {
		t.Errorf("Service port grpc targets %s, which is container port %d; the config listens on %d", sp.TargetPort.String(), p, grpcPort)
	}
	ops := servicePort(r.service, "http-ops")
	if ops == nil {
		t.Fatal("the Service needs the ops port (http-ops)")
	}
	if p, ok := containerPort(c, ops.TargetPort); !ok || int(p) != opsPort {
		t.Errorf("Service port http-ops targets %s (container port %d); the config's listen.http is %d", ops.TargetPort.String(), p, opsPort)
	}

	// Probes: readiness /readyz and liveness /healthz on the ops port.
	for name, probe := range map[string]struct {
		p    *corev1.Probe
		path string
	}{"readiness": {c.ReadinessProbe, "/readyz"}, "liveness": {c.LivenessProbe, "/healthz"}} {
		if probe.p == nil || probe.p.HTTPGet == nil {
			t.Errorf("%s probe: want httpGet %s", name, probe.path)
			continue
		}
		if probe.p.HTTPGet.Path != probe.path {
			t.Errorf("%s probe path %s, want %s", name, probe.p.HTTPGet.Path, probe.path)
		}
		if p, ok := containerPort(c, probe.p.HTTPGet.Port); !ok || int(p) != opsPort {
			t.Errorf("%s probe port %s is not the ops port %d", name, probe.p.HTTPGet.Port.String(), opsPort)
		}
	}

	// GOMEMLIMIT leaves headroom under the container's memory limit: the
	// runtime does not count everything the kernel does.
	if limit := c.Resources.Limits.Memory(); limit == nil || limit.IsZero() {
		t.Error("the container needs resources.limits.memory")
	} else if i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" }); i < 0 {
		t.Error("the container needs GOMEMLIMIT, about 90% of resources.limits.memory")
	} else if n, err := goMemLimit(c.Env[i].Value); err != nil {
		t.Errorf("GOMEMLIMIT %q: %v", c.Env[i].Value, err)
	} else if lim := limit.Value(); n <= 0 || float64(n) > 0.95*float64(lim) {
		t.Errorf("GOMEMLIMIT %q is %d bytes, resources.limits.memory %s is %d: keep GOMEMLIMIT at about 90%% of it", c.Env[i].Value, n, limit.String(), lim)
	}

	// Files: --config names the mounted config file, and policy.paths the
	// mounted policies directory, whose ConfigMap holds the .rego files.
	if i := slices.Index(c.Args, "--config"); i < 0 || i+1 >= len(c.Args) || c.Args[i+1] != "/etc/gatehouse/gatehouse.yaml" {
		t.Errorf("args %v: want --config /etc/gatehouse/gatehouse.yaml", c.Args)
	}
	for _, p := range r.config.Policy.Paths {
		var found bool
		for _, m := range c.VolumeMounts {
			if m.MountPath == p && m.SubPath == "" {
				found = true
				cm, err := r.volumeConfigMap(m.Name)
				if err != nil {
					t.Fatal(err)
				}
				if len(cm.Data) == 0 || !slices.ContainsFunc(keys(cm.Data), func(k string) bool { return strings.HasSuffix(k, ".rego") }) {
					t.Errorf("policy.paths %s is ConfigMap %s with no .rego key: %v", p, cm.Name, keys(cm.Data))
				}
			}
		}
		if !found {
			t.Errorf("policy.paths %s is not a mounted directory", p)
		}
	}
	// Every mount names a volume; a ConfigMap volume, a rendered ConfigMap.
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			t.Errorf("mount %s: no volume %s", m.MountPath, m.Name)
		} else if d.Spec.Template.Spec.Volumes[i].ConfigMap != nil {
			if _, err := r.volumeConfigMap(m.Name); err != nil {
				t.Error(err)
			}
		}
	}

	// Shutdown: in-flight checks get grpc.shutdown_grace after the preStop
	// pause, all within terminationGracePeriodSeconds.
	grace, err := r.config.ShutdownGraceDuration()
	if err != nil {
		t.Fatal(err)
	}
	var preStop time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	tgps := d.Spec.Template.Spec.TerminationGracePeriodSeconds
	if tgps == nil || time.Duration(*tgps)*time.Second <= grace+preStop {
		t.Errorf("terminationGracePeriodSeconds must exceed grpc.shutdown_grace %s plus the preStop pause %s", grace, preStop)
	}

	// Hardening.
	psc, sc := d.Spec.Template.Spec.SecurityContext, c.SecurityContext
	switch {
	case psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("pod securityContext: want runAsNonRoot and seccomp RuntimeDefault")
	case sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}):
		t.Error("container securityContext: want readOnlyRootFilesystem, no privilege escalation, drop ALL")
	case c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero():
		t.Error("want cpu and memory requests and a memory limit")
	case len(d.Spec.Template.Spec.TopologySpreadConstraints) == 0:
		t.Error("want topologySpreadConstraints")
	}

	// The NetworkPolicy admits checks on the gRPC port only from gateways.
	var grpcRule bool
	for _, rule := range r.netpol.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port == nil {
				t.Errorf("NetworkPolicy rule without a port admits every port")
				continue
			}
			if _, ok := containerPort(c, *p.Port); !ok && p.Port.IntVal != 15020 {
				t.Errorf("NetworkPolicy port %s is not a container port", p.Port.String())
			}
			if got, _ := containerPort(c, *p.Port); int(got) == grpcPort {
				grpcRule = true
				for _, peer := range rule.From {
					if peer.PodSelector == nil || peer.NamespaceSelector == nil {
						t.Errorf("the gRPC port admits a peer not limited to gateway pods in a namespace: %+v", peer)
					}
				}
			}
		}
	}
	if !grpcRule {
		t.Error("the NetworkPolicy admits nothing on the gRPC port")
	}
}

func matches(sel *metav1.LabelSelector, set labels.Set) error {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return err
	}
	if s.Empty() || !s.Matches(set) {
		return fmt.Errorf("%s does not select the pod labels %v", s, set)
	}
	return nil
}

// meshProviders returns every shipped meshConfig: the IstioOperator overlay
// and the istiod Helm values.
func meshProviders(t *testing.T, root string) map[string]*meshv1alpha1.MeshConfig {
	t.Helper()
	out := map[string]*meshv1alpha1.MeshConfig{}
	op := "deploy/istio/mesh/istio-operator.yaml"
	data, err := os.ReadFile(filepath.Join(root, op))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := ParseObjects(op, data)
	if err != nil || len(objs) != 1 {
		t.Fatalf("%s: %v (%d objects)", op, err, len(objs))
	}
	if out[op], err = DecodeIstioOperator(objs[0]); err != nil {
		t.Fatal(err)
	}
	values := "deploy/istio/mesh/istiod-values.yaml"
	if data, err = os.ReadFile(filepath.Join(root, values)); err != nil {
		t.Fatal(err)
	}
	if out[values], err = DecodeIstiodValues(values, data); err != nil {
		t.Fatal(err)
	}
	return out
}

// allObjects parses every object file under deploy/istio.
func allObjects(t *testing.T, root string) []Object {
	t.Helper()
	var all []Object
	for _, rel := range yamlFiles(t, root) {
		if classify(rel) != kindObjects {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		objs, err := ParseObjects(rel, data)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, objs...)
	}
	return all
}

// TestMeshProviderMatchesService: the extension provider points at the
// Service's gRPC port, fails closed with a short timeout, and every CUSTOM
// AuthorizationPolicy names it and skips the health paths.
func TestMeshProviderMatchesService(t *testing.T) {
	root := repoRoot(t)
	r := render(t, root, "deploy/istio")
	wantService := fmt.Sprintf("%s.%s.svc.cluster.local", r.service.Name, r.service.Namespace)
	grpc := servicePort(r.service, "grpc")
	providers := map[string]bool{}
	for file, mc := range meshProviders(t, root) {
		var n int
		for _, p := range mc.GetExtensionProviders() {
			ext := p.GetEnvoyExtAuthzGrpc()
			if ext == nil {
				continue
			}
			n++
			providers[p.GetName()] = true
			if ext.GetService() != wantService || ext.GetPort() != uint32(grpc.Port) {
				t.Errorf("%s: provider %s points at %s:%d; the Service is %s:%d", file, p.GetName(), ext.GetService(), ext.GetPort(), wantService, grpc.Port)
			}
			if to := ext.GetTimeout(); to == nil || to.AsDuration() <= 0 || to.AsDuration() > 5*time.Second {
				t.Errorf("%s: provider %s: set a timeout of a few seconds at most (Istio's default is 600s), got %v", file, p.GetName(), to)
			}
			if ext.GetFailOpen() {
				t.Errorf("%s: provider %s: failOpen must be false", file, p.GetName())
			}
			if ext.GetStatusOnError() == "" {
				t.Errorf("%s: provider %s: set statusOnError", file, p.GetName())
			}
		}
		if n == 0 {
			t.Errorf("%s: no envoyExtAuthzGrpc provider", file)
		}
	}

	var custom int
	for _, o := range allObjects(t, root) {
		if o.Kind != "AuthorizationPolicy" {
			continue
		}
		d, err := Decode(o)
		if err != nil {
			t.Fatal(err)
		}
		ap := d.Spec.(*securityv1beta1.AuthorizationPolicy)
		if ap.GetAction() != securityv1beta1.AuthorizationPolicy_CUSTOM {
			continue
		}
		custom++
		if name := ap.GetProvider().GetName(); !providers[name] {
			t.Errorf("%s: provider.name %q is not an extension provider in the shipped meshConfig (%v)", o, name, keys(providers))
		}
		var notPaths []string
		for _, rule := range ap.GetRules() {
			for _, to := range rule.GetTo() {
				notPaths = append(notPaths, to.GetOperation().GetNotPaths()...)
			}
		}
		for _, p := range []string{"/healthz", "/healthz/*", "/readyz"} {
			if !slices.Contains(notPaths, p) {
				t.Errorf("%s: health path %s is not excluded (notPaths %v)", o, p, notPaths)
			}
		}
	}
	if custom != 2 {
		t.Errorf("found %d CUSTOM AuthorizationPolicies, want 2 (selector and targetRefs)", custom)
	}
}

// TestGatewayAPIPolicyTargetsTheGateway: the targetRefs policy names a
// Gateway the example defines, in the Gateway's namespace, and the HTTPRoute
// attaches to that Gateway's listener.
func TestGatewayAPIPolicyTargetsTheGateway(t *testing.T) {
	root := repoRoot(t)
	gateways := map[string]*gatewayv1.Gateway{}
	var routes []*gatewayv1.HTTPRoute
	var policies []Object
	for _, o := range allObjects(t, root) {
		d, err := Decode(o)
		if err != nil {
			t.Fatal(err)
		}
		switch v := d.K8s.(type) {
		case *gatewayv1.Gateway:
			gateways[v.Namespace+"/"+v.Name] = v
		case *gatewayv1.HTTPRoute:
			routes = append(routes, v)
		}
		if ap, ok := d.Spec.(*securityv1beta1.AuthorizationPolicy); ok && len(ap.GetTargetRefs()) > 0 {
			policies = append(policies, o)
		}
	}
	if len(policies) == 0 || len(gateways) == 0 || len(routes) == 0 {
		t.Fatalf("want a targetRefs policy, a Gateway and an HTTPRoute; got %d, %d, %d", len(policies), len(gateways), len(routes))
	}
	for _, o := range policies {
		d, _ := Decode(o)
		for _, ref := range d.Spec.(*securityv1beta1.AuthorizationPolicy).GetTargetRefs() {
			if ref.GetGroup() != gatewayv1.GroupName || ref.GetKind() != "Gateway" {
				t.Errorf("%s: targetRef %s/%s is not a Gateway API Gateway", o, ref.GetGroup(), ref.GetKind())
			}
			if gateways[o.Namespace+"/"+ref.GetName()] == nil {
				t.Errorf("%s: targets Gateway %s/%s, which no example defines (have %v)", o, o.Namespace, ref.GetName(), keys(gateways))
			}
		}
	}
	for _, rt := range routes {
		for _, pr := range rt.Spec.ParentRefs {
			ns := rt.Namespace
			if pr.Namespace != nil {
				ns = string(*pr.Namespace)
			}
			gw := gateways[ns+"/"+string(pr.Name)]
			if gw == nil {
				t.Errorf("HTTPRoute %s/%s: parent %s/%s is not defined", rt.Namespace, rt.Name, ns, pr.Name)
				continue
			}
			if pr.SectionName != nil && !slices.ContainsFunc(gw.Spec.Listeners, func(l gatewayv1.Listener) bool { return l.Name == *pr.SectionName }) {
				t.Errorf("HTTPRoute %s/%s: listener %s is not on Gateway %s", rt.Namespace, rt.Name, *pr.SectionName, gw.Name)
			}
		}
	}
	for _, gw := range gateways {
		for _, l := range gw.Spec.Listeners {
			if l.Protocol != gatewayv1.HTTPSProtocolType || l.TLS == nil || len(l.TLS.CertificateRefs) == 0 {
				t.Errorf("Gateway %s listener %s: want TLS terminated at the gateway", gw.Name, l.Name)
			}
		}
	}
}

// TestClientIPVariantsAgree: the base reads the peer (with the ingress
// Service patched to externalTrafficPolicy: Local); the xff variant skips as
// many X-Forwarded-For entries as the gateway trusts proxies.
func TestClientIPVariantsAgree(t *testing.T) {
	root := repoRoot(t)
	base := render(t, root, "deploy/istio")
	if base.config.ClientIP.Source != "peer" {
		t.Errorf("base client_ip.source %q, want peer", base.config.ClientIP.Source)
	}
	patch := "deploy/istio/examples/client-ip/local/ingressgateway-service-patch.yaml"
	data, err := os.ReadFile(filepath.Join(root, patch))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := ParseObjects(patch, data)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(objs[0])
	if err != nil {
		t.Fatal(err)
	}
	if svc := d.K8s.(*corev1.Service); svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("%s: externalTrafficPolicy %q, want Local", patch, svc.Spec.ExternalTrafficPolicy)
	}

	xff := render(t, root, "deploy/istio/examples/client-ip/xff")
	if xff.config.ClientIP.Source != "xff" || xff.config.ClientIP.XFFTrustedHops < 1 {
		t.Fatalf("xff variant: client_ip %+v, want source xff with xff_trusted_hops >= 1", xff.config.ClientIP)
	}
	dir := "deploy/istio/examples/client-ip/xff/"
	data, err = os.ReadFile(filepath.Join(root, dir+"istio-operator.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if objs, err = ParseObjects(dir+"istio-operator.yaml", data); err != nil {
		t.Fatal(err)
	}
	op, err := DecodeIstioOperator(objs[0])
	if err != nil {
		t.Fatal(err)
	}
	if data, err = os.ReadFile(filepath.Join(root, dir+"istiod-values.yaml")); err != nil {
		t.Fatal(err)
	}
	values, err := DecodeIstiodValues(dir+"istiod-values.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	for name, mc := range map[string]*meshv1alpha1.MeshConfig{"istio-operator.yaml": op, "istiod-values.yaml": values} {
		n := mc.GetDefaultConfig().GetGatewayTopology().GetNumTrustedProxies()
		if int(n) != xff.config.ClientIP.XFFTrustedHops {
			t.Errorf("%s: numTrustedProxies %d, but gatehouse.yaml has xff_trusted_hops %d: they must be equal", name, n, xff.config.ClientIP.XFFTrustedHops)
		}
	}
}

// TestEnvoyExample: the ext_authz filter talks V3 gRPC to a cluster that
// exists and speaks HTTP/2, with a timeout, failing closed.
func TestEnvoyExample(t *testing.T) {
	root := repoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "deploy/envoy/envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ec, err := DecodeEnvoyBootstrap(data)
	if err != nil {
		t.Fatal(err)
	}
	filters := ec.Typed["type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"]
	if len(filters) != 1 {
		t.Fatalf("want one ext_authz filter, got %d", len(filters))
	}
	ea := filters[0].(*authzv3.ExtAuthz)
	gs := ea.GetGrpcService()
	switch {
	case ea.GetTransportApiVersion().String() != "V3":
		t.Error("transport_api_version must be V3")
	case ea.GetFailureModeAllow():
		t.Error("failure_mode_allow must be false")
	case gs.GetTimeout() == nil || gs.GetTimeout().AsDuration() <= 0:
		t.Error("grpc_service.timeout must be set")
	case ea.GetWithRequestBody() != nil:
		t.Error("with_request_body is shown commented, not enabled")
	}
	cluster := gs.GetEnvoyGrpc().GetClusterName()
	var found bool
	for _, c := range ec.Bootstrap.GetStaticResources().GetClusters() {
		if c.GetName() != cluster {
			continue
		}
		found = true
		opts, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
		if !ok {
			t.Fatalf("cluster %s: no HttpProtocolOptions (gRPC needs HTTP/2)", cluster)
		}
		var hpo upstreamhttpv3.HttpProtocolOptions
		if err := opts.UnmarshalTo(&hpo); err != nil {
			t.Fatal(err)
		}
		if hpo.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
			t.Errorf("cluster %s: want explicit_http_config.http2_protocol_options", cluster)
		}
		port := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()
		if port != 9191 {
			t.Errorf("cluster %s: port %d, Gatehouse listens on 9191", cluster, port)
		}
	}
	if !found {
		t.Errorf("ext_authz names cluster %q, which is not defined", cluster)
	}
	if len(ec.Typed["type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"]) == 0 {
		t.Error("the health route should disable ext_authz")
	}
}

// goMemLimit reads a GOMEMLIMIT value as the Go runtime does: a number of
// bytes with an optional B, KiB, MiB, GiB or TiB suffix.
func goMemLimit(v string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSuffix(v, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("not a size like 230MiB: %w", err)
	}
	return n * mult, nil
}
