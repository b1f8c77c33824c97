package microsandbox_test

// On real VMs (QEMU): the typical flow of the Go reference end to end,
// streaming exec, and the errors only a VM can trigger. Every sandbox a
// test starts is removed when it ends, passed or failed.

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	m "github.com/superradcompany/microsandbox/sdk/go"
)

const busyboxRef = "local/busybox:test"

// loadBusybox builds the busybox image from the host's busybox-static and
// loads it into h, checking the load's progress.
func loadBusybox(t *testing.T, h *testHome) {
	t.Helper()
	archive := filepath.Join(h.dir, "busybox.tar")
	if err := m.Image.BuildBusybox(h.ctx, "", busyboxRef, archive); err != nil {
		t.Fatal(err)
	}
	loadProgress := newProgressLog(0)
	info, err := m.Image.Load(m.WithProgress(h.ctx, loadProgress.record), archive, busyboxRef)
	if err != nil {
		t.Fatal(err)
	}
	loadProgress.checkOrdered(t, "load")
	if info.Reference != busyboxRef || !strings.HasPrefix(info.ManifestDigest, "sha256:") {
		t.Fatalf("image %+v", info)
	}
	got, err := m.Image.Get(h.ctx, info.ManifestDigest)
	if err != nil || got.Reference != busyboxRef {
		t.Fatalf("image get: %+v %v", got, err)
	}
	list, err := m.Image.List(h.ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("image list: %+v %v", list, err)
	}
}

// vmHome is a test home with the busybox image loaded, whose sandboxes
// are removed when the test ends.
func vmHome(t *testing.T) *testHome {
	needVMs(t)
	h := newHome(t)
	removeSandboxesAtEnd(t, h)
	loadBusybox(t, h)
	return h
}

