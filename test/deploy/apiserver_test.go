//go:build k8s

package deploy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	sigsyaml "sigs.k8s.io/yaml"
)

// This file runs only with `-tags k8s` (make test-k8s): it needs etcd and
// kube-apiserver binaries, passed as ETCD and KUBE_APISERVER (built by
// scripts/k8s-binaries.sh).

// cluster is a real API server backed by a real etcd, on loopback.
type cluster struct {
	cfg     *rest.Config
	dyn     dynamic.Interface
	mapper  *restmapper.DeferredDiscoveryRESTMapper
	logs    map[string]*bytes.Buffer
	logsMu  sync.Mutex
	started []*exec.Cmd
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type lockedBuffer struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (c *cluster) start(t *testing.T, name, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	buf := &bytes.Buffer{}
	c.logs[name] = buf
	cmd.Stdout = lockedBuffer{&c.logsMu, buf}
	cmd.Stderr = lockedBuffer{&c.logsMu, buf}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	c.started = append(c.started, cmd)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
}

func (c *cluster) log(name string) string {
	c.logsMu.Lock()
	defer c.logsMu.Unlock()
	s := c.logs[name].String()
	if len(s) > 4000 {
		s = "...\n" + s[len(s)-4000:]
	}
	return s
}

func binary(t *testing.T, env string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		t.Fatalf("%s is not set: run `make test-k8s`, which builds etcd and kube-apiserver with scripts/k8s-binaries.sh", env)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v", env, err)
	}
	return p
}

// startCluster starts etcd and kube-apiserver on free loopback ports with
// generated certificates, a generated service-account key, a static token
// and AlwaysAllow authorization, and waits until the API server is ready.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	etcdBin, apiBin := binary(t, "ETCD"), binary(t, "KUBE_APISERVER")
	dir := t.TempDir()
	c := &cluster{logs: map[string]*bytes.Buffer{}}

	clientPort, peerPort := freePort(t), freePort(t)
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	c.start(t, "etcd", etcdBin,
		"--name", "gatehouse-test", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "gatehouse-test="+peerURL,
		"--log-level", "warn")

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	saKey, saPub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	writeFile(t, saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	writeFile(t, saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	token := rand.Text()
	tokens := filepath.Join(dir, "tokens.csv")
	writeFile(t, tokens, []byte(token+`,gatehouse-test,gatehouse-test,"system:masters"`+"\n"))

	port := freePort(t)
	c.start(t, "kube-apiserver", apiBin,
		"--etcd-servers", clientURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(port),
		"--cert-dir", filepath.Join(dir, "certs"),
		"--token-auth-file", tokens,
		"--authorization-mode", "AlwaysAllow",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", saPub,
		"--service-account-signing-key-file", saKey,
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--v", "0")

	c.cfg = &rest.Config{
		Host:            fmt.Sprintf("https://127.0.0.1:%d", port),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}, // a self-signed certificate on loopback
		QPS:             200,
		Burst:           400,
		Timeout:         30 * time.Second,
	}
	disco, err := discovery.NewDiscoveryClientForConfig(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		body, err := disco.RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		if err == nil && strings.TrimSpace(string(body)) == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver not ready: %v\n--- etcd:\n%s\n--- kube-apiserver:\n%s", err, c.log("etcd"), c.log("kube-apiserver"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if c.dyn, err = dynamic.NewForConfig(c.cfg); err != nil {
		t.Fatal(err)
	}
	c.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))
	return c
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// resource finds the REST resource of an object, refreshing discovery once
// when the kind is new (CRDs installed a moment ago).
func (c *cluster) resource(u *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := u.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		c.mapper.Reset()
		if m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return nil, fmt.Errorf("%s: %w", gvk, err)
		}
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := u.GetNamespace()
		if ns == "" {
			ns = "default"
		}
		return c.dyn.Resource(m.Resource).Namespace(ns), nil
	}
	return c.dyn.Resource(m.Resource), nil
}

