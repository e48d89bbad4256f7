package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// sandboxEnv carries a sandbox spec to the test binary re-executed in a new
// mount namespace: it sets the mounts up, enters the image root, drops to the
// image's user and execs the command. It stands in for a container runtime.
const sandboxEnv = "GATEHOUSE_IMAGE_SANDBOX"

// sandbox is what the re-executed test binary does before exec.
type sandbox struct {
	// Root is the unpacked image filesystem; it is mounted read-only.
	Root string
	// Binds are mounted under Root (mount points created beforehand, as a
	// runtime creates them).
	Binds []bind
	UID   int
	GID   int
	Env   []string
	Args  []string
}

type bind struct {
	Src, Dst string
	ReadOnly bool
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(sandboxEnv); spec != "" {
		err := enterSandbox(spec)
		// Only reached when something failed before the exec.
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		os.Exit(127)
	}
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(filepath.Dir(built.dir))
	}
	os.Exit(code)
}

// enterSandbox runs in a fresh mount namespace (CLONE_NEWNS) as root; on
// success it does not return.
func enterSandbox(spec string) error {
	var s sandbox
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		return err
	}
	// Nothing mounted here propagates back to the host's namespace.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	// The root becomes a mount of its own, so that it can be made read-only.
	if err := syscall.Mount(s.Root, s.Root, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("bind root: %w", err)
	}
	for _, b := range s.Binds {
		dst := filepath.Join(s.Root, b.Dst)
		if err := syscall.Mount(b.Src, dst, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", b.Src, b.Dst, err)
		}
		if b.ReadOnly {
			if err := syscall.Mount("", dst, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("read-only %s: %w", b.Dst, err)
			}
		}
	}
	if err := syscall.Mount("proc", filepath.Join(s.Root, "proc"), "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	// readOnlyRootFilesystem: true.
	if err := syscall.Mount("", s.Root, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("read-only root: %w", err)
	}
	if err := syscall.Chroot(s.Root); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := syscall.Chdir("/"); err != nil {
		return err
	}
	// allowPrivilegeEscalation: false.
	const prSetNoNewPrivs = 38
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetNoNewPrivs, 1, 0); errno != 0 {
		return fmt.Errorf("no_new_privs: %w", errno)
	}
	// The image's user, with no supplementary groups; leaving uid 0 drops
	// every capability.
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(s.GID); err != nil {
		return fmt.Errorf("setgid: %w", err)
	}
	if err := syscall.Setuid(s.UID); err != nil {
		return fmt.Errorf("setuid: %w", err)
	}
	return syscall.Exec(s.Args[0], s.Args, s.Env)
}