func TestTypicalFlowOnARealVM(t *testing.T) {
	h := vmHome(t)
	ctx := h.ctx

	sb, err := m.CreateSandbox(ctx, "baseline", m.WithImage(busyboxRef), m.WithMemory(256), m.WithEnv("GREETING", "hello"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := sb.Exec(ctx, "sh", []string{"-c", "echo $GREETING from go > /root/note.txt && cat /root/note.txt"})
	if err != nil || out.ExitCode != 0 || string(out.Stdout) != "hello from go\n" {
		t.Fatalf("exec: %+v %v", out, err)
	}
	if _, err := m.Snapshot.Create(ctx, "baseline", m.SnapshotCreateOptions{Name: "too-early"}); !errors.Is(err, m.ErrSnapshotSandboxRunning) {
		t.Fatalf("snapshot of a running sandbox: %v", err)
	}
	if _, err := m.CreateSandbox(ctx, "baseline", m.WithImage(busyboxRef)); !errors.Is(err, m.ErrSandboxAlreadyExists) {
		t.Fatalf("a second sandbox of the same name: %v", err)
	}

	// 1. stop the sandbox; snapshots are disk-only
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sb.Close(); err != nil {
		t.Fatal(err)
	}
	handle, err := m.GetSandbox(ctx, "baseline")
	if err != nil || handle.State() != "stopped" {
		t.Fatalf("get: %v %v", handle, err)
	}
	if _, err := handle.Exec(ctx, "true", nil); !errors.Is(err, m.ErrSandboxNotRunning) {
		t.Fatalf("exec in a stopped sandbox: %v", err)
	}

	// 2. snapshot it with integrity, verify
	snap, err := m.Snapshot.Create(ctx, "baseline", m.SnapshotCreateOptions{
		Name:            "after-note",
		Labels:          map[string]string{"stage": "post-note"},
		RecordIntegrity: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if snap.Labels()["stage"] != "post-note" || *snap.SourceSandbox() != "baseline" || snap.ImageRef() != busyboxRef {
		t.Fatalf("artifact %v %v %s", snap.Labels(), snap.SourceSandbox(), snap.ImageRef())
	}
	verifyProgress := newProgressLog(0)
	report, err := snap.Verify(m.WithProgress(ctx, verifyProgress.record))
	if err != nil || report.Upper.Kind != "verified" || report.Digest != snap.Digest() {
		t.Fatalf("verify: %+v %v", report, err)
	}
	verifyProgress.checkOrdered(t, "hash")
	to, err := handle.SnapshotTo(ctx, filepath.Join(h.dir, "elsewhere", "copy"))
	if err != nil || to.Path() != filepath.Join(h.dir, "elsewhere", "copy") {
		t.Fatalf("snapshot to: %v %v", to, err)
	}
	if _, err := handle.Snapshot(ctx, "after-note"); !errors.Is(err, m.ErrSnapshotAlreadyExists) {
		t.Fatalf("a second snapshot of the same name: %v", err)
	}
	handles, err := m.Snapshot.List(ctx)
	if err != nil || len(handles) != 2 {
		t.Fatalf("list: %d %v", len(handles), err)
	}

	// 3. export with the image, import into a second home
	archive := filepath.Join(h.dir, "out", "snap.tar.zst")
	exportProgress := newProgressLog(0)
	if err := m.Snapshot.Export(m.WithProgress(ctx, exportProgress.record), "after-note", archive, m.SnapshotExportOptions{WithImage: true}); err != nil {
		t.Fatal(err)
	}
	exportProgress.checkOrdered(t, "export")
	h2 := newHome(t)
	removeSandboxesAtEnd(t, h2)
	importProgress := newProgressLog(0)
	imported, err := m.Snapshot.Import(m.WithProgress(h2.ctx, importProgress.record), archive, "")
	if err != nil {
		t.Fatal(err)
	}
	importProgress.checkOrdered(t, "import")
	if imported.Digest() != snap.Digest() || *imported.Name() != "after-note" {
		t.Fatalf("imported %s %v", imported.Digest(), imported.Name())
	}
	if _, err := m.Snapshot.Get(ctx, "missing-in-first"); !errors.Is(err, m.ErrSnapshotNotFound) {
		t.Fatal("homes leak into each other")
	}

	// 4. boot a fresh sandbox from the snapshot in the second home, read the file
	sb2, err := m.CreateSandbox(h2.ctx, "worker", m.WithSnapshot("after-note"))
	if err != nil {
		t.Fatal(err)
	}
	defer sb2.Close()
	out, err = sb2.Exec(h2.ctx, "cat", []string{"/root/note.txt"})
	if err != nil || string(out.Stdout) != "hello from go\n" {
		t.Fatalf("read back: %+v %v", out, err)
	}
	status, err := sb2.Handle().Status(h2.ctx)
	if err != nil || status != "running" {
		t.Fatalf("status %q %v", status, err)
	}
	if err := m.RemoveSandbox(h2.ctx, "worker"); err != nil {
		t.Fatal(err)
	}
	if list, err := m.ListSandboxes(h2.ctx); err != nil || len(list) != 0 {
		t.Fatalf("after remove: %v %v", list, err)
	}
	if err := m.Snapshot.Remove(ctx, "after-note", false); err != nil {
		t.Fatal(err)
	}
}

func TestExecStreamAndBufferedOptions(t *testing.T) {
	h := vmHome(t)
	ctx := h.ctx
	sb, err := m.CreateSandbox(ctx, "streams", m.WithImage(busyboxRef))
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()

	// stdin copied then closed; stdout and stderr to writers.
	var stdout, stderr bytes.Buffer
	p, err := sb.ExecStream(ctx, "sh", []string{"-c", "cat; echo done >&2; exit 3"}, m.ExecOptions{
		Stdin: strings.NewReader("data from go"), Stdout: &stdout, Stderr: &stderr,
		Env: map[string]string{"K": "V"}, Cwd: "/tmp",
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Wait()
	if err != nil || st.Code != 3 || stdout.String() != "data from go" || stderr.String() != "done\n" {
		t.Fatalf("stream: %+v %v %q %q", st, err, stdout.String(), stderr.String())
	}

	// A signal reaches the process group.
	p, err = sb.ExecStream(ctx, "sh", []string{"-c", "echo ready; sleep 30"}, m.ExecOptions{Stdout: &stdout})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	st, err = p.Wait()
	if err != nil || st.Signal != int(syscall.SIGINT) || st.Code != 128+int(syscall.SIGINT) {
		t.Fatalf("signalled: %+v %v", st, err)
	}

	// A cancelled context kills the command.
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	p, err = sb.ExecStream(cctx, "sleep", []string{"30"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = p.Wait()
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, m.ErrCancelled) || time.Since(start) > 5*time.Second {
		t.Fatalf("cancelled stream: %v after %v", err, time.Since(start))
	}

	// Buffered: env, cwd, output limit, timeout.
	out, err := sb.Exec(ctx, "sh", []string{"-c", "pwd; echo $K; head -c 5000 /dev/zero"}, m.ExecOptions{
		Env: map[string]string{"K": "V"}, Cwd: "/tmp", OutputLimit: 12,
	})
	if err != nil || string(out.Stdout) != "/tmp\nV\n\x00\x00\x00\x00\x00" || !out.StdoutTruncated {
		t.Fatalf("buffered: %+v %v", out, err)
	}
	out, err = sb.Exec(ctx, "sleep", []string{"30"}, m.ExecOptions{Timeout: 300 * time.Millisecond})
	if err != nil || !out.TimedOut {
		t.Fatalf("timeout: %+v %v", out, err)
	}
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// Start again from the handle.
	handle, err := m.GetSandbox(ctx, "streams")
	if err != nil {
		t.Fatal(err)
	}
	again, err := handle.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if out, err := again.Exec(ctx, "true", nil); err != nil || out.ExitCode != 0 {
		t.Fatalf("after restart: %+v %v", out, err)
	}
}
