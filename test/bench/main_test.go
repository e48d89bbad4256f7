package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseSettings(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		check   func(settings) bool
		wantErr string
	}{
		{name: "defaults", check: func(s settings) bool {
			return s.duration == 5*time.Second && s.warmup == time.Second && s.streams == 16 && s.conns == 1 && s.tokens == 100000 && s.opaEnvoy == ""
		}},
		{name: "environment", env: map[string]string{"BENCH_DURATION": "2s", "BENCH_STREAMS": "4", "OPA_ENVOY": "/x/opa-envoy"}, check: func(s settings) bool {
			return s.duration == 2*time.Second && s.streams == 4 && s.opaEnvoy == "/x/opa-envoy"
		}},
		{name: "flag over environment", env: map[string]string{"BENCH_DURATION": "2s"}, args: []string{"-duration", "3s"}, check: func(s settings) bool {
			return s.duration == 3*time.Second
		}},
		{name: "bad duration", env: map[string]string{"BENCH_DURATION": "five"}, wantErr: "BENCH_DURATION"},
		{name: "zero streams", env: map[string]string{"BENCH_STREAMS": "0"}, wantErr: "BENCH_STREAMS"},
		{name: "stray argument", args: []string{"now"}, wantErr: "unexpected argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parseSettings(tc.args, func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !tc.check(s) {
				t.Fatalf("parseSettings = %+v, %v", s, err)
			}
		})
	}
}

func TestSelected(t *testing.T) {
	s := settings{scenarios: "warm, Memory"}
	for name, want := range map[string]bool{
		"warm token": true, "memory, 100k tokens": true, "cold token": false, "docs policy": false,
	} {
		if got := s.selected(name); got != want {
			t.Errorf("selected(%q) = %v, want %v", name, got, want)
		}
	}
	if !(settings{}).selected("cold token") {
		t.Error("an empty filter must select every scenario")
	}
}
