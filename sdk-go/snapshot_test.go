package microsandbox_test

// Snapshots without a VM: cancellation of a long verify (Case A), progress,
// sizes above 2^53, a listing of 10,000 handles, handle accessors.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	m "github.com/superradcompany/microsandbox/sdk/go"
)

// progressLog records a call's progress events.
type progressLog struct {
	mu     sync.Mutex
	events []m.ProgressEvent
	last   time.Time
	after  uint64
	mid    chan struct{}
	once   sync.Once
}

func newProgressLog(after uint64) *progressLog {
	return &progressLog{after: after, mid: make(chan struct{})}
}

func (p *progressLog) record(ev m.ProgressEvent) {
	p.mu.Lock()
	p.events = append(p.events, ev)
	p.last = time.Now()
	p.mu.Unlock()
	if ev.DoneBytes >= p.after {
		p.once.Do(func() { close(p.mid) })
	}
}

// checkOrdered fails unless the events run in order and end at the total.
func (p *progressLog) checkOrdered(t *testing.T, phase string) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.events) < 2 {
		t.Fatalf("%s: only %d progress events", phase, len(p.events))
	}
	for i, ev := range p.events {
		if ev.Phase != phase {
			t.Fatalf("event %d: phase %q, want %q", i, ev.Phase, phase)
		}
		if i > 0 && ev.DoneBytes < p.events[i-1].DoneBytes {
			t.Fatalf("event %d goes backwards: %+v after %+v", i, ev, p.events[i-1])
		}
	}
	last := p.events[len(p.events)-1]
	if last.DoneBytes != last.TotalBytes || last.TotalBytes == 0 {
		t.Fatalf("%s: the last event %+v is not at the total", phase, last)
	}
}

func TestCancellingAVerifyOfCaseAReturnsWithin100ms(t *testing.T) {
	h := newHome(t)
	dir := filepath.Join(h.snapshotsDir(), "case-a")
	makeCaseA(t, dir)
	snap, err := m.Snapshot.Open(h.ctx, "case-a")
	if err != nil {
		t.Fatal(err)
	}
	if snap.SizeBytes() != 4<<30 {
		t.Fatalf("size %d", snap.SizeBytes())
	}
	before := tree(t, h.dir)

	for _, how := range []string{"cancel", "deadline"} {
		progress := newProgressLog(1 << 30)
		var ctx context.Context
		var cancel context.CancelFunc
		var fired time.Time
		base := m.WithProgress(h.ctx, progress.record)
		if how == "cancel" {
			ctx, cancel = context.WithCancel(base)
			go func() {
				<-progress.mid
				time.Sleep(20 * time.Millisecond)
				fired = time.Now()
				cancel()
			}()
		} else {
			// A deadline about a quarter of the way through the hashing.
			ctx, cancel = context.WithTimeout(base, 700*time.Millisecond)
			fired = time.Now().Add(700 * time.Millisecond)
		}
		_, err := snap.Verify(ctx)
		returned := time.Now()
		cancel()
		if err == nil {
			t.Fatalf("%s: the verify finished before the context ended", how)
		}
		latency := returned.Sub(fired)
		t.Logf("%s: returned %v after the context ended", how, latency)
		if latency > 100*time.Millisecond {
			t.Errorf("%s: returned %v after the context ended (bound 100 ms)", how, latency)
		}
		var e *m.Error
		if !errors.As(err, &e) || e.Kind != "Cancelled" || !errors.Is(err, m.ErrCancelled) {
			t.Errorf("%s: want a *m.Error of kind Cancelled, got %#v", how, err)
		}
		want := context.Canceled
		if how == "deadline" {
			want = context.DeadlineExceeded
		}
		if !errors.Is(err, want) {
			t.Errorf("%s: errors.Is(err, %v) is false for %v", how, want, err)
		}
	}
	if after := tree(t, h.dir); !reflect.DeepEqual(before, after) {
		t.Errorf("the cancelled verifies left files behind:\n%v\n%v", before, after)
	}

	// Uncancelled, it completes with progress in order up to the total.
	progress := newProgressLog(0)
	report, err := snap.Verify(m.WithProgress(h.ctx, progress.record))
	if err != nil {
		t.Fatal(err)
	}
	if report.Upper.Kind != "verified" || report.Upper.Algorithm != "msb-sparse-sha256-v1" {
		t.Fatalf("report %+v", report)
	}
	progress.checkOrdered(t, "hash")
}

