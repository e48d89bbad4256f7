package policy

import (
	"context"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

const (
	// watchDebounce coalesces the burst of events one save produces (an
	// editor's write-temp-then-rename, a ConfigMap's symlink swap) into one
	// reload.
	watchDebounce = 150 * time.Millisecond
	// watchPoll is the fallback for what file events miss (network
	// filesystems, a watched directory replaced wholesale, inotify limits).
	watchPoll = 5 * time.Second
)

// Watch reloads the policy when files under Paths change, until ctx is done;
// it then returns nil. It watches every directory under Paths (and the parent
// directory of a file path, which is where editors and Kubernetes replace
// files), debounces bursts of events, and also polls a content hash as a
// fallback. A broken write is logged by Reload and the last good revision
// stays active. With no Paths there is nothing to watch and Watch returns at
// once.
func (e *Engine) Watch(ctx context.Context) error {
	if len(e.paths) == 0 {
		e.watchingOnce.Do(func() { close(e.watching) })
		return nil
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		e.logger.Warn("policy file events unavailable, polling only", "interval", watchPoll, "error", err)
	} else {
		defer watcher.Close()
		events, errs = watcher.Events, watcher.Errors
	}
	files, explicitFiles := e.watchTargets()
	addWatches := func() {
		if watcher == nil {
			return
		}
		_, dirs := policyFiles(e.paths)
		for _, f := range explicitFiles {
			dirs = append(dirs, filepath.Dir(f))
		}
		for _, d := range dirs {
			// Adding an already watched directory is harmless; a directory
			// that vanished is caught by the poll.
			_ = watcher.Add(d)
		}
	}
	addWatches()
	seen := fingerprint(e.paths)
	// From here on a write is seen: by its event, or by the poll comparing
	// against this fingerprint.
	e.watchingOnce.Do(func() { close(e.watching) })

	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	poll := time.NewTicker(watchPoll)
	defer poll.Stop()

	reload := func() {
		seen = fingerprint(e.paths)
		// Reload logs a failure itself and keeps the old revision.
		_ = e.Reload(ctx)
		addWatches() // pick up directories created since
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if relevant(ev, files) {
				debounce.Reset(watchDebounce)
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			e.logger.Warn("policy watch error", "error", err)
		case <-debounce.C:
			reload()
		case <-poll.C:
			if fp := fingerprint(e.paths); fp != seen {
				reload()
			}
		}
	}
}

// Watching is closed once Watch watches the policy files: a change written
// after it is picked up. A supervisor can wait on it before it reports the
// watch as active; with no Paths it is closed as soon as Watch is called.
func (e *Engine) Watching() <-chan struct{} { return e.watching }

// watchTargets splits Paths: directories are watched whole; for files named
// explicitly their parent directory is watched and only events for the file
// itself (or a Kubernetes "..data" swap beside it) count.
func (e *Engine) watchTargets() (files map[string]bool, explicit []string) {
	files = map[string]bool{}
	_, dirs := policyFiles(e.paths)
	isDir := map[string]bool{}
	for _, d := range dirs {
		isDir[d] = true
	}
	for _, p := range e.paths {
		p = filepath.Clean(stripPrefix(p))
		if !isDir[p] {
			files[p] = true
			explicit = append(explicit, p)
		}
	}
	return files, explicit
}

// relevant reports whether ev can change the policy. Events inside watched
// directories can, unless they concern hidden files; in the parent directory of an explicit file, only
// events for that file or for Kubernetes' ..data symlink.
func relevant(ev fsnotify.Event, files map[string]bool) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	name := filepath.Clean(ev.Name)
	base := filepath.Base(name)
	if files[name] || strings.HasPrefix(base, "..") {
		return true
	}
	if strings.HasPrefix(base, ".") {
		return false // editors' swap and backup files; the loader skips them too
	}
	dir := filepath.Dir(name)
	for f := range files {
		if filepath.Dir(f) == dir {
			return false // a sibling of an explicit file
		}
	}
	return true
}
