package microsandbox

// Full-VM snapshots (docs/full-snapshots.md): the kind of a snapshot,
// restoring an artifact or an index handle into a new sandbox (a fork,
// with RestoreOption overrides), keeping an artifact under a name, and
// deleting a snapshot by name. Capture and resume are on Sandbox and
// SandboxHandle (sandbox.go).

/*
#include <stdlib.h>
#include "microsandbox.h"
*/
import "C"

import (
	"context"
	"runtime"
	"unsafe"
)

// SnapshotKind says what a snapshot captured: the disk of a stopped
// sandbox, or a running VM whole.
type SnapshotKind string

// The kinds of snapshot.
const (
	// SnapshotKindDisk: the upper disk of a stopped sandbox; restoring boots cold.
	SnapshotKindDisk SnapshotKind = "disk"
	// SnapshotKindFull: RAM, CPU and device state and disk; restoring forks.
	SnapshotKindFull SnapshotKind = "full"
)

// snapshotKindOf is the kind a handle view names (no allocation).
func snapshotKindOf(s C.MsbStr) SnapshotKind {
	if s.len == 0 {
		return ""
	}
	switch kind := unsafe.Slice((*byte)(unsafe.Pointer(s.ptr)), int(s.len)); string(kind) {
	case string(SnapshotKindDisk):
		return SnapshotKindDisk
	case string(SnapshotKindFull):
		return SnapshotKindFull
	default:
		return SnapshotKind(kind)
	}
}

// Kind is SnapshotKindDisk or SnapshotKindFull.
func (s *SnapshotArtifact) Kind() SnapshotKind { return s.kind }

// Kind is SnapshotKindDisk or SnapshotKindFull.
func (h *SnapshotHandle) Kind() SnapshotKind { return h.kind }

// RestoreOption overrides a setting of the sandbox Restore makes.
type RestoreOption func(*restoreOptions)

type restoreOptions struct {
	memoryMiB, cpus uint32
	env             map[string]string
}

// WithRestoreMemory sets the new sandbox's memory in MiB. A fork of a full
// snapshot may have less than its snapshot (the balloon hands the rest
// back to the host), never more (ErrInvalidConfig).
func WithRestoreMemory(mib uint32) RestoreOption {
	return func(o *restoreOptions) { o.memoryMiB = mib }
}

// WithRestoreCPUs sets the new sandbox's online vCPUs. A fork of a full
// snapshot may have fewer than its snapshot, never more (ErrInvalidConfig).
func WithRestoreCPUs(n uint32) RestoreOption { return func(o *restoreOptions) { o.cpus = n } }

// WithRestoreEnv adds an environment variable for every command of the new
// sandbox.
func WithRestoreEnv(key, value string) RestoreOption {
	return func(o *restoreOptions) {
		if o.env == nil {
			o.env = map[string]string{}
		}
		o.env[key] = value
	}
}

// Restore makes the new sandbox name from this snapshot: a full snapshot
// forks (no boot; it continues exactly where it was captured, with its own
// disk, hostname, clock and entropy), a disk snapshot boots cold. The
// artifact is verified first (ErrSnapshotIntegrity); a machine that cannot
// load it fails with ErrSnapshotIncompatible. Cancelling ctx kills the
// half-made sandbox and removes it.
func (s *SnapshotArtifact) Restore(ctx context.Context, name string, opts ...RestoreOption) (*Sandbox, error) {
	var o restoreOptions
	for _, opt := range opts {
		opt(&o)
	}
	n := C.CString(name)
	defer C.free(unsafe.Pointer(n))
	keys, values, count, free := cPairs(o.env)
	defer free()
	var out *C.MsbSandbox
	err := call(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel) *C.MsbError {
		return C.msb_snapshot_restore(cfg, tok, s.ptr, n, C.uint32_t(o.memoryMiB), C.uint32_t(o.cpus),
			keys, values, count, &out)
	})
	runtime.KeepAlive(s)
	if err != nil {
		return nil, err
	}
	return newSandbox(out)
}

// SaveNamed keeps this snapshot under the bare name in the snapshots
// directory, durably and indexed, so that it outlives its source sandbox
// (Snapshot.Get finds it). ErrSnapshotAlreadyExists if name is taken.
func (s *SnapshotArtifact) SaveNamed(ctx context.Context, name string) error {
	err := withCString(name, func(n *C.char) error {
		return callQuick(ctx, func(cfg *C.MsbConfig) *C.MsbError { return C.msb_snapshot_save_named(cfg, s.ptr, n) })
	})
	runtime.KeepAlive(s)
	return err
}

// Restore opens this snapshot and restores it (SnapshotArtifact.Restore).
func (h *SnapshotHandle) Restore(ctx context.Context, name string, opts ...RestoreOption) (*Sandbox, error) {
	art, err := h.Open(ctx)
	if err != nil {
		return nil, err
	}
	return art.Restore(ctx, name, opts...)
}

// Delete deletes the named snapshot: Remove without force.
func (snapshotFactory) Delete(ctx context.Context, name string) error {
	return withCString(name, func(n *C.char) error {
		return callQuick(ctx, func(cfg *C.MsbConfig) *C.MsbError { return C.msb_snapshot_delete(cfg, n) })
	})
}
