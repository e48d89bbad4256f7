package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse-dev/gatehouse/authz"
	"github.com/gatehouse-dev/gatehouse/authz/clientip"
	"github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/config"
)

// liveTokens holds the JWT verifier, which a configuration reload may
// replace: readiness, the admin API and the metrics read the current one.
type liveTokens struct{ cur atomic.Pointer[jwt.Verifier] }

func newLiveTokens(v *jwt.Verifier) *liveTokens {
	l := &liveTokens{}
	l.cur.Store(v)
	return l
}

func (l *liveTokens) get() *jwt.Verifier       { return l.cur.Load() }
func (l *liveTokens) Ready() bool              { return l.get().Ready() }
func (l *liveTokens) Close()                   { l.get().Close() }
func (l *liveTokens) Stats() jwt.Stats         { return l.get().Stats() }
func (l *liveTokens) Keys() []jwt.ProviderKeys { return l.get().Keys() }
func (l *liveTokens) CacheLen() int            { return l.get().CacheLen() }

// swap installs v and returns the verifier it replaces.
func (l *liveTokens) swap(v *jwt.Verifier) *jwt.Verifier { return l.cur.Swap(v) }

// Collector reports the current verifier's metrics (every verifier has the
// same descriptions).
func (l *liveTokens) Collector() prometheus.Collector { return liveCollector{l} }

type liveCollector struct{ l *liveTokens }

func (c liveCollector) Describe(ch chan<- *prometheus.Desc) { c.l.get().Collector().Describe(ch) }
func (c liveCollector) Collect(ch chan<- prometheus.Metric) { c.l.get().Collector().Collect(ch) }

// Reload timing.
const (
	// configDebounce coalesces the events of one save or ConfigMap swap.
	configDebounce = 200 * time.Millisecond
	// configPoll catches what file events miss (network file systems, a
	// directory replaced whole).
	configPoll = 2 * time.Second
	// jwksReadyTimeout bounds how long a reload waits for new JWT
	// providers' key sets before it gives up and keeps the running ones.
	jwksReadyTimeout = 15 * time.Second
)

// liveSections are the configuration's top-level keys a reload applies; a
// change anywhere else is reported as needing a restart.
var liveSections = map[string]bool{"jwt": true, "client_ip": true, "bypass": true, "headers": true, "authorization": true}

// configReloader watches the configuration file and applies what changed,
// the way policy files reload: the new configuration is loaded and
// validated, every part it makes (rules, client IP resolver, JWT verifier
// with its key sets) is built completely, and only then swapped in. A file
// that fails at any step keeps the running configuration, says why in the
// log and counts the failure.
type configReloader struct {
	file      string
	overrides func(*config.Config) // the command line's, applied to each load
	p         *parts
	logger    *slog.Logger
	client    *http.Client // JWKS fetches; nil for the default

	mu      sync.Mutex     // one reload at a time
	running *config.Config // what the process started with (restart-only keys)
	active  *config.Config // the configuration in force
	seen    [32]byte       // the file's content at the last attempt

	reloads         *prometheus.CounterVec
	restartRequired prometheus.Gauge
	// watching is closed once the watch is set up (tests wait on it).
	watching chan struct{}
}

func newConfigReloader(file string, overrides func(*config.Config), cfg *config.Config, p *parts, logger *slog.Logger, reg prometheus.Registerer) (*configReloader, error) {
	r := &configReloader{
		file: file, overrides: overrides, p: p, logger: logger.With("component", "config"),
		running: cfg, active: cfg, watching: make(chan struct{}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_config_reloads_total",
			Help: "Configuration file reloads by result: success, failure (the running configuration stays), unchanged.",
		}, []string{"result"}),
		restartRequired: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatehouse_config_restart_required",
			Help: "1 while the configuration file changes settings that only a restart applies (listen addresses, policy, limits, log, ops).",
		}),
	}
	for _, c := range []prometheus.Collector{r.reloads, r.restartRequired} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, res := range []string{"success", "failure", "unchanged"} {
		r.reloads.WithLabelValues(res)
	}
	if b, err := os.ReadFile(file); err == nil {
		r.seen = sha256.Sum256(b)
	}
	return r, nil
}

