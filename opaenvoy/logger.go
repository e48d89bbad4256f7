package opaenvoy

import (
	"context"
	"fmt"
	"log/slog"
	"maps"

	"github.com/open-policy-agent/opa/v1/logging"
)

// slogLogger is OPA's logging.Logger on a slog.Logger, so the plugin
// manager's and plugins' messages (bundle downloads, upload failures) go to
// Gatehouse's log in its format.
type slogLogger struct {
	logger *slog.Logger
	fields map[string]any
}

var _ logging.Logger = (*slogLogger)(nil)

func (l *slogLogger) log(level slog.Level, format string, a []any) {
	if !l.logger.Enabled(context.Background(), level) {
		return
	}
	msg := format
	if len(a) > 0 {
		msg = fmt.Sprintf(format, a...)
	}
	attrs := make([]any, 0, 2*len(l.fields))
	for k, v := range l.fields {
		if err, ok := v.(error); ok {
			v = err.Error()
		}
		attrs = append(attrs, k, v)
	}
	l.logger.Log(context.Background(), level, msg, attrs...)
}

func (l *slogLogger) Debug(format string, a ...any) { l.log(slog.LevelDebug, format, a) }
func (l *slogLogger) Info(format string, a ...any)  { l.log(slog.LevelInfo, format, a) }
func (l *slogLogger) Warn(format string, a ...any)  { l.log(slog.LevelWarn, format, a) }
func (l *slogLogger) Error(format string, a ...any) { l.log(slog.LevelError, format, a) }

// WithFields returns a logger that adds fields to every message.
func (l *slogLogger) WithFields(fields map[string]any) logging.Logger {
	merged := maps.Clone(l.fields)
	if merged == nil {
		merged = map[string]any{}
	}
	maps.Copy(merged, fields)
	return &slogLogger{logger: l.logger, fields: merged}
}

// GetLevel reports the most verbose level slog lets through.
func (l *slogLogger) GetLevel() logging.Level {
	ctx := context.Background()
	switch {
	case l.logger.Enabled(ctx, slog.LevelDebug):
		return logging.Debug
	case l.logger.Enabled(ctx, slog.LevelInfo):
		return logging.Info
	case l.logger.Enabled(ctx, slog.LevelWarn):
		return logging.Warn
	}
	return logging.Error
}

// SetLevel does nothing: the level is Gatehouse's (--log-level).
func (*slogLogger) SetLevel(logging.Level) {}
