package testutil

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
)

// LockedBuffer is a bytes.Buffer safe for concurrent writers (a logger used
// by request handlers, a command running in a goroutine) and a test polling
// its content.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Contains reports whether everything written so far contains s.
func (b *LockedBuffer) Contains(s string) bool { return strings.Contains(b.String(), s) }

// TextLogger returns a text slog.Logger at level writing into b.
func (b *LockedBuffer) TextLogger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: level}))
}

// JSONLogger returns a JSON slog.Logger at level writing into b.
func (b *LockedBuffer) JSONLogger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: level}))
}
