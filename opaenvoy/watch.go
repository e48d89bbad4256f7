package opaenvoy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/storage"
)

// watchDebounce coalesces the burst of events one save produces (an
// editor's write-temp-then-rename, a ConfigMap's symlink swap) into one
// reload, so that a half-written file is not reported as a failed reload.
const watchDebounce = 150 * time.Millisecond

// watch is --watch: it reloads the command line's paths into the plugin
// manager's store whenever a file under them changes, until ctx is done, as
// `opa run --watch` does (OPA's runtime does it with internal packages, so
// this follows its steps: load the paths again, remove a deleted module,
// write the data documents, activate the bundles and modules with a new
// compiler). The compiler goes on the transaction's context, so the
// manager's commit trigger activates a new policy revision for a data-only
// change too. A reload that does not load or compile aborts the
// transaction: the last good revision stays, and the failure is reported
// to the engine, which counts and logs it.
func (r *Runtime) watch(ctx context.Context, watcher *fsnotify.Watcher) {
	defer watcher.Close()
	removed := map[string]bool{}
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case err, ok := <-watcher.Errors:
			if !ok {
				return
			}
			r.logger.Warn("watch: file events", "error", err.Error())
		case ev, ok := <-watcher.Events:
			if !ok {
				return
			}
			if ev.Op&(fsnotify.Create|fsnotify.Write|fsnotify.Remove|fsnotify.Rename) == 0 {
				continue
			}
			if ev.Op&(fsnotify.Remove|fsnotify.Rename) != 0 {
				removed[loader.CleanPath(ev.Name)] = true
			}
			timer = time.After(watchDebounce)
		case <-timer:
			timer = nil
			start := time.Now()
			err := r.reloadPaths(ctx, removed)
			clear(removed)
			// A directory created since is watched from now on.
			addWatches(watcher, r.paths)
			if err != nil {
				r.policy.ActivationFailed(fmt.Errorf("watch: %w", err))
				continue
			}
			r.logger.Info("watch: reloaded the command line's paths", "duration", time.Since(start).String())
		}
	}
}

// reloadPaths loads the command line's paths again and activates them
// through the plugin manager, in one write transaction.
func (r *Runtime) reloadPaths(ctx context.Context, removed map[string]bool) error {
	files, bundles, err := loadPaths(r.paths, r.bundleMode, r.ignore, r.version)
	if err != nil {
		return err
	}
	store := r.manager.Store
	params := storage.TransactionParams{Write: true, Context: storage.NewContext()}
	return storage.Txn(ctx, store, params, func(txn storage.Transaction) error {
		if !r.bundleMode {
			ids, err := store.ListPolicies(ctx, txn)
			if err != nil {
				return err
			}
			for _, id := range ids {
				if removed[id] {
					if err := store.DeletePolicy(ctx, txn, id); err != nil {
						return err
					}
				}
			}
		}
		if len(files.Documents) > 0 {
			if err := store.Write(ctx, txn, storage.AddOp, storage.RootPath, files.Documents); err != nil {
				return fmt.Errorf("data: %w", err)
			}
		}
		modules := make(map[string]*ast.Module, len(files.Modules))
		for id, f := range files.Modules {
			modules[id] = f.Parsed
		}
		compiler := ast.NewCompiler().
			WithDefaultRegoVersion(r.version).
			SetErrorLimit(-1).
			WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn))
		if err := bundle.Activate(&bundle.ActivateOpts{
			Ctx:           ctx,
			Store:         store,
			Txn:           txn,
			Compiler:      compiler,
			Metrics:       metrics.New(),
			Bundles:       bundles,
			ExtraModules:  modules,
			ParserOptions: r.manager.ParserOptions(),
		}); err != nil {
			return err
		}
		for id, f := range files.Modules {
			if err := store.UpsertPolicy(ctx, txn, id, f.Raw); err != nil {
				return fmt.Errorf("policy %s: %w", id, err)
			}
		}
		plugins.SetCompilerOnContext(params.Context, compiler)
		return nil
	})
}

// newWatcher watches the directories of the command line's paths: every
// directory under a directory path, and a file path's parent directory
// (where editors and Kubernetes replace files).
func newWatcher(paths []string) (*fsnotify.Watcher, error) {
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	if err := addWatches(watcher, paths); err != nil {
		watcher.Close()
		return nil, err
	}
	return watcher, nil
}

func addWatches(watcher *fsnotify.Watcher, paths []string) error {
	for _, p := range paths {
		_, p = loader.SplitPrefix(p)
		found, err := loader.Paths(p, true)
		if err != nil {
			return fmt.Errorf("watch %s: %w", p, err)
		}
		for _, f := range found {
			fi, err := os.Lstat(f)
			if err != nil {
				continue // removed since: the next reload reports it
			}
			dir := f
			if !fi.IsDir() {
				dir = filepath.Dir(f)
			}
			if err := watcher.Add(dir); err != nil {
				return fmt.Errorf("watch %s: %w", dir, err)
			}
		}
	}
	return nil
}
