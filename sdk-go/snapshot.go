package microsandbox

// Snapshots: artifacts on disk (SnapshotArtifact, holding the core's open
// artifact), index handles (SnapshotHandle, plain data), and the package
// functions behind the Snapshot value.

/*
#include <stdlib.h>
#include "microsandbox.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"runtime"
	"time"
	"unsafe"
)

// Snapshot holds the snapshot functions: m.Snapshot.Create(ctx, …).
var Snapshot snapshotFactory

type snapshotFactory struct{}

// SnapshotCreateOptions configures Snapshot.Create. Set exactly one of
// Name or Path.
type SnapshotCreateOptions struct {
	// Name is a bare name; the artifact goes under the default snapshots directory.
	Name string
	// Path is an explicit artifact directory.
	Path string
	// Labels are recorded in the manifest.
	Labels map[string]string
	// Force overwrites an existing artifact at the destination.
	Force bool
	// RecordIntegrity records content hashes so Verify can recompute them.
	RecordIntegrity bool
}

// SnapshotExportOptions configures Snapshot.Export.
type SnapshotExportOptions struct {
	// WithParents includes the parent chain.
	WithParents bool
	// WithImage includes the base image, so the archive boots anywhere.
	WithImage bool
	// PlainTar writes an uncompressed .tar instead of .tar.zst.
	PlainTar bool
}

// SnapshotVerifyReport is the result of Verify.
type SnapshotVerifyReport struct {
	// Digest is the manifest digest.
	Digest string `json:"digest"`
	// Path is the artifact directory verified.
	Path string `json:"path"`
	// Upper is the upper-layer status.
	Upper SnapshotUpperVerifyStatus `json:"upper"`
}

// SnapshotUpperVerifyStatus is the upper-layer part of a verify report.
type SnapshotUpperVerifyStatus struct {
	// Kind is "verified" (content hashed and matched) or "not_recorded".
	Kind string `json:"kind"`
	// Algorithm is the integrity algorithm ("" when not recorded).
	Algorithm string `json:"algorithm"`
	// Digest is the recomputed upper digest ("" when not recorded).
	Digest string `json:"digest"`
}

// SnapshotArtifact is a snapshot artifact on disk. Its accessors are plain
// field reads; only Verify touches the filesystem.
type SnapshotArtifact struct {
	ptr                 *C.MsbSnapshot
	path                string
	digest              string
	sizeBytes           uint64
	imageRef            string
	imageManifestDigest string
	format              string
	fstype              string
	parent              *string
	createdAt           string
	labels              map[string]string
	sourceSandbox       *string
	kind                SnapshotKind
}

// artifactView is the core's JSON view of an artifact (docs/json.md).
type artifactView struct {
	Digest              string            `json:"digest"`
	Path                string            `json:"path"`
	ImageRef            string            `json:"image_ref"`
	ImageManifestDigest string            `json:"image_manifest_digest"`
	Format              string            `json:"format"`
	Fstype              string            `json:"fstype"`
	Parent              *string           `json:"parent"`
	CreatedAt           string            `json:"created_at"`
	Labels              map[string]string `json:"labels"`
	SourceSandbox       *string           `json:"source_sandbox"`
	SizeBytes           uint64            `json:"size_bytes"`
	Kind                SnapshotKind      `json:"kind"`
}

// newArtifact takes ownership of p.
func newArtifact(p *C.MsbSnapshot) (*SnapshotArtifact, error) {
	var text *C.char
	if err := takeError(nil, C.msb_snapshot_json(p, &text)); err != nil {
		C.msb_snapshot_free(p)
		return nil, err
	}
	var v artifactView
	if err := json.Unmarshal([]byte(takeString(text)), &v); err != nil {
		C.msb_snapshot_free(p)
		return nil, &Error{Kind: ErrRuntime.Kind, Message: "cannot decode the artifact view: " + err.Error()}
	}
	a := &SnapshotArtifact{
		ptr: p, path: v.Path, digest: v.Digest, sizeBytes: v.SizeBytes, imageRef: v.ImageRef,
		imageManifestDigest: v.ImageManifestDigest, format: v.Format, fstype: v.Fstype,
		parent: v.Parent, createdAt: v.CreatedAt, labels: v.Labels, sourceSandbox: v.SourceSandbox,
		kind: v.Kind,
	}
	runtime.SetFinalizer(a, func(a *SnapshotArtifact) { C.msb_snapshot_free(a.ptr) })
	return a, nil
}

func copyString(p *string) *string {
	if p == nil {
		return nil
	}
	s := *p
	return &s
}

// Path is the artifact directory.
func (s *SnapshotArtifact) Path() string { return s.path }

// Digest is the canonical manifest digest (sha256:…).
func (s *SnapshotArtifact) Digest() string { return s.digest }

// SizeBytes is the apparent upper-layer size.
func (s *SnapshotArtifact) SizeBytes() uint64 { return s.sizeBytes }

// ImageRef is the image reference the snapshot was taken from.
func (s *SnapshotArtifact) ImageRef() string { return s.imageRef }

// ImageManifestDigest is the pinned OCI manifest digest of the base image.
func (s *SnapshotArtifact) ImageManifestDigest() string { return s.imageManifestDigest }

// Format is "raw" or "qcow2".
func (s *SnapshotArtifact) Format() string { return s.format }

// Fstype is the filesystem inside the upper layer.
func (s *SnapshotArtifact) Fstype() string { return s.fstype }

// Parent is the parent digest, or nil (a copy).
func (s *SnapshotArtifact) Parent() *string { return copyString(s.parent) }

// CreatedAt is the RFC 3339 creation time.
func (s *SnapshotArtifact) CreatedAt() string { return s.createdAt }

// Labels are the user labels (a copy).
func (s *SnapshotArtifact) Labels() map[string]string {
	out := make(map[string]string, len(s.labels))
	for k, v := range s.labels {
		out[k] = v
	}
	return out
}

// SourceSandbox is the sandbox it was taken from, or nil (a copy).
func (s *SnapshotArtifact) SourceSandbox() *string { return copyString(s.sourceSandbox) }

// Verify recomputes the recorded content integrity. A mismatch is an error
// (ErrSnapshotIntegrity); without a record the report's Upper.Kind is
// "not_recorded". Progress goes to the func of WithProgress.
func (s *SnapshotArtifact) Verify(ctx context.Context) (*SnapshotVerifyReport, error) {
	var text *C.char
	err := callWithProgress(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel, fn C.MsbProgressFn, user unsafe.Pointer) *C.MsbError {
		return C.msb_snapshot_verify(cfg, tok, s.ptr, fn, user, &text)
	})
	runtime.KeepAlive(s)
	if err != nil {
		return nil, err
	}
	var report SnapshotVerifyReport
	if err := json.Unmarshal([]byte(takeString(text)), &report); err != nil {
		return nil, &Error{Kind: ErrRuntime.Kind, Message: "cannot decode the verify report: " + err.Error()}
	}
	return &report, nil
}

// SnapshotHandle is a lightweight handle backed by the local index.
type SnapshotHandle struct {
	digest       string
	name         *string
	parentDigest *string
	imageRef     string
	format       string
	sizeBytes    *uint64
	path         string
	createdAt    time.Time
	kind         SnapshotKind
}

// Digest is the manifest digest.
func (h *SnapshotHandle) Digest() string { return h.digest }

// Name is the bare-name alias, or nil (a copy).
func (h *SnapshotHandle) Name() *string { return copyString(h.name) }

// ParentDigest is the parent digest, or nil (a copy).
func (h *SnapshotHandle) ParentDigest() *string { return copyString(h.parentDigest) }

// ImageRef is the pinned image reference.
func (h *SnapshotHandle) ImageRef() string { return h.imageRef }

// Format is "raw" or "qcow2".
func (h *SnapshotHandle) Format() string { return h.format }

// SizeBytes is the apparent upper size at index time, or nil (a copy).
func (h *SnapshotHandle) SizeBytes() *uint64 {
	if h.sizeBytes == nil {
		return nil
	}
	n := *h.sizeBytes
	return &n
}

// Path is the artifact directory.
func (h *SnapshotHandle) Path() string { return h.path }

// CreatedAt is the snapshot's creation time (UTC).
func (h *SnapshotHandle) CreatedAt() time.Time { return h.createdAt }

// Open opens the artifact (Snapshot.Open on this handle's path).
func (h *SnapshotHandle) Open(ctx context.Context) (*SnapshotArtifact, error) {
	return Snapshot.Open(ctx, h.path)
}

// Remove removes this snapshot (Snapshot.Remove on this handle's path).
func (h *SnapshotHandle) Remove(ctx context.Context, force bool) error {
	return Snapshot.Remove(ctx, h.path, force)
}

// takeHandles converts (and frees) a handle list. The handles share one
// backing array, and their text one buffer: a listing of thousands costs
// a few allocations, not several per handle.
func takeHandles(list *C.MsbSnapshotHandleList) ([]*SnapshotHandle, error) {
	defer C.msb_snapshot_handle_list_free(list)
	var first *C.MsbSnapshotHandleView
	var count C.size_t
	if err := takeError(nil, C.msb_snapshot_handle_list_views(list, &first, &count)); err != nil {
		return nil, err
	}
	n := int(count)
	if n == 0 {
		return []*SnapshotHandle{}, nil
	}
	views := unsafe.Slice(first, n)
	size := 0
	for i := range views {
		v := &views[i]
		size += int(v.digest.len + v.name.len + v.parent_digest.len + v.image_ref.len + v.format.len + v.path.len)
	}
	text := make([]byte, 0, size)
	// take appends a field to text and returns it as a string sharing
	// text's memory, which is never written again.
	take := func(s C.MsbStr) string {
		if s.len == 0 {
			return ""
		}
		start := len(text)
		text = append(text, unsafe.Slice((*byte)(unsafe.Pointer(s.ptr)), int(s.len))...)
		return unsafe.String(&text[start], int(s.len))
	}
	items := make([]SnapshotHandle, n)
	names := make([]string, n)
	parents := make([]string, n)
	sizes := make([]uint64, n)
	out := make([]*SnapshotHandle, n)
	for i := range views {
		v, h := &views[i], &items[i]
		h.digest = take(v.digest)
		h.imageRef = take(v.image_ref)
		h.format = take(v.format)
		h.path = take(v.path)
		if v.has_name {
			names[i] = take(v.name)
			h.name = &names[i]
		}
		if v.has_parent {
			parents[i] = take(v.parent_digest)
			h.parentDigest = &parents[i]
		}
		if v.has_size_bytes {
			sizes[i] = uint64(v.size_bytes)
			h.sizeBytes = &sizes[i]
		}
		h.createdAt = time.Unix(int64(v.created_at_unix), int64(v.created_at_nanos)).UTC()
		h.kind = snapshotKindOf(v.kind)
		out[i] = h
	}
	return out, nil
}

// artifactResult is the artifact of a call that returned p, or its error.
func artifactResult(p *C.MsbSnapshot, err error) (*SnapshotArtifact, error) {
	if err != nil {
		return nil, err
	}
	return newArtifact(p)
}

// firstHandle is the one handle of a call that returned list, or its error.
func firstHandle(list *C.MsbSnapshotHandleList, err error) (*SnapshotHandle, error) {
	if err != nil {
		return nil, err
	}
	handles, err := takeHandles(list)
	if err != nil {
		return nil, err
	}
	return handles[0], nil
}

func withCString(s string, f func(*C.char) error) error {
	c := C.CString(s)
	defer C.free(unsafe.Pointer(c))
	return f(c)
}

// Create captures the stopped (or crashed) sandbox sourceSandbox.
func (snapshotFactory) Create(ctx context.Context, sourceSandbox string, opts SnapshotCreateOptions) (*SnapshotArtifact, error) {
	src, name, path := C.CString(sourceSandbox), optCString(opts.Name), optCString(opts.Path)
	defer C.free(unsafe.Pointer(src))
	defer C.free(unsafe.Pointer(name))
	defer C.free(unsafe.Pointer(path))
	keys, values, n, free := cPairs(opts.Labels)
	defer free()
	var out *C.MsbSnapshot
	err := call(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel) *C.MsbError {
		return C.msb_snapshot_create(cfg, tok, src, name, path, keys, values, n,
			C.bool(opts.Force), C.bool(opts.RecordIntegrity), &out)
	})
	return artifactResult(out, err)
}

// Open opens an artifact by bare name, digest or path (metadata only; see Verify).
func (snapshotFactory) Open(ctx context.Context, pathOrName string) (*SnapshotArtifact, error) {
	var out *C.MsbSnapshot
	err := withCString(pathOrName, func(key *C.char) error {
		return callQuick(ctx, func(cfg *C.MsbConfig) *C.MsbError { return C.msb_snapshot_open(cfg, key, &out) })
	})
	return artifactResult(out, err)
}

// Get looks up a handle in the local index by name, digest or path.
func (snapshotFactory) Get(ctx context.Context, nameOrDigest string) (*SnapshotHandle, error) {
	var list *C.MsbSnapshotHandleList
	err := withCString(nameOrDigest, func(key *C.char) error {
		return callQuick(ctx, func(cfg *C.MsbConfig) *C.MsbError { return C.msb_snapshot_get(cfg, key, &list) })
	})
	return firstHandle(list, err)
}

// List lists the indexed snapshots, newest first.
func (snapshotFactory) List(ctx context.Context) ([]*SnapshotHandle, error) {
	var list *C.MsbSnapshotHandleList
	if err := callQuick(ctx, func(cfg *C.MsbConfig) *C.MsbError { return C.msb_snapshot_list(cfg, &list) }); err != nil {
		return nil, err
	}
	return takeHandles(list)
}

// ListDir opens every artifact directly inside dir, without the index.
func (snapshotFactory) ListDir(ctx context.Context, dir string) ([]*SnapshotArtifact, error) {
	var list *C.MsbSnapshotList
	err := withCString(dir, func(d *C.char) error {
		return callQuick(ctx, func(cfg *C.MsbConfig) *C.MsbError { return C.msb_snapshot_list_dir(cfg, d, &list) })
	})
	if err != nil {
		return nil, err
	}
	defer C.msb_snapshot_list_free(list)
	n := int(C.msb_snapshot_list_count(list))
	out := make([]*SnapshotArtifact, 0, n)
	for i := 0; i < n; i++ {
		var p *C.MsbSnapshot
		if err := takeError(nil, C.msb_snapshot_list_get(list, C.size_t(i), &p)); err != nil {
			return nil, err
		}
		a, err := newArtifact(p)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// Remove removes an artifact and its index row; with indexed children it
// fails with ErrSnapshotHasChildren unless force.
func (snapshotFactory) Remove(ctx context.Context, pathOrName string, force bool) error {
	return withCString(pathOrName, func(key *C.char) error {
		return callQuick(ctx, func(cfg *C.MsbConfig) *C.MsbError { return C.msb_snapshot_remove(cfg, key, C.bool(force)) })
	})
}

// Reindex rebuilds the index from the artifacts in dir ("" for the default
// snapshots directory) and returns how many it indexed.
func (snapshotFactory) Reindex(ctx context.Context, dir string) (uint32, error) {
	d := optCString(dir)
	defer C.free(unsafe.Pointer(d))
	var n C.uint64_t
	err := call(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel) *C.MsbError {
		return C.msb_snapshot_reindex(cfg, tok, d, &n)
	})
	return uint32(n), err
}

// Export bundles a snapshot into an archive at outPath (.tar.zst, or .tar
// with PlainTar). Progress goes to the func of WithProgress.
func (snapshotFactory) Export(ctx context.Context, nameOrPath, outPath string, opts SnapshotExportOptions) error {
	key, out := C.CString(nameOrPath), C.CString(outPath)
	defer C.free(unsafe.Pointer(key))
	defer C.free(unsafe.Pointer(out))
	return callWithProgress(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel, fn C.MsbProgressFn, user unsafe.Pointer) *C.MsbError {
		return C.msb_snapshot_export(cfg, tok, key, out, C.bool(opts.WithParents),
			C.bool(opts.WithImage), C.bool(opts.PlainTar), fn, user)
	})
}

// Import unpacks an archive into dest ("" for the default snapshots
// directory). Progress goes to the func of WithProgress.
func (snapshotFactory) Import(ctx context.Context, archive, dest string) (*SnapshotHandle, error) {
	a, d := C.CString(archive), optCString(dest)
	defer C.free(unsafe.Pointer(a))
	defer C.free(unsafe.Pointer(d))
	var list *C.MsbSnapshotHandleList
	err := callWithProgress(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel, fn C.MsbProgressFn, user unsafe.Pointer) *C.MsbError {
		return C.msb_snapshot_import(cfg, tok, a, d, fn, user, &list)
	})
	return firstHandle(list, err)
}
