package relay

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// pionLogs routes pion's logs to slog: pion's own default prints errors to
// stderr, and a library stays quiet unless asked. TURN's chatter (trace,
// debug, info) goes out at slog's debug level, warnings and errors as
// they are.
//
// failed, when set, is called when pion logs the failure of one of its
// own refresh timers (allocation, permissions, channel bindings): its
// refresh goroutines have no other way to report one.
type pionLogs struct {
	log    *slog.Logger
	failed func()
}

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.log.With("scope", "pion/"+scope), f.failed}
}

type pionLogger struct {
	log    *slog.Logger
	failed func()
}

// pionFailures are the formats of pion v4's (v4.1.4) logs of a failed
// refresh or channel bind (internal/client allocation.go and udp_conn.go).
// Should they change, checks still run every CheckInterval.
var pionFailures = map[string]bool{
	"Failed to refresh allocation: %s":  true,
	"Failed to refresh permissions: %s": true,
	"Fail to refresh permissions: %s":   true,
	"Failed to bind channel %d: %s":     true,
}

func (l pionLogger) failure(format string) {
	if l.failed != nil && pionFailures[format] {
		l.failed()
	}
}

func (l pionLogger) logf(level slog.Level, format string, args ...any) {
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

func (l pionLogger) Trace(msg string)                  { l.logf(slog.LevelDebug-4, "%s", msg) }
func (l pionLogger) Tracef(format string, args ...any) { l.logf(slog.LevelDebug-4, format, args...) }
func (l pionLogger) Debug(msg string)                  { l.logf(slog.LevelDebug, "%s", msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args...) }
func (l pionLogger) Info(msg string)                   { l.logf(slog.LevelDebug, "%s", msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.logf(slog.LevelDebug, format, args...) }
func (l pionLogger) Warn(msg string)                   { l.logf(slog.LevelWarn, "%s", msg) }
func (l pionLogger) Error(msg string)                  { l.logf(slog.LevelError, "%s", msg) }

func (l pionLogger) Warnf(format string, args ...any) {
	l.logf(slog.LevelWarn, format, args...)
	l.failure(format)
}

func (l pionLogger) Errorf(format string, args ...any) {
	l.logf(slog.LevelError, format, args...)
	l.failure(format)
}

func quiet(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
