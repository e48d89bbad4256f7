package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// Fields 3.. of a real /proc/<pid>/stat line; utime (14) is 1234 and
	// stime (15) is 56 ticks.
	const tail = " S 1 1234 1234 0 -1 4194560 5400 0 0 0 1234 56 0 0 20 0 9 0 4567 1300000000 8000 18446744073709551615 1 1 0 0 0 0 0 0 2143420159 0 0 0 17 1 0 0 0 0 0"
	tests := []struct {
		name    string
		line    string
		want    time.Duration
		wantErr string
	}{
		{name: "plain name", line: "4242 (gatehouse)" + tail, want: 12900 * time.Millisecond},
		{name: "name with spaces and parentheses", line: "4242 (a) b (c))" + tail, want: 12900 * time.Millisecond},
		{name: "no parenthesis", line: "4242 gatehouse" + tail, wantErr: "no ')'"},
		{name: "truncated", line: "4242 (gatehouse) S 1 1234 1234 0 -1 4194560 5400 0 0 0 1234", wantErr: "fields after the command name"},
		{name: "not a number", line: strings.Replace("4242 (gatehouse)"+tail, " 1234 56 ", " 1234 x ", 1), wantErr: "field 15"},
		{name: "negative", line: strings.Replace("4242 (gatehouse)"+tail, " 1234 56 ", " -1234 56 ", 1), wantErr: "field 14"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat([]byte(tc.line + "\n"))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseStat error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseStat = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestParseVmRSS(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    int64
		wantErr string
	}{
		{name: "real layout", status: "Name:\tgatehouse\nVmPeak:\t 1300000 kB\nVmHWM:\t   40000 kB\nVmRSS:\t   34560 kB\nRssAnon:\t   20000 kB\n", want: 34560 * 1024},
		{name: "no VmRSS (kernel thread)", status: "Name:\tkthreadd\nState:\tS (sleeping)\n", wantErr: "no VmRSS"},
		{name: "other unit", status: "VmRSS:\t 34 MB\n", wantErr: "want"},
		{name: "not a number", status: "VmRSS:\t lots kB\n", wantErr: "VmRSS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseVmRSS([]byte(tc.status))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseVmRSS error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseVmRSS = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// TestProcOfThisProcess reads the live files of the test process itself, so a
// change in their layout is caught here rather than in a bench run.
func TestProcOfThisProcess(t *testing.T) {
	pid := os.Getpid()
	if _, err := cpuTime(pid); err != nil {
		t.Fatalf("cpuTime(self): %v", err)
	}
	rss, err := rssBytes(pid)
	if err != nil || rss <= 0 {
		t.Fatalf("rssBytes(self) = %d, %v; want a positive size", rss, err)
	}
}
