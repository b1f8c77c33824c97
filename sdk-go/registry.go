package microsandbox

// Registries (docs/registry.md): pull and push images by reference, push and pull
// snapshots as OCI artifacts, and the reference normalisation every one
// of them applies. Progress goes to the func of WithProgress; cancelling
// ctx stops the transfer and leaves nothing behind.

/*
#include <stdlib.h>
#include "microsandbox.h"
*/
import "C"

import (
	"context"
	"unsafe"
)

// SnapshotPullOptions configures Snapshot.Pull.
type SnapshotPullOptions struct {
	// Dest is the directory the snapshot lands in ("": the snapshots
	// directory of the home).
	Dest string
}

// NormaliseReference returns the full form of a Docker-style reference:
// "python" is "docker.io/library/python:latest". A malformed reference is
// an error of kind InvalidConfig.
func NormaliseReference(reference string) (string, error) {
	r := C.CString(reference)
	defer C.free(unsafe.Pointer(r))
	var out *C.char
	err := takeError(nil, C.msb_normalise_reference(r, &out))
	return stringResult(out, err)
}

// Pull fetches reference ("python:3.12", "host:5000/app@sha256:…") from its
// registry into the image store and builds its root disk; the image is
// registered under the normalised reference, which is its Origin. Progress
// phases: "pull" (bytes downloaded), then "load".
func (imageFactory) Pull(ctx context.Context, reference string) (*ImageInfo, error) {
	r := C.CString(reference)
	defer C.free(unsafe.Pointer(r))
	var out *C.char
	err := callWithProgress(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel, fn C.MsbProgressFn, user unsafe.Pointer) *C.MsbError {
		return C.msb_image_pull(cfg, tok, r, fn, user, &out)
	})
	return imageResult(out, err)
}

// Push sends the local image referenceOrDigest to target
// ("host:5000/app:1") as the store holds it, so the registry's manifest
// digest is the local one (returned). Blobs the registry has are not sent
// again. Progress phase: "push".
func (imageFactory) Push(ctx context.Context, referenceOrDigest, target string) (string, error) {
	k, tg := C.CString(referenceOrDigest), C.CString(target)
	defer C.free(unsafe.Pointer(k))
	defer C.free(unsafe.Pointer(tg))
	var out *C.char
	err := callWithProgress(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel, fn C.MsbProgressFn, user unsafe.Pointer) *C.MsbError {
		return C.msb_image_push(cfg, tok, k, tg, fn, user, &out)
	})
	return stringResult(out, err)
}

// Push sends the snapshot nameOrPath (name, digest or path) to reference
// ("host:5000/snaps/base:1") as an OCI artifact holding its archive, and
// returns the artifact's manifest digest. Pushing the same snapshot again
// uploads nothing and returns the same digest. Progress phases: "export",
// then "push".
func (snapshotFactory) Push(ctx context.Context, nameOrPath, reference string) (string, error) {
	key, r := C.CString(nameOrPath), C.CString(reference)
	defer C.free(unsafe.Pointer(key))
	defer C.free(unsafe.Pointer(r))
	var out *C.char
	err := callWithProgress(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel, fn C.MsbProgressFn, user unsafe.Pointer) *C.MsbError {
		return C.msb_snapshot_push(cfg, tok, key, r, fn, user, &out)
	})
	return stringResult(out, err)
}

// Pull fetches the snapshot artifact reference and imports it into
// opts.Dest with every check Import makes (nothing partial on failure).
// Progress phases: "pull", then "import".
func (snapshotFactory) Pull(ctx context.Context, reference string, opts SnapshotPullOptions) (*SnapshotHandle, error) {
	r, d := C.CString(reference), optCString(opts.Dest)
	defer C.free(unsafe.Pointer(r))
	defer C.free(unsafe.Pointer(d))
	var list *C.MsbSnapshotHandleList
	err := callWithProgress(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel, fn C.MsbProgressFn, user unsafe.Pointer) *C.MsbError {
		return C.msb_snapshot_pull(cfg, tok, r, d, fn, user, &list)
	})
	return firstHandle(list, err)
}
