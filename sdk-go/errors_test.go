package microsandbox_test

// Errors: the core's whole KINDS list, read at run time, each through the
// conversion real errors take; panics; errors triggered for real.

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	m "github.com/superradcompany/microsandbox/sdk/go"
)

func TestEveryKindOfTheCoreHasItsOwnSentinel(t *testing.T) {
	kinds := m.Kinds()
	if len(kinds) < 16 {
		t.Fatalf("the core lists only %d kinds: %v", len(kinds), kinds)
	}
	for _, kind := range kinds {
		sentinel := m.Sentinel(kind)
		if sentinel == nil {
			t.Errorf("kind %s has no sentinel", kind)
			continue
		}
		err := m.TestHookErrorOfKind(kind)
		var e *m.Error
		if !errors.As(err, &e) || e.Kind != kind || e.Message == "" {
			t.Errorf("kind %s came back as %#v", kind, err)
		}
		for _, other := range kinds {
			if got := errors.Is(err, m.Sentinel(other)); got != (other == kind) {
				t.Errorf("errors.Is(%s error, Err%s) = %v", kind, other, got)
			}
		}
	}
	if err := m.TestHookErrorOfKind("NoSuchKind"); !errors.Is(err, m.ErrInvalidConfig) {
		t.Errorf("an unknown kind should be InvalidConfig, got %v", err)
	}
}

func TestAPanicInTheCoreComesBackAsRuntime(t *testing.T) {
	err := m.TestHookPanic()
	if !errors.Is(err, m.ErrRuntime) {
		t.Fatalf("want a Runtime error, got %v", err)
	}
	// The process is still fine: another call works.
	if len(m.Kinds()) == 0 {
		t.Fatal("no kinds after the panic")
	}
}

func TestRealErrorsMapToTheirSentinels(t *testing.T) {
	h := newHome(t)
	ctx := h.ctx
	if _, err := m.Snapshot.Open(ctx, "missing"); !errors.Is(err, m.ErrSnapshotNotFound) {
		t.Errorf("open of a missing snapshot: %v", err)
	}
	if _, err := m.Snapshot.Get(ctx, "missing"); !errors.Is(err, m.ErrSnapshotNotFound) {
		t.Errorf("get of a missing snapshot: %v", err)
	}
	_, err := m.Snapshot.Create(ctx, "sb", m.SnapshotCreateOptions{Name: "a", Path: filepath.Join(h.dir, "b")})
	if !errors.Is(err, m.ErrInvalidConfig) {
		t.Errorf("create with both name and path: %v", err)
	}
	if _, err := m.GetSandbox(ctx, "nope"); !errors.Is(err, m.ErrSandboxNotFound) {
		t.Errorf("get of a missing sandbox: %v", err)
	}
	if _, err := m.Image.Get(ctx, "nope:latest"); !errors.Is(err, m.ErrImageNotFound) {
		t.Errorf("get of a missing image: %v", err)
	}
	bad := m.WithConfig(ctx, m.Config{Accel: "warp"})
	if _, err := m.Snapshot.List(bad); !errors.Is(err, m.ErrInvalidConfig) {
		t.Errorf("a bad accel: %v", err)
	}
	if _, err := m.Snapshot.Import(ctx, filepath.Join(h.dir, "none.tar"), ""); kindOf(err) == "" {
		t.Errorf("import of a missing archive: %v", err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	_, err = m.Snapshot.List(done)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, m.ErrCancelled) {
		t.Errorf("a call under a cancelled context: %v", err)
	}
}

func TestCallsOutsideATestHomeFail(t *testing.T) {
	if _, err := m.Snapshot.List(context.Background()); err == nil {
		t.Fatal("the process default home is unusable on purpose; List should fail")
	}
}