// apply is `kubectl apply --server-side` of one object; with dryRun the API
// server runs validation, defaulting and admission but stores nothing.
func (c *cluster) apply(ctx context.Context, o Object, dryRun bool) error {
	u := &unstructured.Unstructured{}
	if err := sigsyaml.Unmarshal(o.Raw, &u.Object); err != nil {
		return fmt.Errorf("%s: %w", o, err)
	}
	ri, err := c.resource(u)
	if err != nil {
		return fmt.Errorf("%s: %w", o, err)
	}
	opts := metav1.ApplyOptions{FieldManager: "gatehouse-deploy-test", Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	if _, err := ri.Apply(ctx, u.GetName(), u, opts); err != nil {
		return fmt.Errorf("%s: %w", o, err)
	}
	return nil
}

// moduleDir returns where a module of this test's build list lives.
func moduleDir(t *testing.T, module string) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", module, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		t.Fatalf("module %s is not downloaded (go mod download)", module)
	}
	return dir
}

// installCRDs creates the CRDs (and admission policies shipped with them)
// for real and waits until every CRD is established.
func (c *cluster) installCRDs(t *testing.T, files ...string) {
	t.Helper()
	ctx := context.Background()
	var crds []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := ParseObjects(f, data)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if err := c.apply(ctx, o, false); err != nil {
				t.Fatalf("installing %s: %v", f, err)
			}
			if o.Kind == "CustomResourceDefinition" {
				crds = append(crds, o.Name)
			}
		}
	}
	crdRes := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	deadline := time.Now().Add(time.Minute)
	for _, name := range crds {
		for {
			u, err := c.dyn.Resource(crdRes).Get(ctx, name, metav1.GetOptions{})
			if err == nil && established(u) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CRD %s not established: %v", name, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	c.mapper.Reset()
}

func established(crd *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// TestServerSideDryRun: a real API server, with Istio's and the Gateway
// API's CRDs installed, accepts every rendered manifest with server-side
// dry-run: schema validation (unknown fields included), CEL rules of the
// CRDs, defaulting and admission all run.
func TestServerSideDryRun(t *testing.T) {
	root := repoRoot(t)
	c := startCluster(t)
	ctx := context.Background()

	gwapi := moduleDir(t, "sigs.k8s.io/gateway-api")
	gwFiles, err := filepath.Glob(filepath.Join(gwapi, "config", "crd", "standard", "*.yaml"))
	if err != nil || len(gwFiles) == 0 {
		t.Fatalf("Gateway API CRDs not found in %s: %v", gwapi, err)
	}
	c.installCRDs(t, append([]string{filepath.Join(moduleDir(t, "istio.io/api"), "kubernetes", "customresourcedefinitions.gen.yaml")}, gwFiles...)...)

	// Everything `kubectl apply -k` would send, for every kustomization.
	var objs []Object
	seen := map[string]bool{}
	for _, dir := range kustomizations(t, root) {
		rendered, _, err := Build(root, dir)
		if err != nil {
			t.Fatalf("kustomize build %s: %v", dir, err)
		}
		for _, o := range rendered {
			key := o.APIVersion + "/" + o.Kind + "/" + o.Namespace + "/" + o.Name + "/" + string(o.Raw)
			if !seen[key] {
				seen[key] = true
				objs = append(objs, o)
			}
		}
	}

	// Everything `helm install` would send, for the chart's defaults and
	// each overlay helm_test.go renders, each distinct object once.
	type chartObject struct {
		overlay string
		Object
	}
	var chartObjs []chartObject
	for _, ov := range chartOverlays {
		release, namespace := chartNameFor(ov)
		rel, err := RenderChart(root, release, namespace, ov.values)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range append(rel.Objects, rel.Hooks...) {
			key := o.APIVersion + "/" + o.Kind + "/" + o.Namespace + "/" + o.Name + "/" + string(o.Raw)
			if !seen[key] {
				seen[key] = true
				chartObjs = append(chartObjs, chartObject{ov.name, o})
			}
		}
	}

	// Namespaces exist for real (the NamespaceLifecycle admission plugin
	// refuses objects in a namespace that does not exist), as does the
	// ingress gateway Service that istioctl would have created.
	namespaces := map[string]bool{"istio-system": true}
	for _, o := range objs {
		if o.Namespace != "" {
			namespaces[o.Namespace] = true
		}
	}
	for _, o := range chartObjs {
		namespaces[o.Namespace] = true
	}
	for ns := range namespaces {
		nsObj := Object{File: "test", APIVersion: "v1", Kind: "Namespace", Name: ns,
			Raw: []byte(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", ns))}
		if err := c.apply(ctx, nsObj, false); err != nil {
			t.Fatal(err)
		}
	}
	ingress := []byte(`apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system, labels: {istio: ingressgateway}}
spec:
  type: LoadBalancer
  selector: {istio: ingressgateway}
  ports: [{name: http2, port: 80, targetPort: 8080}, {name: https, port: 443, targetPort: 8443}]
`)
	ingressObjs, err := ParseObjects("istio-ingressgateway", ingress)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.apply(ctx, ingressObjs[0], false); err != nil {
		t.Fatal(err)
	}

	for _, o := range objs {
		t.Run(fmt.Sprintf("%s/%s/%s", o.Kind, o.Namespace, o.Name), func(t *testing.T) {
			if err := c.apply(ctx, o, true); err != nil {
				t.Fatal(err)
			}
		})
	}
	if len(objs) < 15 {
		t.Fatalf("only %d objects were applied", len(objs))
	}
	var chartKinds []string
	for _, o := range chartObjs {
		t.Run(fmt.Sprintf("helm %s/%s/%s/%s", o.overlay, o.Kind, o.Namespace, o.Name), func(t *testing.T) {
			// The Prometheus Operator's CRDs are not among the Go modules
			// this test installs CRDs from; the ServiceMonitor is decoded
			// strictly into the operator's own type by helm_test.go.
			if gvk := schema.FromAPIVersionAndKind(o.APIVersion, o.Kind); gvk.Group == "monitoring.coreos.com" {
				if _, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
					t.Skipf("%s: the API server has no %s CRD (%v)", o.Object, gvk.GroupKind(), err)
				}
			}
			if err := c.apply(ctx, o.Object, true); err != nil {
				t.Fatal(err)
			}
		})
		chartKinds = append(chartKinds, o.Kind)
	}
	for _, kind := range []string{"Deployment", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"} {
		if !slices.Contains(chartKinds, kind) {
			t.Errorf("the chart's renders hold no %s", kind)
		}
	}

	// The client-IP patch, as `kubectl patch --patch-file` sends it.
	t.Run("patch istio-ingressgateway externalTrafficPolicy Local", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(root, "deploy/istio/examples/client-ip/local/ingressgateway-service-patch.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		patch, err := sigsyaml.YAMLToJSON(data)
		if err != nil {
			t.Fatal(err)
		}
		svc := c.dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "services"}).Namespace("istio-system")
		got, err := svc.Patch(ctx, "istio-ingressgateway", types.StrategicMergePatchType, patch,
			metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
		if err != nil {
			t.Fatal(err)
		}
		if v, _, _ := unstructured.NestedString(got.Object, "spec", "externalTrafficPolicy"); v != "Local" {
			t.Fatalf("externalTrafficPolicy after the patch: %q", v)
		}
	})

	// The same server refuses what a careless edit would produce: proof
	// that the dry runs above could fail.
	broken := []struct{ name, yaml, want string }{
		{"Deployment with an unknown field", `apiVersion: apps/v1
kind: Deployment
metadata: {name: broken, namespace: gatehouse-system}
spec:
  replica: 2
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec: {containers: [{name: c, image: i}]}
`, "replica"},
		{"AuthorizationPolicy with an action that does not exist", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: istio-system}
spec:
  action: EXTERNAL
  provider: {name: gatehouse}
`, "EXTERNAL"},
		{"AuthorizationPolicy with selector and targetRefs", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: istio-ingress}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: public}]
  action: CUSTOM
  provider: {name: gatehouse}
`, "targetRef"},
		{"HTTPRoute without parentRefs name", `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: httpbin}
spec:
  parentRefs: [{namespace: istio-ingress}]
`, "name"},
		{"Service port name that is not a DNS label", `apiVersion: v1
kind: Service
metadata: {name: broken, namespace: gatehouse-system}
spec:
  ports: [{name: GRPC_Port, port: 9191}]
`, "GRPC_Port"},
	}
	for _, b := range broken {
		t.Run("rejects "+b.name, func(t *testing.T) {
			objs, err := ParseObjects(b.name, []byte(b.yaml))
			if err != nil {
				t.Fatal(err)
			}
			err = c.apply(ctx, objs[0], true)
			var status apierrors.APIStatus
			if err == nil || !errors.As(err, &status) || !strings.Contains(err.Error(), b.want) {
				t.Fatalf("want the API server to refuse it mentioning %q, got %v", b.want, err)
			}
		})
	}
}
