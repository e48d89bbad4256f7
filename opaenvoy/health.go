package opaenvoy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/open-policy-agent/opa/v1/plugins"
	bundleplugin "github.com/open-policy-agent/opa/v1/plugins/bundle"
)

// Health serves OPA's health API, which OPA-Envoy's probes call on --addr
// and --diagnostic-addr: GET /health answers 200 {} while the server runs;
// ?bundles (or ?bundle) adds that every configured bundle has been activated,
// ?plugins that every plugin reports OK (?exclude-plugin=NAME, repeatable,
// leaves one out). Otherwise 500 {"error": "..."}, as OPA answers.
func (r *Runtime) Health(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	statuses := r.manager.PluginStatus()
	var err error
	switch {
	case (boolParam(q, "bundles") || boolParam(q, "bundle")) && !bundlesReady(statuses):
		err = errors.New("one or more bundles are not activated")
		if bp := bundleplugin.Lookup(r.manager); bp != nil {
			if names := bp.NotActivated(); len(names) > 0 {
				err = fmt.Errorf("%w: %s", err, strings.Join(names, ", "))
			}
		}
	case boolParam(q, "plugins"):
		exclude := map[string]bool{}
		for _, v := range q["exclude-plugin"] {
			for name := range strings.SplitSeq(v, ",") {
				exclude[name] = true
			}
		}
		for name, st := range statuses {
			if !exclude[name] && st != nil && st.State != plugins.StateOK {
				err = errors.New("one or more plugins are not up")
				break
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	_, _ = w.Write([]byte("{}\n"))
}

// boolParam is OPA's reading of a flag parameter: present and empty, or true.
func boolParam(q map[string][]string, name string) bool {
	vs, ok := q[name]
	if !ok {
		return false
	}
	for _, v := range vs {
		if v == "" || strings.EqualFold(v, "true") {
			return true
		}
	}
	return false
}
