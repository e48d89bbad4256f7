package opaenvoy

import (
	"fmt"
	"strconv"
	"strings"
)

// OPA parses --set with a copy of Helm's strvals that it keeps internal, so
// this is the subset of that syntax OPA's documentation and OPA-Envoy's
// deployments use: comma-separated assignments, dotted keys, list indexes
// (key[0]), list values ({a,b}) and a backslash to escape a separator.
// Values are typed as strvals types them: true, false, null, integers;
// anything else is a string. --set-file values are file contents, untyped.
// Whatever falls outside is an error, never a guess.

// keySegment is one dotted part of a key: a name and the list indexes that
// follow it (servers[0] is {"servers", [0]}).
type keySegment struct {
	name    string
	indexes []int
}

// parseSet applies the assignments in s to into. readFile, when not nil,
// reads each value as a file path (--set-file).
func parseSet(s string, into map[string]any, readFile func(string) (any, error)) error {
	for _, assign := range split(s, ',', true) {
		if assign == "" {
			continue
		}
		parts := split(assign, '=', false)
		if len(parts) < 2 {
			return fmt.Errorf("%q has no '=': %w", assign, errSetSyntax)
		}
		key, raw := parts[0], strings.Join(parts[1:], "=")
		path, err := parseKey(key)
		if err != nil {
			return err
		}
		var value any
		switch {
		case readFile != nil:
			if value, err = readFile(unescape(raw)); err != nil {
				return err
			}
		case strings.HasPrefix(raw, "{") && strings.HasSuffix(raw, "}"):
			items := []any{}
			for _, item := range split(raw[1:len(raw)-1], ',', false) {
				items = append(items, typed(unescape(item)))
			}
			value = items
		default:
			value = typed(unescape(raw))
		}
		if err := setPath(into, path, value); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	return nil
}

// split cuts s at sep outside of backslash escapes (kept for unescape) and,
// when braces is true, outside of {...} list values.
func split(s string, sep byte, braces bool) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			i++
		case braces && c == '{':
			depth++
		case braces && c == '}' && depth > 0:
			depth--
		case c == sep && depth == 0:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// unescape drops the backslash before an escaped character.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// typed gives a value strvals' type: booleans, null and integers (without a
// leading zero) are not strings.
func typed(s string) any {
	switch s {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	}
	if s == "0" || (s != "" && s[0] != '0' && !strings.HasPrefix(s, "-0") && !strings.HasPrefix(s, "+")) {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n
		}
	}
	return s
}

// parseKey reads a dotted key with optional [n] indexes.
func parseKey(key string) ([]keySegment, error) {
	var path []keySegment
	for _, part := range split(key, '.', false) {
		name, rest, _ := strings.Cut(part, "[")
		seg := keySegment{name: unescape(name)}
		if seg.name == "" {
			return nil, fmt.Errorf("key %q has an empty part: %w", key, errSetSyntax)
		}
		for rest != "" {
			idx, after, ok := strings.Cut(rest, "]")
			n, err := strconv.Atoi(idx)
			if !ok || err != nil || n < 0 || n > 1000 {
				return nil, fmt.Errorf("key %q: bad list index: %w", key, errSetSyntax)
			}
			seg.indexes = append(seg.indexes, n)
			if after == "" {
				break
			}
			if !strings.HasPrefix(after, "[") {
				return nil, fmt.Errorf("key %q: text after an index: %w", key, errSetSyntax)
			}
			rest = after[1:]
		}
		path = append(path, seg)
	}
	return path, nil
}

// setPath sets value at path in m, creating objects and lists on the way.
func setPath(m map[string]any, path []keySegment, value any) error {
	seg := path[0]
	if len(seg.indexes) == 0 {
		if len(path) == 1 {
			m[seg.name] = value
			return nil
		}
		child, ok := m[seg.name].(map[string]any)
		if !ok {
			child = map[string]any{}
			m[seg.name] = child
		}
		return setPath(child, path[1:], value)
	}
	list, _ := m[seg.name].([]any)
	var err error
	m[seg.name], err = setIndex(list, seg.indexes, path[1:], value)
	return err
}

// setIndex sets value (or the rest of the path) at list[indexes...].
func setIndex(list []any, indexes []int, rest []keySegment, value any) ([]any, error) {
	i := indexes[0]
	for len(list) <= i {
		list = append(list, nil)
	}
	switch {
	case len(indexes) > 1:
		inner, _ := list[i].([]any)
		var err error
		list[i], err = setIndex(inner, indexes[1:], rest, value)
		return list, err
	case len(rest) == 0:
		list[i] = value
		return list, nil
	}
	child, ok := list[i].(map[string]any)
	if !ok {
		child = map[string]any{}
		list[i] = child
	}
	return list, setPath(child, rest, value)
}
