package microsandbox_test

// Full-VM snapshots on real VMs (docs/full-snapshots.md): one cold-booted
// sandbox counts in memory, never on disk; it is captured whole, resumed,
// and forked a few times (forks continue the count, each with its own
// disk, entropy, hostname and clock); save_named / get / restore from the
// index / delete; restore overrides; cancelling a restore or a capture;
// the errors of bad input. Every sandbox is removed when the test ends,
// passed or failed.

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	m "github.com/superradcompany/microsandbox/sdk/go"
)

// The counter: a process that counts in its memory only, and reports the
// count through a fifo when sent SIGUSR1.
const (
	startCounter = `mkfifo /tmp/count.fifo; setsid sh -c 'n=0; trap "echo \$n > /tmp/count.fifo" USR1; while :; do n=$((n+1)); sleep 0.1; done' </dev/null >/dev/null 2>&1 & echo $! > /tmp/count.pid`
	readCounter  = `kill -USR1 $(cat /tmp/count.pid); cat /tmp/count.fifo`
)

// sh runs script in sb and returns its stdout, trimmed; any failure is fatal.
func sh(t *testing.T, ctx context.Context, sb *m.Sandbox, script string) string {
	t.Helper()
	out, err := sb.Exec(ctx, "sh", []string{"-c", script})
	if err != nil || out.ExitCode != 0 {
		t.Fatalf("%s: %s: %+v %v", sb.Name(), script, out, err)
	}
	return strings.TrimSpace(string(out.Stdout))
}

func count(t *testing.T, ctx context.Context, sb *m.Sandbox) int {
	t.Helper()
	n, err := strconv.Atoi(sh(t, ctx, sb, readCounter))
	if err != nil {
		t.Fatalf("%s: count: %v", sb.Name(), err)
	}
	return n
}

// noSandbox checks that no sandbox called name is left.
func noSandbox(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if _, err := m.GetSandbox(ctx, name); !errors.Is(err, m.ErrSandboxNotFound) {
		t.Errorf("sandbox %s should not exist: %v", name, err)
	}
}