// The core caps manifest sizes at 2^53-1 (docs/manifest.md), so the
// largest size an artifact can have is checked to travel exactly, and a
// manifest saying 2^53+1 is refused with the exact number in the error.
// The uppers live on tmpfs: ext4 files stop at 16 TiB.
func TestSizesAround2To53AreExact(t *testing.T) {
	h := newHome(t)
	shm, err := os.MkdirTemp("/dev/shm", "msb-go-sizes-")
	if err != nil {
		t.Skipf("no tmpfs for a sparse file of 2^53 bytes: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	const size = uint64(1)<<53 - 1
	dir := filepath.Join(shm, "huge")
	writeSparseArtifact(t, dir, size, "2026-11-20T10:00:00Z")
	snap, err := m.Snapshot.Open(h.ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if snap.SizeBytes() != size {
		t.Fatalf("artifact size %d, want %d", snap.SizeBytes(), size)
	}
	n, err := m.Snapshot.Reindex(h.ctx, shm)
	if err != nil || n != 1 {
		t.Fatalf("reindex: %d %v", n, err)
	}
	handle, err := m.Snapshot.Get(h.ctx, snap.Digest())
	if err != nil {
		t.Fatal(err)
	}
	if got := handle.SizeBytes(); got == nil || *got != size {
		t.Fatalf("handle size %v, want %d", got, size)
	}
	list, err := m.Snapshot.ListDir(h.ctx, shm)
	if err != nil || len(list) != 1 || list[0].SizeBytes() != size {
		t.Fatalf("list_dir: %v %v", list, err)
	}

	const tooBig = uint64(1)<<53 + 1
	bigDir := filepath.Join(shm, "too-big")
	writeSparseArtifact(t, bigDir, tooBig, "2026-11-20T10:00:00Z")
	_, err = m.Snapshot.Open(h.ctx, bigDir)
	if !errors.Is(err, m.ErrManifestInvalid) {
		t.Fatalf("a manifest of 2^53+1 bytes: %v", err)
	}
	if !strings.Contains(err.Error(), "9007199254740993") {
		t.Fatalf("the error does not carry the exact size: %v", err)
	}
}

func TestAListOf10000HandlesComesBackWhole(t *testing.T) {
	h := newHome(t)
	const count = 10000
	for i := 0; i < count; i++ {
		created := fmt.Sprintf("2026-%02d-%02dT%02d:%02d:%02dZ", 1+i/2000, 1+(i/60)%28, (i/7)%24, i%60, (i*7)%60)
		writeSparseArtifact(t, filepath.Join(h.snapshotsDir(), fmt.Sprintf("snap-%05d", i)), 4096, created)
	}
	n, err := m.Snapshot.Reindex(h.ctx, h.snapshotsDir())
	if err != nil || n != count {
		t.Fatalf("reindex: %d %v", n, err)
	}
	list, err := m.Snapshot.List(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != count {
		t.Fatalf("%d handles, want %d", len(list), count)
	}
	names := map[string]bool{}
	for i, handle := range list {
		if i > 0 && handle.CreatedAt().After(list[i-1].CreatedAt()) {
			t.Fatalf("not newest first at %d", i)
		}
		name := handle.Name()
		if name == nil {
			t.Fatalf("handle %d has no name", i)
		}
		names[*name] = true
	}
	if len(names) != count {
		t.Fatalf("%d distinct names", len(names))
	}
}

func TestHandleAndArtifactAccessors(t *testing.T) {
	h := newHome(t)
	dir := filepath.Join(h.snapshotsDir(), "base")
	writeSparseArtifact(t, dir, 1<<20, "2026-11-20T10:00:00.042Z")
	if _, err := m.Snapshot.Reindex(h.ctx, ""); err != nil {
		t.Fatal(err)
	}
	handle, err := m.Snapshot.Get(h.ctx, "base")
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 11, 20, 10, 0, 0, 42e6, time.UTC)
	if !handle.CreatedAt().Equal(want) || handle.Format() != "raw" || handle.ImageRef() != "local/busybox:test" {
		t.Fatalf("handle %v %s %s", handle.CreatedAt(), handle.Format(), handle.ImageRef())
	}
	if handle.ParentDigest() != nil || *handle.Name() != "base" {
		t.Fatalf("parent %v name %v", handle.ParentDigest(), handle.Name())
	}
	name := handle.Name()
	*name = "changed"
	if *handle.Name() != "base" {
		t.Fatal("Name() is not a defensive copy")
	}
	snap, err := handle.Open(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Digest() != handle.Digest() || snap.Fstype() != "ext4" || snap.ImageManifestDigest() != imageDigest {
		t.Fatalf("artifact %s %s %s", snap.Digest(), snap.Fstype(), snap.ImageManifestDigest())
	}
	if snap.CreatedAt() != "2026-11-20T10:00:00.042Z" || *snap.SourceSandbox() != "api" || snap.Parent() != nil {
		t.Fatalf("artifact %s %v %v", snap.CreatedAt(), snap.SourceSandbox(), snap.Parent())
	}
	labels := snap.Labels()
	labels["origin"] = "changed"
	if snap.Labels()["origin"] != "test" {
		t.Fatal("Labels() is not a defensive copy")
	}
	report, err := snap.Verify(h.ctx)
	if err != nil || report.Upper.Kind != "not_recorded" {
		t.Fatalf("verify %+v %v", report, err)
	}
	if err := handle.Remove(h.ctx, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the artifact is still there: %v", err)
	}
	if _, err := m.Snapshot.Get(h.ctx, "base"); !errors.Is(err, m.ErrSnapshotNotFound) {
		t.Fatalf("get after remove: %v", err)
	}
}
