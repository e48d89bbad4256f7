package authz

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	gjwt "github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/internal/testutil"
	"github.com/gatehouse-dev/gatehouse/policy"
)

// FuzzAppendJSONString: whatever bytes a client sends, the decision log line
// stays valid JSON and says exactly what encoding/json reads back (invalid
// UTF-8 as U+FFFD).
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `q"uote\back`, "ctl\x00\x1f\n\r\t", "bad\xff\xfeutf8", "\u2028\u2029", "é中🙂", "<&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q encoded as %s: %v", s, b, err)
		}
		if want := strings.ToValidUTF8(s, "\ufffd"); got != want && utf8.ValidString(s) {
			t.Fatalf("%q read back as %q", s, got)
		}
	})
}

// TestDecisionLogLine: one JSON object per line with the documented keys,
// hostile header values included.
func TestDecisionLogLine(t *testing.T) {
	var logs testutil.LockedBuffer
	tok := &recordingTokens{res: &gjwt.Result{Provider: "corp", Error: "expired"}}
	c := startServer(t, policy.Options{}, Options{Tokens: tok, DecisionLog: &logs})
	check(t, c, checkReq("GET", "/a\"b\\c\x01", map[string]string{"x-request-id": "id\"\n\u2028"}, ""))
	line := strings.TrimSpace(logs.String())
	if strings.Count(line, "\n") != 0 {
		t.Fatalf("more than one line: %q", line)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, line)
	}
	for _, k := range []string{"time", "level", "msg", "decision_id", "allowed", "status", "reason", "policy_revision", "duration_ms", "request_id", "method", "host", "path", "client_ip", "client_ip_source", "jwt"} {
		if _, ok := rec[k]; !ok {
			t.Errorf("key %s missing: %s", k, line)
		}
	}
	if rec["msg"] != "decision" || rec["level"] != "INFO" || rec["allowed"] != false || rec["status"] != float64(401) ||
		rec["reason"] != "token_expired" || rec["request_id"] != "id\"\n\u2028" {
		t.Errorf("record = %v", rec)
	}
	if jwt, _ := rec["jwt"].(map[string]any); jwt["error"] != "expired" || jwt["provider"] != "corp" || jwt["valid"] != false {
		t.Errorf("jwt = %v", rec["jwt"])
	}
}
