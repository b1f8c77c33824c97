package microsandbox_test

// Registries, against a real docker-registry on 127.0.0.1 (started by
// scripts/test-registry.sh for this file) and real VMs: a snapshot pushed
// from one home is pulled into another and boots with its file; an image
// pushed by us (and one seeded by skopeo) is pulled; save, remove; and the
// errors a registry call can end in.

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	m "github.com/superradcompany/microsandbox/sdk/go"
)

// startRegistry runs a registry for the test and stops it when it ends;
// its host:port.
func startRegistry(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/docker-registry"); err != nil {
		t.Skip("docker-registry is not installed: run scripts/setup-registry.sh")
	}
	script := filepath.Join(repoRoot(t), "scripts", "test-registry.sh")
	dir := t.TempDir()
	out, err := exec.Command(script, "start", dir).Output()
	if err != nil {
		t.Fatalf("starting the registry: %v", err)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(script, "stop", dir).CombinedOutput(); err != nil {
			t.Errorf("stopping the registry: %v %s", err, out)
		}
	})
	// Credentials come from here only, never the user's ~/.docker.
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	return strings.TrimSpace(string(out))
}

// phaseLog records progress events of any phase.
type phaseLog struct {
	mu     sync.Mutex
	events []m.ProgressEvent
}

func (p *phaseLog) record(ev m.ProgressEvent) {
	p.mu.Lock()
	p.events = append(p.events, ev)
	p.mu.Unlock()
}

// phases are the phases seen, in order, each once; every phase's events
// must not go backwards and must end at their total.
func (p *phaseLog) phases(t *testing.T) []string {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	var seen []string
	for i, ev := range p.events {
		if len(seen) == 0 || seen[len(seen)-1] != ev.Phase {
			if i > 0 {
				if prev := p.events[i-1]; prev.DoneBytes != prev.TotalBytes {
					t.Fatalf("phase %q ended at %d of %d", prev.Phase, prev.DoneBytes, prev.TotalBytes)
				}
			}
			seen = append(seen, ev.Phase)
		} else if ev.DoneBytes < p.events[i-1].DoneBytes {
			t.Fatalf("event %d goes backwards: %+v", i, ev)
		}
	}
	if n := len(p.events); n > 0 && p.events[n-1].DoneBytes != p.events[n-1].TotalBytes {
		t.Fatalf("the last event %+v is not at the total", p.events[n-1])
	}
	return seen
}

