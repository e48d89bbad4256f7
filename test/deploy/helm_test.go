package deploy

import (
	"bufio"
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	securityv1beta1 "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/labels"
	sigsyaml "sigs.k8s.io/yaml"
)

// The release the docs install: helm install gatehouse deploy/helm/gatehouse
// -n gatehouse --create-namespace.
const (
	chartRelease   = "gatehouse"
	chartNamespace = "gatehouse"
)

// chartOverlay is a values file the chart must render into objects that
// decode strictly and hold together, plus what it changes.
type chartOverlay struct {
	name   string
	values string
	// release and namespace: the documented ones (chartRelease,
	// chartNamespace) when empty.
	release, namespace string
	check              func(t *testing.T, r *rendered, rel *ChartRelease)
}

var chartOverlays = []chartOverlay{
	{name: "defaults"},
	{name: "ServiceMonitor", values: `
serviceMonitor: {enabled: true, labels: {release: prometheus}, interval: 15s}
`, check: func(t *testing.T, r *rendered, _ *ChartRelease) {
		sm := r.serviceMonitor
		if sm == nil {
			t.Fatal("serviceMonitor.enabled renders no ServiceMonitor")
		}
		if sm.Labels["release"] != "prometheus" {
			t.Errorf("ServiceMonitor labels %v: want serviceMonitor.labels", sm.Labels)
		}
		if err := matches(&sm.Spec.Selector, labels.Set(r.service.Labels)); err != nil {
			t.Errorf("ServiceMonitor selector: %v (the Service's labels)", err)
		}
		if !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{r.service.Namespace}) {
			t.Errorf("ServiceMonitor namespaceSelector %v, want the release's namespace", sm.Spec.NamespaceSelector.MatchNames)
		}
		if len(sm.Spec.Endpoints) != 1 || servicePort(r.service, sm.Spec.Endpoints[0].Port) == nil ||
			sm.Spec.Endpoints[0].Port != "http-ops" || sm.Spec.Endpoints[0].Path != "/metrics" || sm.Spec.Endpoints[0].Interval != "15s" {
			t.Errorf("ServiceMonitor endpoints %+v: want /metrics on the Service port http-ops every 15s", sm.Spec.Endpoints)
		}
	}},
	{name: "no HPA, 3 replicas", values: `
autoscaling: {enabled: false}
replicas: 3
`, check: func(t *testing.T, r *rendered, _ *ChartRelease) {
		if r.hpa != nil {
			t.Error("autoscaling.enabled: false still renders an HPA")
		}
		if reps := r.deployment.Spec.Replicas; reps == nil || *reps != 3 {
			t.Errorf("replicas %v, want 3", reps)
		}
	}},
	{name: "extra env, volumes and mounts", values: `
extraEnv: [{name: GATEHOUSE_EXAMPLE, value: "1"}]
extraVolumes: [{name: jwks, secret: {secretName: corp-jwks}}]
extraVolumeMounts: [{name: jwks, mountPath: /etc/gatehouse/jwks, readOnly: true}]
podLabels: {team: edge}
podAnnotations: {example.com/owner: edge}
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: edge, effect: NoSchedule}]
priorityClassName: system-cluster-critical
imagePullSecrets: [{name: regcred}]
`, check: func(t *testing.T, r *rendered, _ *ChartRelease) {
		c, spec := r.container(), r.deployment.Spec.Template.Spec
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GATEHOUSE_EXAMPLE" && e.Value == "1" }) ||
			!slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" }) {
			t.Errorf("env %v: want extraEnv beside GOMEMLIMIT", c.Env)
		}
		if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == "jwks" && v.Secret != nil }) {
			t.Errorf("volumes %v: want extraVolumes", spec.Volumes)
		}
		for _, ctr := range append([]corev1.Container{*c}, spec.InitContainers...) {
			if !slices.ContainsFunc(ctr.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "jwks" && m.MountPath == "/etc/gatehouse/jwks" }) {
				t.Errorf("container %s mounts %v: want extraVolumeMounts", ctr.Name, ctr.VolumeMounts)
			}
		}
		meta := r.deployment.Spec.Template.ObjectMeta
		if meta.Labels["team"] != "edge" || meta.Annotations["example.com/owner"] != "edge" || meta.Annotations["proxy.istio.io/config"] == "" {
			t.Errorf("pod labels %v, annotations %v: want podLabels and podAnnotations beside the defaults", meta.Labels, meta.Annotations)
		}
		if spec.NodeSelector["kubernetes.io/os"] != "linux" || len(spec.Tolerations) != 1 || spec.PriorityClassName != "system-cluster-critical" ||
			len(spec.ImagePullSecrets) != 1 || spec.ImagePullSecrets[0].Name != "regcred" {
			t.Errorf("nodeSelector, tolerations, priorityClassName or imagePullSecrets not rendered: %+v", spec)
		}
	}},
	{name: "memory limit 1Gi", values: `
resources: {limits: {memory: 1Gi}}
`, check: func(t *testing.T, r *rendered, _ *ChartRelease) {
		if got := env(r.container(), "GOMEMLIMIT"); got != "921MiB" {
			t.Errorf("GOMEMLIMIT %q under a 1Gi limit, want 921MiB", got)
		}
	}},
	{name: "image tag", values: `
image: {repository: registry.example.com/gatehouse, tag: v9.9.9, pullPolicy: Always}
`, check: func(t *testing.T, r *rendered, _ *ChartRelease) {
		for _, c := range append(slices.Clone(r.deployment.Spec.Template.Spec.InitContainers), *r.container()) {
			if c.Image != "registry.example.com/gatehouse:v9.9.9" || c.ImagePullPolicy != corev1.PullAlways {
				t.Errorf("container %s: image %s (%s), want registry.example.com/gatehouse:v9.9.9 (Always)", c.Name, c.Image, c.ImagePullPolicy)
			}
		}
	}},
	{name: "image digest", values: `
image: {tag: v9.9.9, digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
`, check: func(t *testing.T, r *rendered, _ *ChartRelease) {
		want := "gatehouse-dev/gatehouse@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		if c := r.container(); c.Image != want {
			t.Errorf("image %s, want %s (a digest wins over the tag)", c.Image, want)
		}
	}},
	{name: "embedded policy, no validation", values: `
policies: null
config: {policy: {paths: []}}
validate: {enabled: false}
`, check: func(t *testing.T, r *rendered, _ *ChartRelease) {
		if len(r.configMaps) != 1 {
			t.Errorf("ConfigMaps %v: want only the config without policies", keys(r.configMaps))
		}
		if slices.ContainsFunc(r.container().VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "policies" }) {
			t.Error("no policies, yet a policies mount")
		}
		if n := len(r.deployment.Spec.Template.Spec.InitContainers); n != 0 {
			t.Errorf("validate.enabled: false still renders %d init containers", n)
		}
	}},
	{name: "another release name, namespace and ports", release: "edge", namespace: "auth", values: `
config: {listen: {grpc: "0.0.0.0:9292", http: ":8282"}}
service: {ports: {grpc: 50051, http: 8080}}
`, check: func(t *testing.T, r *rendered, _ *ChartRelease) {
		if p, ok := containerPort(r.container(), servicePort(r.service, "grpc").TargetPort); !ok || p != 9292 || servicePort(r.service, "grpc").Port != 50051 {
			t.Errorf("Service grpc port %d -> container %d, want 50051 -> 9292", servicePort(r.service, "grpc").Port, p)
		}
	}},
}