func TestFullVMSnapshots(t *testing.T) {
	h := vmHome(t)
	ctx := h.ctx

	// A cold boot (WithInstant(false)), the one VM here that boots.
	sb, err := m.CreateSandbox(ctx, "counter", m.WithImage(busyboxRef), m.WithInstant(false))
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	sh(t, ctx, sb, startCounter)
	time.Sleep(500 * time.Millisecond)
	c0 := count(t, ctx, sb)
	if c0 <= 0 {
		t.Fatalf("c0 = %d", c0)
	}

	art, err := sb.SnapshotFull(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if art.Kind() != m.SnapshotKindFull || *art.SourceSandbox() != "counter" {
		t.Fatalf("artifact kind %q source %v", art.Kind(), art.SourceSandbox())
	}
	digest := art.Digest()
	if state, err := sb.Handle().Status(ctx); err != nil || state != m.SandboxStatePaused {
		t.Fatalf("after the capture: %q %v", state, err)
	}
	if handle, err := m.GetSandbox(ctx, "counter"); err != nil || handle.State() != m.SandboxStatePaused {
		t.Fatalf("get after the capture: %v %v", handle, err)
	}
	if _, err := sb.Exec(ctx, "true", nil); !errors.Is(err, m.ErrSandboxNotRunning) {
		t.Fatalf("exec in a paused sandbox: %v", err)
	}
	if err := sb.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sb.Resume(ctx); !errors.Is(err, m.ErrSandboxNotPaused) {
		t.Fatalf("resume of a running sandbox: %v", err)
	}
	if later := count(t, ctx, sb); later <= c0 {
		t.Fatalf("the original after resume: %d, captured %d", later, c0)
	}

	t.Run("forks continue from the capture, each its own", func(t *testing.T) {
		hostNow := time.Now().Unix()
		f1, err := art.Restore(ctx, "fork-1")
		if err != nil {
			t.Fatal(err)
		}
		defer f1.Close()
		f2, err := art.Restore(ctx, "fork-2")
		if err != nil {
			t.Fatal(err)
		}
		defer f2.Close()
		first := map[*m.Sandbox]int{}
		for _, f := range []*m.Sandbox{f1, f2} {
			r := count(t, ctx, f)
			if r < c0 || r >= c0+30 {
				t.Errorf("%s: first read %d, captured %d", f.Name(), r, c0)
			}
			first[f] = r
		}
		time.Sleep(400 * time.Millisecond)
		for _, f := range []*m.Sandbox{f1, f2} {
			if r := count(t, ctx, f); r <= first[f] {
				t.Errorf("%s: %d after %d: not counting", f.Name(), r, first[f])
			}
		}
		sh(t, ctx, f1, "echo only-here > /root/fork1.txt")
		if out, err := f2.Exec(ctx, "cat", []string{"/root/fork1.txt"}); err != nil || out.ExitCode == 0 {
			t.Errorf("fork 1's file is visible in fork 2: %+v %v", out, err)
		}
		random := "head -c 16 /dev/urandom | od -An -tx1"
		if a, b := sh(t, ctx, f1, random), sh(t, ctx, f2, random); a == b || a == "" {
			t.Errorf("both forks read the same random bytes: %q", a)
		}
		for _, f := range []*m.Sandbox{f1, f2} {
			if got := sh(t, ctx, f, "hostname"); got != f.Name() {
				t.Errorf("%s: hostname %q", f.Name(), got)
			}
			guest, err := strconv.ParseInt(sh(t, ctx, f, "date +%s"), 10, 64)
			if err != nil || guest < hostNow-5 || guest > time.Now().Unix()+5 {
				t.Errorf("%s: guest clock %d, host %d: %v", f.Name(), guest, hostNow, err)
			}
		}
		report, err := art.Verify(ctx)
		if err != nil || report.Digest != digest {
			t.Fatalf("verify after the forks: %+v %v", report, err)
		}
		reopened, err := m.Snapshot.Open(ctx, art.Path())
		if err != nil || reopened.Digest() != digest || reopened.Kind() != m.SnapshotKindFull {
			t.Fatalf("reopened: %v %v", reopened, err)
		}

		// A fork that stopped cannot be captured whole.
		if err := f2.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := f2.SnapshotFull(ctx); !errors.Is(err, m.ErrSandboxNotRunning) {
			t.Errorf("full snapshot of a stopped sandbox: %v", err)
		}
		for _, f := range []*m.Sandbox{f1, f2} {
			if err := m.RemoveSandbox(ctx, f.Name()); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("save_named, get, restore from the index, list, delete", func(t *testing.T) {
		if err := art.SaveNamed(ctx, "counter-full"); err != nil {
			t.Fatal(err)
		}
		if err := art.SaveNamed(ctx, "counter-full"); !errors.Is(err, m.ErrSnapshotAlreadyExists) {
			t.Errorf("a second save under the same name: %v", err)
		}
		handle, err := m.Snapshot.Get(ctx, "counter-full")
		if err != nil || handle.Kind() != m.SnapshotKindFull || handle.Digest() != digest {
			t.Fatalf("get: %v %v", handle, err)
		}
		f, err := handle.Restore(ctx, "from-index")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if r := count(t, ctx, f); r < c0 || r >= c0+30 {
			t.Errorf("restored from the index: first read %d, captured %d", r, c0)
		}
		if err := m.RemoveSandbox(ctx, "from-index"); err != nil {
			t.Fatal(err)
		}
		list, err := m.Snapshot.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		listed := false
		for _, l := range list {
			if l.Name() != nil && *l.Name() == "counter-full" {
				listed = l.Kind() == m.SnapshotKindFull
			}
		}
		if !listed {
			t.Errorf("counter-full is not listed as full: %v", list)
		}
		if err := m.Snapshot.Delete(ctx, "counter-full"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Snapshot.Get(ctx, "counter-full"); !errors.Is(err, m.ErrSnapshotNotFound) {
			t.Errorf("get after delete: %v", err)
		}
		if err := m.Snapshot.Delete(ctx, "counter-full"); !errors.Is(err, m.ErrSnapshotNotFound) {
			t.Errorf("a second delete: %v", err)
		}
	})

	t.Run("restore overrides", func(t *testing.T) {
		if _, err := art.Restore(ctx, "too-big", m.WithRestoreMemory(sb.Handle().MemoryMiB()+256)); !errors.Is(err, m.ErrInvalidConfig) {
			t.Errorf("more memory than the snapshot's: %v", err)
		}
		noSandbox(t, ctx, "too-big")
		if _, err := art.Restore(ctx, "too-many", m.WithRestoreCPUs(sb.Handle().CPUs()+1)); !errors.Is(err, m.ErrInvalidConfig) {
			t.Errorf("more CPUs than the snapshot's: %v", err)
		}
		noSandbox(t, ctx, "too-many")
		f, err := art.Restore(ctx, "slim", m.WithRestoreMemory(128), m.WithRestoreCPUs(1), m.WithRestoreEnv("FORK_NOTE", "from go"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if env := sh(t, ctx, f, "env"); !strings.Contains("\n"+env+"\n", "\nFORK_NOTE=from go\n") {
			t.Errorf("env of the fork: %q", env)
		}
		// The core waits for the balloon; a loaded host may still be
		// finishing, so give it a while before calling it a failure.
		deadline := time.Now().Add(20 * time.Second)
		for {
			memTotal := strings.Fields(sh(t, ctx, f, "grep MemTotal /proc/meminfo"))
			kb, err := strconv.Atoi(memTotal[1])
			if err == nil && kb < 140000 {
				break
			}
			if err != nil || time.Now().After(deadline) {
				t.Errorf("MemTotal of a 128 MiB fork: %v %v", memTotal, err)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err := m.RemoveSandbox(ctx, "slim"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("cancelling a restore leaves nothing", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		defer cancel()
		if _, err := art.Restore(cctx, "cancelled"); !errors.Is(err, m.ErrCancelled) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("cancelled restore: %v", err)
		}
		noSandbox(t, ctx, "cancelled")
		if _, err := os.Stat(filepath.Join(h.dir, "sandboxes", "cancelled")); !os.IsNotExist(err) {
			t.Errorf("the cancelled sandbox's directory: %v", err)
		}
	})

	t.Run("cancelling a capture resumes the sandbox and keeps nothing", func(t *testing.T) {
		before, err := os.ReadDir(filepath.Dir(art.Path()))
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		defer cancel()
		if _, err := sb.SnapshotFull(cctx); !errors.Is(err, m.ErrCancelled) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("cancelled capture: %v", err)
		}
		if state, err := sb.Handle().Status(ctx); err != nil || state != m.SandboxStateRunning {
			t.Errorf("after a cancelled capture: %q %v", state, err)
		}
		count(t, ctx, sb)
		after, err := os.ReadDir(filepath.Dir(art.Path()))
		if err != nil || len(after) != len(before) {
			t.Errorf("snapshots of the sandbox: %d before, %d after (%v)", len(before), len(after), err)
		}
	})

	t.Run("a tampered RAM file never restores", func(t *testing.T) {
		tampered := filepath.Join(h.dir, "tampered")
		if out, err := exec.Command("cp", "-a", "--sparse=always", art.Path(), tampered).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
		flipDataByte(t, filepath.Join(tampered, "vm.ram"))
		copied, err := m.Snapshot.Open(ctx, tampered)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := copied.Restore(ctx, "from-tampered"); !errors.Is(err, m.ErrSnapshotIntegrity) {
			t.Errorf("restore of a tampered RAM: %v", err)
		}
		noSandbox(t, ctx, "from-tampered")
	})
}

// flipDataByte flips one byte of path where it holds data (not a hole).
func flipDataByte(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const seekData = 3 // SEEK_DATA
	at, err := f.Seek(1<<20, seekData)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
	check := make([]byte, 1)
	if _, err := f.ReadAt(check, at); err != nil || bytes.Equal(check, []byte{b[0] ^ 0xff}) {
		t.Fatalf("the flip did not land: %v", err)
	}
}