// skopeoPush copies an OCI archive into the registry with skopeo; the
// manifest digest the registry holds (skopeo rewrites the manifest).
func skopeoPush(t *testing.T, archive, target string) string {
	t.Helper()
	out, err := exec.Command("skopeo", "copy", "--quiet", "--dest-tls-verify=false",
		"oci-archive:"+archive, "docker://"+target).CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo copy: %v %s", err, out)
	}
	out, err = exec.Command("skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}",
		"docker://"+target).Output()
	if err != nil {
		t.Fatalf("skopeo inspect: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// closedPort is a loopback address nobody listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestNormaliseReference(t *testing.T) {
	for in, want := range map[string]string{
		"python":                   "docker.io/library/python:latest",
		"ghcr.io/o/app:1":          "ghcr.io/o/app:1",
		"127.0.0.1:5000/snaps/a:2": "127.0.0.1:5000/snaps/a:2",
	} {
		if got, err := m.NormaliseReference(in); err != nil || got != want {
			t.Errorf("NormaliseReference(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := m.NormaliseReference("Not A Reference!"); !errors.Is(err, m.ErrInvalidConfig) {
		t.Fatalf("malformed: %v", err)
	}
}

func TestSnapshotAndImageThroughARegistry(t *testing.T) {
	host := startRegistry(t)
	h := vmHome(t)
	ctx := h.ctx

	// The image, pushed (its digest kept), is pulled into a second home
	// with its origin.
	loaded, err := m.Image.Get(ctx, busyboxRef)
	if err != nil {
		t.Fatal(err)
	}
	imagePushLog := &phaseLog{}
	seeded, err := m.Image.Push(m.WithProgress(ctx, imagePushLog.record), busyboxRef, host+"/busybox:1")
	if err != nil || seeded != loaded.ManifestDigest {
		t.Fatalf("image push: %q %v, local %s", seeded, err, loaded.ManifestDigest)
	}
	if got := imagePushLog.phases(t); strings.Join(got, ",") != "push" {
		t.Fatalf("image push phases %v", got)
	}
	hImg := newHome(t)
	pullLog := &phaseLog{}
	pulled, err := m.Image.Pull(m.WithProgress(hImg.ctx, pullLog.record), host+"/busybox:1")
	if err != nil {
		t.Fatal(err)
	}
	if pulled.ManifestDigest != seeded || pulled.ConfigDigest != loaded.ConfigDigest ||
		pulled.Origin != host+"/busybox:1" || loaded.Origin != "" {
		t.Fatalf("pulled %+v, loaded %+v", pulled, loaded)
	}
	if got := pullLog.phases(t); strings.Join(got, ",") != "pull,load" {
		t.Fatalf("image pull phases %v", got)
	}
	// Nothing pins it there: it goes, and a second remove finds nothing.
	if err := m.Image.Remove(hImg.ctx, host+"/busybox:1"); err != nil {
		t.Fatal(err)
	}
	if err := m.Image.Remove(hImg.ctx, host+"/busybox:1"); !errors.Is(err, m.ErrImageNotFound) {
		t.Fatalf("second remove: %v", err)
	}

	// A snapshot with a file is pushed, and pushed again to the same digest.
	sb, err := m.CreateSandbox(ctx, "writer", m.WithImage(busyboxRef))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := sb.Exec(ctx, "sh", []string{"-c", "echo through the registry > /root/note.txt"}); err != nil || out.ExitCode != 0 {
		t.Fatalf("exec: %+v %v", out, err)
	}
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	sb.Close()
	snap, err := m.Snapshot.Create(ctx, "writer", m.SnapshotCreateOptions{Name: "noted", RecordIntegrity: true})
	if err != nil {
		t.Fatal(err)
	}
	ref := host + "/snaps/noted:1"
	pushLog := &phaseLog{}
	digest, err := m.Snapshot.Push(m.WithProgress(ctx, pushLog.record), "noted", ref)
	if err != nil || !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("push: %q %v", digest, err)
	}
	if got := pushLog.phases(t); len(got) == 0 || got[len(got)-1] != "push" {
		t.Fatalf("push phases %v", got)
	}
	if again, err := m.Snapshot.Push(ctx, snap.Path(), ref); err != nil || again != digest {
		t.Fatalf("re-push: %q %v, first %q", again, err, digest)
	}

	// The image a snapshot pins cannot be removed; saved, it loads elsewhere
	// with the same digest.
	if err := m.Image.Remove(ctx, busyboxRef); !errors.Is(err, m.ErrImageInUse) {
		t.Fatalf("remove of a pinned image: %v", err)
	}
	saved := filepath.Join(t.TempDir(), "saved.tar")
	saveLog := &phaseLog{}
	if err := m.Image.Save(m.WithProgress(ctx, saveLog.record), busyboxRef, saved); err != nil {
		t.Fatal(err)
	}
	if got := saveLog.phases(t); strings.Join(got, ",") != "export" {
		t.Fatalf("save phases %v", got)
	}
	hSaved := newHome(t)
	if again, err := m.Image.Load(hSaved.ctx, saved, ""); err != nil || again.ManifestDigest != loaded.ManifestDigest {
		t.Fatalf("load of the saved archive: %+v %v (saved %s)", again, err, loaded.ManifestDigest)
	}

	// Pulled into a second home: it verifies and boots with the file.
	h2 := newHome(t)
	removeSandboxesAtEnd(t, h2)
	handle, err := m.Snapshot.Pull(h2.ctx, ref, m.SnapshotPullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if handle.Digest() != snap.Digest() || *handle.Name() != "noted" {
		t.Fatalf("pulled %s %v, pushed %s", handle.Digest(), handle.Name(), snap.Digest())
	}
	artifact, err := handle.Open(h2.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if report, err := artifact.Verify(h2.ctx); err != nil || report.Upper.Kind != "verified" {
		t.Fatalf("verify: %+v %v", report, err)
	}
	reader, err := m.CreateSandbox(h2.ctx, "reader", m.WithSnapshot("noted"))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	if out, err := reader.Exec(h2.ctx, "cat", []string{"/root/note.txt"}); err != nil || string(out.Stdout) != "through the registry\n" {
		t.Fatalf("read back: %+v %v", out, err)
	}
	// Into a directory of one's choosing.
	elsewhere := filepath.Join(newHome(t).dir, "pulled")
	h3 := newHome(t)
	there, err := m.Snapshot.Pull(h3.ctx, ref, m.SnapshotPullOptions{Dest: elsewhere})
	if err != nil || !strings.HasPrefix(there.Path(), elsewhere) {
		t.Fatalf("pull to %s: %v %v", elsewhere, there, err)
	}
}

func TestRegistryErrors(t *testing.T) {
	host := startRegistry(t)
	h := newHome(t)
	ctx := h.ctx

	if _, err := m.Image.Pull(ctx, host+"/nothing-here:1"); !errors.Is(err, m.ErrImageNotFound) {
		t.Fatalf("unknown reference: %v", err)
	}
	if _, err := m.Snapshot.Pull(ctx, host+"/snaps/nothing:1", m.SnapshotPullOptions{}); !errors.Is(err, m.ErrImageNotFound) {
		t.Fatalf("unknown snapshot reference: %v", err)
	}
	if _, err := m.Image.Pull(ctx, closedPort(t)+"/busybox:1"); !errors.Is(err, m.ErrRegistry) {
		t.Fatalf("closed port: %v", err)
	}
	if _, err := m.Image.Pull(ctx, "Not A Reference!"); !errors.Is(err, m.ErrInvalidConfig) {
		t.Fatalf("malformed reference: %v", err)
	}
	if _, err := m.Snapshot.Push(ctx, "no-such-snapshot", host+"/snaps/x:1"); !errors.Is(err, m.ErrSnapshotNotFound) {
		t.Fatalf("push of a missing snapshot: %v", err)
	}

	// A pull whose context is cancelled at its first progress event stops
	// with Cancelled (and context.Canceled) and leaves nothing in the home.
	archive := filepath.Join(t.TempDir(), "busybox.tar")
	if err := m.Image.BuildBusybox(ctx, "", "busybox:1", archive); err != nil {
		t.Fatal(err)
	}
	skopeoPush(t, archive, host+"/busybox:1")
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, err := m.Image.Pull(m.WithProgress(cctx, func(m.ProgressEvent) { cancel() }), host+"/busybox:1")
	if !errors.Is(err, m.ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled pull: %v", err)
	}
	for _, sub := range []string{"blobs/sha256", "lower", "tmp"} {
		if left, _ := os.ReadDir(filepath.Join(h.dir, "images", sub)); len(left) != 0 {
			t.Fatalf("images/%s still holds %v", sub, left)
		}
	}
	if list, err := m.Image.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("images after a cancelled pull: %v %v", list, err)
	}
}