// chartNameFor returns the release and namespace an overlay is installed as.
func chartNameFor(o chartOverlay) (release, namespace string) {
	return cmp.Or(o.release, chartRelease), cmp.Or(o.namespace, chartNamespace)
}

func env(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func renderChart(t *testing.T, root, release, namespace, values string) (*ChartRelease, *rendered) {
	t.Helper()
	rel, err := RenderChart(root, release, namespace, values)
	if err != nil {
		t.Fatal(err)
	}
	return rel, typed(t, "helm install "+release, rel.Objects)
}

// TestChartRendersStrictly: for its defaults and each overlay, the chart
// renders objects that decode strictly, carry the release's namespace and
// labels, and hold together as the kustomize base must (checkBase: selectors,
// ports, probes, GOMEMLIMIT, mounts, shutdown, hardening, NetworkPolicy).
func TestChartRendersStrictly(t *testing.T) {
	root := repoRoot(t)
	for _, o := range chartOverlays {
		t.Run(o.name, func(t *testing.T) {
			release, namespace := chartNameFor(o)
			rel, r := renderChart(t, root, release, namespace, o.values)
			if len(rel.Hooks) != 0 {
				t.Errorf("unexpected hooks: %v", rel.Hooks)
			}
			fullname := release
			if release != chartRelease {
				fullname = release + "-gatehouse"
			}
			for _, obj := range rel.Objects {
				if obj.Namespace != namespace {
					t.Errorf("%s: namespace %q, want the release's %q", obj, obj.Namespace, namespace)
				}
				if !strings.HasPrefix(obj.Name, fullname) {
					t.Errorf("%s: name does not start with the release's full name %s", obj, fullname)
				}
				md, _ := obj.Map["metadata"].(map[string]any)
				l, _ := md["labels"].(map[string]any)
				if l["app.kubernetes.io/instance"] != release || l["app.kubernetes.io/managed-by"] != "Helm" || l["app.kubernetes.io/name"] != "gatehouse" {
					t.Errorf("%s: labels %v, want app.kubernetes.io/name, instance and managed-by", obj, l)
				}
			}
			checkBase(t, r)
			checkValidate(t, r)
			if r.serviceAccount == nil || r.deployment.Spec.Template.Spec.ServiceAccountName != r.serviceAccount.Name {
				t.Errorf("the pods do not run as the rendered ServiceAccount")
			}
			if o.check != nil {
				o.check(t, r, rel)
			}
		})
	}
}

// checkValidate: the init container, when there is one, validates the very
// files the server reads: same image, same mounts, --config as the server.
func checkValidate(t *testing.T, r *rendered) {
	t.Helper()
	c := r.container()
	for _, ic := range r.deployment.Spec.Template.Spec.InitContainers {
		if ic.Name != "validate" {
			continue
		}
		if ic.Image != c.Image || !slices.Equal(ic.Args, append([]string{"validate"}, c.Args...)) {
			t.Errorf("validate runs %s %v; want the server's image %s with validate %v", ic.Image, ic.Args, c.Image, c.Args)
		}
		if !apiequality.Semantic.DeepEqual(ic.VolumeMounts, c.VolumeMounts) || !apiequality.Semantic.DeepEqual(ic.SecurityContext, c.SecurityContext) {
			t.Errorf("validate's mounts or securityContext differ from the server's:\n%+v\n%+v", ic.VolumeMounts, c.VolumeMounts)
		}
	}
}

// TestChartMatchesKustomizeBase: installed with its defaults, the chart runs
// Gatehouse as deploy/istio does: the same hardening, probes, ports,
// resources, GOMEMLIMIT, shutdown timing, rollout, disruption budget,
// autoscaling, NetworkPolicy rules, configuration and policies.
func TestChartMatchesKustomizeBase(t *testing.T) {
	root := repoRoot(t)
	base := render(t, root, "deploy/istio")
	_, chart := renderChart(t, root, chartRelease, chartNamespace, "")
	bp, cp := base.deployment.Spec.Template.Spec, chart.deployment.Spec.Template.Spec
	bc, cc := base.container(), chart.container()

	same := func(what string, want, got any) {
		t.Helper()
		if !apiequality.Semantic.DeepEqual(want, got) {
			t.Errorf("%s differs:\nbase:  %+v\nchart: %+v", what, want, got)
		}
	}
	same("pod securityContext", bp.SecurityContext, cp.SecurityContext)
	same("container securityContext", effectiveSecurityContext(bp, bc), effectiveSecurityContext(cp, cc))
	same("readinessProbe", bc.ReadinessProbe, cc.ReadinessProbe)
	same("livenessProbe", bc.LivenessProbe, cc.LivenessProbe)
	same("container ports", bc.Ports, cc.Ports)
	same("resources", bc.Resources, cc.Resources)
	same("env", bc.Env, cc.Env) // GOMEMLIMIT 230MiB and nothing else
	same("args", bc.Args, cc.Args)
	same("lifecycle", bc.Lifecycle, cc.Lifecycle)
	same("image pull policy", bc.ImagePullPolicy, cc.ImagePullPolicy)
	same("terminationGracePeriodSeconds", bp.TerminationGracePeriodSeconds, cp.TerminationGracePeriodSeconds)
	same("automountServiceAccountToken", bp.AutomountServiceAccountToken, cp.AutomountServiceAccountToken)
	same("ServiceAccount automountServiceAccountToken", false, chart.serviceAccount.AutomountServiceAccountToken != nil && *chart.serviceAccount.AutomountServiceAccountToken)
	same("strategy", base.deployment.Spec.Strategy, chart.deployment.Spec.Strategy)
	same("revisionHistoryLimit", base.deployment.Spec.RevisionHistoryLimit, chart.deployment.Spec.RevisionHistoryLimit)
	same("Istio proxy config annotation", base.deployment.Spec.Template.Annotations["proxy.istio.io/config"], chart.deployment.Spec.Template.Annotations["proxy.istio.io/config"])
	same("Service ports", base.service.Spec.Ports, chart.service.Spec.Ports)
	serviceType := func(r *rendered) corev1.ServiceType { return cmp.Or(r.service.Spec.Type, corev1.ServiceTypeClusterIP) }
	same("Service type", serviceType(base), serviceType(chart))
	same("PDB minAvailable", base.pdb.Spec.MinAvailable, chart.pdb.Spec.MinAvailable)
	same("PDB maxUnavailable", base.pdb.Spec.MaxUnavailable, chart.pdb.Spec.MaxUnavailable)
	same("NetworkPolicy ingress", base.netpol.Spec.Ingress, chart.netpol.Spec.Ingress)
	same("NetworkPolicy policyTypes", base.netpol.Spec.PolicyTypes, chart.netpol.Spec.PolicyTypes)
	hpa := func(r *rendered) any {
		s := r.hpa.Spec.DeepCopy()
		s.ScaleTargetRef.Name = ""
		return s
	}
	same("HPA", hpa(base), hpa(chart))

	// Topology spread: the same constraints, each selecting the release's pods.
	if len(bp.TopologySpreadConstraints) != len(cp.TopologySpreadConstraints) {
		t.Errorf("topologySpreadConstraints: base has %d, chart %d", len(bp.TopologySpreadConstraints), len(cp.TopologySpreadConstraints))
	}
	for i := range min(len(bp.TopologySpreadConstraints), len(cp.TopologySpreadConstraints)) {
		b, c := bp.TopologySpreadConstraints[i], cp.TopologySpreadConstraints[i]
		if err := matches(c.LabelSelector, labels.Set(chart.deployment.Spec.Template.Labels)); err != nil {
			t.Errorf("topologySpreadConstraints[%d]: %v", i, err)
		}
		b.LabelSelector, c.LabelSelector = nil, nil
		same(fmt.Sprintf("topologySpreadConstraints[%d]", i), b, c)
	}

	// The configuration is the same document (the chart's loses the
	// comments), and the policies ConfigMap holds the same files.
	var bcfg, ccfg any
	if err := sigsyaml.Unmarshal([]byte(base.configText), &bcfg); err != nil {
		t.Fatal(err)
	}
	if err := sigsyaml.Unmarshal([]byte(chart.configText), &ccfg); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(bcfg, ccfg) {
		t.Errorf("gatehouse.yaml differs:\nbase:  %v\nchart: %v", bcfg, ccfg)
	}
	for _, dir := range base.config.Policy.Paths {
		bcm, ccm := mountedConfigMap(t, base, dir), mountedConfigMap(t, chart, dir)
		same("policies "+dir, bcm.Data, ccm.Data)
	}

	// What the chart adds: the validate init container.
	if !slices.ContainsFunc(cp.InitContainers, func(c corev1.Container) bool { return c.Name == "validate" }) {
		t.Error("the chart's defaults should validate the configuration in an init container")
	}
}

// effectiveSecurityContext is the container's securityContext with the
// pod-level user settings it inherits filled in.
func effectiveSecurityContext(pod corev1.PodSpec, c *corev1.Container) *corev1.SecurityContext {
	sc := c.SecurityContext.DeepCopy()
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	if psc := pod.SecurityContext; psc != nil {
		if sc.RunAsUser == nil {
			sc.RunAsUser = psc.RunAsUser
		}
		if sc.RunAsGroup == nil {
			sc.RunAsGroup = psc.RunAsGroup
		}
		if sc.RunAsNonRoot == nil {
			sc.RunAsNonRoot = psc.RunAsNonRoot
		}
		if sc.SeccompProfile == nil {
			sc.SeccompProfile = psc.SeccompProfile
		}
	}
	return sc
}

func mountedConfigMap(t *testing.T, r *rendered, dir string) *corev1.ConfigMap {
	t.Helper()
	for _, m := range r.container().VolumeMounts {
		if m.MountPath == dir && m.SubPath == "" {
			cm, err := r.volumeConfigMap(m.Name)
			if err != nil {
				t.Fatal(err)
			}
			return cm
		}
	}
	t.Fatalf("nothing is mounted at %s", dir)
	return nil
}

// TestChartGoMemLimit: GOMEMLIMIT is 90% of the memory limit in MiB, for
// every unit Kubernetes quantities use, unless set; a limit the chart cannot
// read fails the install rather than guessing.
func TestChartGoMemLimit(t *testing.T) {
	root := repoRoot(t)
	cases := []struct{ values, want, wantErr string }{
		{values: `resources: {limits: {memory: 256Mi}}`, want: "230MiB"},
		{values: `resources: {limits: {memory: 512Mi}}`, want: "460MiB"},
		{values: `resources: {limits: {memory: 1Gi}}`, want: "921MiB"},
		{values: `resources: {limits: {memory: 1.5Gi}}`, want: "1382MiB"},
		{values: `resources: {limits: {memory: 1G}}`, want: "858MiB"},          // 10^9 bytes
		{values: `resources: {limits: {memory: 300M}}`, want: "257MiB"},        // 3*10^8 bytes
		{values: `resources: {limits: {memory: 262144Ki}}`, want: "230MiB"},    // 256Mi
		{values: `resources: {limits: {memory: 268435456}}`, want: "230MiB"},   // bytes, a YAML number
		{values: `resources: {limits: {memory: "268435456"}}`, want: "230MiB"}, // bytes, a string
		{values: `{resources: {limits: {memory: 1Gi}}, goMemLimitPercent: 80}`, want: "819MiB"},
		{values: `goMemLimit: 200MiB`, want: "200MiB"},
		{values: `extraEnv: [{name: GOMEMLIMIT, value: 100MiB}]`, want: "100MiB"},
		{values: `resources: {limits: {memory: null}}`, want: ""},
		{values: `resources: {limits: {memory: 256m}}`, wantErr: "GOMEMLIMIT"},
		{values: `resources: {limits: {memory: lots}}`, wantErr: "GOMEMLIMIT"},
	}
	for _, tc := range cases {
		t.Run(tc.values, func(t *testing.T) {
			rel, err := RenderChart(root, chartRelease, chartNamespace, tc.values)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := typedLoose(t, rel).container()
			var got []string
			for _, e := range c.Env {
				if e.Name == "GOMEMLIMIT" {
					got = append(got, e.Value)
				}
			}
			if tc.want == "" && len(got) != 0 || tc.want != "" && !slices.Equal(got, []string{tc.want}) {
				t.Errorf("GOMEMLIMIT %v, want exactly %q", got, tc.want)
			}
		})
	}
}

// typedLoose types a render without the checks typed applies to a whole
// deployment (a case may remove the memory limit checkBase requires).
func typedLoose(t *testing.T, rel *ChartRelease) *rendered {
	t.Helper()
	return typed(t, "helm", rel.Objects)
}

// TestChartConfigChecksum: a change to the configuration or the policies
// changes the pod template (rolling the pods); anything else does not.
func TestChartConfigChecksum(t *testing.T) {
	root := repoRoot(t)
	checksum := func(values string) string {
		_, r := renderChart(t, root, chartRelease, chartNamespace, values)
		sum := r.deployment.Spec.Template.Annotations["checksum/config"]
		if len(sum) != 64 {
			t.Fatalf("checksum/config %q is not a SHA-256", sum)
		}
		return sum
	}
	def := checksum("")
	for _, tc := range []struct {
		values string
		rolls  bool
	}{
		{"", false},
		{"replicas: 5", false},
		{"config: {log: {level: debug}}", true},
		{"config: {policy: {dry_run: true}}", true},
		{"policies: {extra.rego: 'package extra'}", true},
		{"policies: {authz.rego: 'package envoy.authz\nallow := true'}", true},
	} {
		if got := checksum(tc.values); (got != def) != tc.rolls {
			t.Errorf("values %q: checksum %s (defaults %s), want a change: %v", tc.values, got, def, tc.rolls)
		}
	}
}

// TestChartNotes: NOTES.txt prints the extension provider and the CUSTOM
// AuthorizationPolicy for the release's own Service and port, both decoding
// strictly, and equal to what deploy/istio/mesh and deploy/istio/authz ship
// but for the Service.
func TestChartNotes(t *testing.T) {
	root := repoRoot(t)
	wantProvider := meshProviders(t, root)["deploy/istio/mesh/istiod-values.yaml"].GetExtensionProviders()[0]
	wantPolicy := decodeFile(t, root, "deploy/istio/authz/ingressgateway/authorizationpolicy.yaml")
	for _, tc := range []struct {
		release, namespace, values, service string
		port                                uint32
	}{
		{chartRelease, chartNamespace, "", "gatehouse.gatehouse.svc.cluster.local", 9191},
		{"edge", "auth", "service: {ports: {grpc: 50051}}", "edge-gatehouse.auth.svc.cluster.local", 50051},
		{"gatehouse-prod", "security", "", "gatehouse-prod.security.svc.cluster.local", 9191},
	} {
		t.Run(tc.release+"/"+tc.namespace, func(t *testing.T) {
			rel, r := renderChart(t, root, tc.release, tc.namespace, tc.values)
			if got := fmt.Sprintf("%s.%s.svc.cluster.local", r.service.Name, r.service.Namespace); got != tc.service {
				t.Fatalf("the Service is %s, want %s", got, tc.service)
			}
			if p := servicePort(r.service, "grpc"); p == nil || uint32(p.Port) != tc.port {
				t.Fatalf("the Service's grpc port is not %d", tc.port)
			}
			mesh, policy := notesBlock(t, rel.Notes, "meshConfig:"), notesBlock(t, rel.Notes, "apiVersion: security.istio.io/v1")
			var values map[string]any
			if err := sigsyaml.UnmarshalStrict([]byte(mesh), &values); err != nil {
				t.Fatalf("NOTES meshConfig: %v\n%s", err, mesh)
			}
			mc, err := DecodeMeshConfig(values["meshConfig"])
			if err != nil {
				t.Fatalf("NOTES: %v", err)
			}
			if len(mc.GetExtensionProviders()) != 1 {
				t.Fatalf("NOTES: want one extension provider, got %v", mc.GetExtensionProviders())
			}
			got := mc.GetExtensionProviders()[0]
			if ext := got.GetEnvoyExtAuthzGrpc(); ext.GetService() != tc.service || ext.GetPort() != tc.port {
				t.Errorf("NOTES provider points at %s:%d, want %s:%d", ext.GetService(), ext.GetPort(), tc.service, tc.port)
			}
			want := proto.Clone(wantProvider).(*meshv1alpha1.MeshConfig_ExtensionProvider)
			want.GetEnvoyExtAuthzGrpc().Service, want.GetEnvoyExtAuthzGrpc().Port = tc.service, tc.port
			if !proto.Equal(got, want) {
				t.Errorf("NOTES provider differs from deploy/istio/mesh's but for the Service:\nNOTES: %v\nmesh:  %v", got, want)
			}
			objs, err := ParseObjects("NOTES.txt", []byte(policy))
			if err != nil || len(objs) != 1 {
				t.Fatalf("NOTES AuthorizationPolicy: %v (%d objects)\n%s", err, len(objs), policy)
			}
			d, err := Decode(objs[0])
			if err != nil {
				t.Fatal(err)
			}
			ap := d.Spec.(*securityv1beta1.AuthorizationPolicy)
			if ap.GetProvider().GetName() != got.GetName() {
				t.Errorf("NOTES AuthorizationPolicy names provider %q, the meshConfig entry is %q", ap.GetProvider().GetName(), got.GetName())
			}
			if !proto.Equal(ap, wantPolicy.Spec) || objs[0].Namespace != "istio-system" {
				t.Errorf("NOTES AuthorizationPolicy differs from deploy/istio/authz/ingressgateway's:\nNOTES: %v\nauthz: %v", ap, wantPolicy.Spec)
			}
		})
	}
}

// notesBlock returns the lines of NOTES.txt from the one equal to first up to
// the next blank line.
func notesBlock(t *testing.T, notes, first string) string {
	t.Helper()
	var b strings.Builder
	in := false
	sc := bufio.NewScanner(strings.NewReader(notes))
	for sc.Scan() {
		line := sc.Text()
		if line == first {
			in = true
		}
		if in && strings.TrimSpace(line) == "" {
			break
		}
		if in {
			b.WriteString(line + "\n")
		}
	}
	if !in {
		t.Fatalf("NOTES.txt has no line %q:\n%s", first, notes)
	}
	return b.String()
}

func decodeFile(t *testing.T, root, rel string) Decoded {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := ParseObjects(rel, data)
	if err != nil || len(objs) != 1 {
		t.Fatalf("%s: %v (%d objects)", rel, err, len(objs))
	}
	d, err := Decode(objs[0])
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestChartRejectsBadValues: values the chart cannot honour, and keys it does
// not know, fail the install with a message instead of rendering something
// else.
func TestChartRejectsBadValues(t *testing.T) {
	root := repoRoot(t)
	for _, tc := range []struct{ values, want string }{
		{`config: {listen: {grpc: "grpc"}}`, "config.listen"},
		{`resources: {limits: {memory: 1Ei}}`, "GOMEMLIMIT"},
		{`podDisruptionBudget: {minAvailable: 1, maxUnavailable: 1}`, "minAvailable"},
		// values.schema.json: a misspelt key or a wrong type fails.
		{`replica: 3`, "replica"},
		{`image: {tags: v1.0.0}`, "tags"},
		{`image: {digest: "sha256:abc"}`, "digest"},
		{`service: {ports: {grpc: "9191"}}`, "grpc"},
		{`autoscaling: {enable: false}`, "enable"},
		{`policies: {authz.rego: {package: x}}`, "authz.rego"},
	} {
		t.Run(tc.values, func(t *testing.T) {
			_, err := RenderChart(root, chartRelease, chartNamespace, tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestChartLint: Helm's linter finds nothing to warn about, with the defaults
// and with every overlay; and it does fail a broken chart.
func TestChartLint(t *testing.T) {
	root := repoRoot(t)
	kv, err := chartutil.ParseKubeVersion(ChartKubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, ChartDir)
	for _, o := range chartOverlays {
		t.Run(o.name, func(t *testing.T) {
			vals := map[string]any{}
			if err := sigsyaml.UnmarshalStrict([]byte(o.values), &vals); err != nil {
				t.Fatal(err)
			}
			_, namespace := chartNameFor(o)
			for _, m := range lint.AllWithKubeVersion(dir, vals, namespace, kv).Messages {
				if m.Severity >= support.WarningSev {
					t.Error(m)
				} else {
					t.Log(m)
				}
			}
		})
	}
	t.Run("a broken chart fails", func(t *testing.T) {
		broken := t.TempDir()
		if err := os.CopyFS(broken, os.DirFS(dir)); err != nil {
			t.Fatal(err)
		}
		tpl := filepath.Join(broken, "templates", "service.yaml")
		data, err := os.ReadFile(tpl)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tpl, []byte(strings.Replace(string(data), "{{ .Values.service.type }}", "{{ .Values.service.type", 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		var errs int
		for _, m := range lint.AllWithKubeVersion(broken, nil, chartNamespace, kv).Messages {
			if m.Severity >= support.ErrorSev {
				errs++
			}
		}
		if errs == 0 {
			t.Fatal("the linter accepted a template with an unclosed action")
		}
	})
}
