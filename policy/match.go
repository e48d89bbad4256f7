package policy

import (
	"regexp"
	"regexp/syntax"
	"strings"
	"unicode/utf8"
)

// matcher is a compiled header-rule regex.
type matcher interface{ MatchString(s string) bool }

// compileMatcher compiles re as regex.match does (RE2, unanchored). The
// common shape of header rules, a few literals (`sqlmap|nikto`, with or
// without `(?i)`), is matched by substring search, several times faster
// than the regexp engine's case-folding backtracker; anything else, and any
// value that is not plain ASCII (Unicode case folding: U+212A KELVIN SIGN
// folds to k), goes to the regexp engine. The differential tests hold both
// to regex.match's answers.
func compileMatcher(re string) (matcher, error) {
	rx, err := regexp.Compile(re)
	if err != nil {
		return nil, err
	}
	if lits, fold, ok := literalAlternation(re); ok {
		return &literalMatcher{lits: lits, fold: fold, rx: rx}, nil
	}
	return rx, nil
}

// literalAlternation reports the literals of re when it is exactly one
// literal or an alternation of literals, all case-sensitive or all
// case-insensitive, all ASCII.
func literalAlternation(re string) (lits []string, fold, ok bool) {
	parsed, err := syntax.Parse(re, syntax.Perl)
	if err != nil {
		return nil, false, false
	}
	parts := []*syntax.Regexp{parsed}
	if parsed.Op == syntax.OpAlternate {
		parts = parsed.Sub
	}
	for i, p := range parts {
		if p.Op != syntax.OpLiteral || len(p.Rune) == 0 {
			return nil, false, false
		}
		f := p.Flags&syntax.FoldCase != 0
		if i == 0 {
			fold = f
		} else if f != fold {
			return nil, false, false
		}
		lit := string(p.Rune)
		for j := 0; j < len(lit); j++ {
			if lit[j] >= utf8.RuneSelf {
				return nil, false, false
			}
		}
		if fold {
			lit = strings.ToLower(lit)
		}
		lits = append(lits, lit)
	}
	return lits, fold, true
}

type literalMatcher struct {
	lits []string
	fold bool
	rx   *regexp.Regexp // for values that are not plain ASCII
}

func (m *literalMatcher) MatchString(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return m.rx.MatchString(s)
		}
	}
	for _, lit := range m.lits {
		if m.fold {
			if indexFoldASCII(s, lit) {
				return true
			}
		} else if strings.Contains(s, lit) {
			return true
		}
	}
	return false
}

// indexFoldASCII reports whether lower (a lower-case ASCII literal) occurs
// in s (ASCII) ignoring case.
func indexFoldASCII(s, lower string) bool {
	n := len(lower)
	for i := 0; i+n <= len(s); i++ {
		j := 0
		for ; j < n; j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != lower[j] {
				break
			}
		}
		if j == n {
			return true
		}
	}
	return false
}