// watch reloads the file when it changes, until ctx ends. It watches the
// file's directory (editors and Kubernetes replace files, a ConfigMap swaps
// a symlink) and polls the content as a fallback.
func (r *configReloader) watch(ctx context.Context) {
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w, err := fsnotify.NewWatcher(); err != nil {
		r.logger.Warn("configuration file events unavailable, polling only", "interval", configPoll, "error", err)
	} else {
		defer w.Close()
		if err := w.Add(filepath.Dir(r.file)); err != nil {
			r.logger.Warn("cannot watch the configuration's directory, polling only", "interval", configPoll, "error", err)
		} else {
			events, errs = w.Events, w.Errors
		}
	}
	close(r.watching)
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	poll := time.NewTicker(configPoll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			// The file itself, or a ConfigMap's "..data" symlink swap; not
			// an editor's swap file beside it.
			if filepath.Clean(ev.Name) == filepath.Clean(r.file) || filepath.Base(ev.Name) == "..data" {
				debounce.Reset(configDebounce)
			}
		case err, ok := <-errs:
			// fsnotify blocks its event delivery until its errors are read.
			if !ok {
				errs = nil
				continue
			}
			r.logger.Warn("configuration watch error; the poll still runs", "error", err.Error())
		case <-debounce.C:
			r.reloadIfChanged(ctx)
		case <-poll.C:
			r.reloadIfChanged(ctx)
		}
	}
}

func (r *configReloader) reloadIfChanged(ctx context.Context) {
	b, err := os.ReadFile(r.file)
	if err != nil {
		// A swap caught half way, or a deleted file: nothing to apply yet.
		r.logger.Warn("configuration file unreadable, keeping the running configuration", "file", r.file, "error", err.Error())
		return
	}
	sum := sha256.Sum256(b)
	r.mu.Lock()
	same := sum == r.seen
	r.seen = sum
	r.mu.Unlock()
	if same {
		return
	}
	_ = r.reload(ctx)
}

// reload loads the file and applies it (see configReloader).
func (r *configReloader) reload(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	next, err := config.Load(r.file)
	if err == nil && r.overrides != nil {
		r.overrides(next)
		err = next.Validate()
	}
	if err != nil {
		return r.failed(err)
	}
	restart := changedKeys(r.running, next, false)
	if len(restart) > 0 {
		r.restartRequired.Set(1)
		r.logger.Warn("configuration change needs a restart to take effect; the rest is applied", "keys", strings.Join(restart, ", "))
	} else {
		r.restartRequired.Set(0)
	}
	live := changedKeys(r.active, next, true)
	if len(live) == 0 {
		r.reloads.WithLabelValues("unchanged").Inc()
		return nil
	}

	// Build everything first; nothing is swapped until it all stands.
	resolver, err := clientip.New(next.ClientIP.Options())
	if err != nil {
		return r.failed(fmt.Errorf("client_ip: %w", err))
	}
	var tokens *jwt.Verifier
	if !reflect.DeepEqual(r.active.JWT, next.JWT) {
		opts := next.JWT.Options()
		opts.Logger = r.logger.With("component", "jwt")
		opts.HTTPClient = r.client
		if tokens, err = jwt.New(ctx, opts); err != nil {
			return r.failed(fmt.Errorf("jwt: %w", err))
		}
		if err := waitReady(ctx, tokens, jwksReadyTimeout); err != nil {
			tokens.Close()
			return r.failed(fmt.Errorf("jwt: %w", err))
		}
	}
	if err := r.p.policy.SetRules(ctx, next.Rules()); err != nil {
		if tokens != nil {
			tokens.Close()
		}
		return r.failed(err)
	}
	verifier := r.p.tokens.get()
	if tokens != nil {
		verifier = tokens
	}
	est := authz.Establishers{ClientIP: resolver}
	if len(next.JWT.Providers) > 0 {
		est.Tokens = verifier
	}
	if err := r.p.authz.SetEstablishers(est); err != nil {
		if tokens != nil {
			tokens.Close()
		}
		return r.failed(err)
	}
	if tokens != nil {
		// Checks that started with the old verifier have their answers; it
		// only serves metrics and status until it is closed here.
		r.p.tokens.swap(tokens).Close()
	}
	r.active = next
	r.reloads.WithLabelValues("success").Inc()
	r.logger.Info("configuration reloaded", "file", r.file, "changed", strings.Join(live, ", "), "policy_revision", r.p.policy.Revision())
	return nil
}

func (r *configReloader) failed(err error) error {
	r.reloads.WithLabelValues("failure").Inc()
	r.logger.Error("configuration reload failed, keeping the running configuration", "file", r.file, "error", err.Error())
	return err
}

// waitReady waits until every provider of v holds a key set.
func waitReady(ctx context.Context, v *jwt.Verifier, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !v.Ready() {
		if time.Now().After(deadline) {
			return errors.New("the new providers' key sets could not be fetched in time (see the jwks errors above); the running providers stay")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// changedKeys lists the top-level keys whose values differ between a and b:
// the live ones (live true) or the others.
func changedKeys(a, b *config.Config, live bool) []string {
	var keys []string
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	t := va.Type()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if liveSections[name] != live {
			continue
		}
		// DeepEqual compares pointers by what they point to.
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			keys = append(keys, name)
		}
	}
	return keys
}
