package policy

import (
	"regexp"
	"testing"
)

// FuzzMatcher: the literal fast path answers exactly as the regexp engine
// (which regex.match uses) for any pattern and value.
func FuzzMatcher(f *testing.F) {
	for _, seed := range [][2]string{
		{"(?i)sqlmap|nikto", "Mozilla SQLMap/1.0"},
		{"(?i)sqlmap|nikto", "ni\u212Ato"},  // KELVIN SIGN folds to k
		{"(?i)sqlmap|nikto", "\u017Fqlmap"}, // LONG S folds to s
		{"sqlmap|nikto", "SQLMAP"},
		{"^abc$", "abc"},
		{"abc|abd", "xxabdxx"},
		{"(?i)a", "A"},
		{"", "x"},
		{"x(?i)y", "xY"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, re, value string) {
		want, err := regexp.Compile(re)
		if err != nil {
			return
		}
		m, err := compileMatcher(re)
		if err != nil {
			t.Fatal(err)
		}
		if got, w := m.MatchString(value), want.MatchString(value); got != w {
			t.Fatalf("pattern %q value %q: fast path %v, regexp %v", re, value, got, w)
		}
	})
}

func TestLiteralFastPathIsUsed(t *testing.T) {
	for re, fast := range map[string]bool{
		"(?i)sqlmap|nikto": true, "sqlmap": true, "^sqlmap": false, "sql.*map": false, "(?i)é": false,
	} {
		m, err := compileMatcher(re)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(*literalMatcher); ok != fast {
			t.Errorf("%q: fast path %v, want %v", re, ok, fast)
		}
	}
}

func BenchmarkMatcher(b *testing.B) {
	ua := "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
	rx := regexp.MustCompile("(?i)sqlmap|nikto")
	m, _ := compileMatcher("(?i)sqlmap|nikto")
	b.Run("regexp", func(b *testing.B) {
		for b.Loop() {
			rx.MatchString(ua)
		}
	})
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			m.MatchString(ua)
		}
	})
}
