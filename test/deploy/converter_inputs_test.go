package deploy

import (
	"os"
	"path/filepath"
	"testing"

	securityv1beta1 "istio.io/api/security/v1beta1"
)

// TestConverterInputsAreRealRequestAuthentications: the RequestAuthentication
// files gatehousectl convert is tested on decode strictly into Istio's own
// type (List items included; status and server-set metadata allowed, as
// kubectl prints them), so the converter is tested on input Istio accepts.
func TestConverterInputsAreRealRequestAuthentications(t *testing.T) {
	root := repoRoot(t)
	files, err := filepath.Glob(filepath.Join(root, "cmd/gatehousectl/testdata/requestauthentication/*.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("converter testdata not found: %v %v", files, err)
	}
	var ras int
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := ParseObjects(filepath.Base(f), data)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			items := []Object{o}
			if o.Kind == "List" {
				items = nil
				list, _ := o.Map["items"].([]any)
				for i, it := range list {
					m, _ := it.(map[string]any)
					delete(m, "status")
					item := Object{File: o.File, Doc: i, Map: m}
					item.APIVersion, _ = m["apiVersion"].(string)
					item.Kind, _ = m["kind"].(string)
					items = append(items, item)
				}
			}
			for _, it := range items {
				d, err := Decode(it)
				if err != nil {
					t.Errorf("%s: %v", f, err)
					continue
				}
				if _, ok := d.Spec.(*securityv1beta1.RequestAuthentication); ok {
					ras++
				}
			}
		}
	}
	if ras < 5 {
		t.Fatalf("decoded %d RequestAuthentications, want at least 5", ras)
	}
}
