package microsandbox

// Images: load an OCI / docker archive, save one, remove, build the
// busybox archive, list and get, through the Image value:
// m.Image.Load(ctx, …). Registry calls
// (Pull, …) are in registry.go.

/*
#include <stdlib.h>
#include "microsandbox.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"unsafe"
)

// Image holds the image functions.
var Image imageFactory

type imageFactory struct{}

// ImageInfo describes a loaded image (the core's view, docs/json.md).
type ImageInfo struct {
	// Reference names the image.
	Reference string `json:"reference"`
	// ManifestDigest is the OCI manifest digest.
	ManifestDigest string `json:"manifest_digest"`
	// ConfigDigest is the OCI config digest.
	ConfigDigest string `json:"config_digest"`
	// LowerPath is the built read-only root disk.
	LowerPath string `json:"lower_path"`
	// Env is the image's environment (KEY=VALUE).
	Env []string `json:"env"`
	// WorkingDir is the image's working directory.
	WorkingDir string `json:"working_dir"`
	// LoadedAt is the RFC 3339 load or pull time.
	LoadedAt string `json:"loaded_at"`
	// Origin is the registry reference the image was pulled from ("" for
	// an image loaded from an archive or imported with a snapshot).
	Origin string `json:"origin"`
}

// imageResult is the image a call returned as JSON, or its error.
func imageResult(out *C.char, err error) (*ImageInfo, error) {
	if err != nil {
		return nil, err
	}
	var info ImageInfo
	return &info, decodeJSON(out, &info)
}

func decodeJSON(text *C.char, into any) error {
	if err := json.Unmarshal([]byte(takeString(text)), into); err != nil {
		return &Error{Kind: ErrRuntime.Kind, Message: "cannot decode a core view: " + err.Error()}
	}
	return nil
}

// Load loads an OCI layout tar or `docker save` tar, named reference ("":
// the archive's own name). Progress goes to the func of WithProgress.
func (imageFactory) Load(ctx context.Context, archive, reference string) (*ImageInfo, error) {
	a, r := C.CString(archive), optCString(reference)
	defer C.free(unsafe.Pointer(a))
	defer C.free(unsafe.Pointer(r))
	var out *C.char
	err := callWithProgress(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel, fn C.MsbProgressFn, user unsafe.Pointer) *C.MsbError {
		return C.msb_image_load(cfg, tok, a, r, fn, user, &out)
	})
	return imageResult(out, err)
}

// BuildBusybox writes a tiny busybox OCI archive named reference to out,
// from the static busybox binary at busybox ("": /bin/busybox).
func (imageFactory) BuildBusybox(ctx context.Context, busybox, reference, out string) error {
	b, r, o := optCString(busybox), C.CString(reference), C.CString(out)
	defer C.free(unsafe.Pointer(b))
	defer C.free(unsafe.Pointer(r))
	defer C.free(unsafe.Pointer(o))
	return callQuick(ctx, func(*C.MsbConfig) *C.MsbError { return C.msb_image_build_busybox(b, r, o) })
}

// Get returns the image with this reference or manifest digest.
func (imageFactory) Get(ctx context.Context, referenceOrDigest string) (*ImageInfo, error) {
	var out *C.char
	err := withCString(referenceOrDigest, func(k *C.char) error {
		return callQuick(ctx, func(cfg *C.MsbConfig) *C.MsbError { return C.msb_image_get(cfg, k, &out) })
	})
	return imageResult(out, err)
}

// Save writes the image referenceOrDigest to out as an OCI archive other
// tools read (as `docker save` does); out is replaced atomically, and left
// as it was on error or cancellation. Progress phase: "export".
func (imageFactory) Save(ctx context.Context, referenceOrDigest, out string) error {
	k, o := C.CString(referenceOrDigest), C.CString(out)
	defer C.free(unsafe.Pointer(k))
	defer C.free(unsafe.Pointer(o))
	return callWithProgress(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel, fn C.MsbProgressFn, user unsafe.Pointer) *C.MsbError {
		return C.msb_image_save(cfg, tok, k, o, fn, user)
	})
}

// Remove removes the image (a reference: that one; a manifest digest:
// every reference to it) and the blobs and root disks no other image uses.
// An image a snapshot or sandbox needs is ErrImageInUse.
func (imageFactory) Remove(ctx context.Context, referenceOrDigest string) error {
	return withCString(referenceOrDigest, func(k *C.char) error {
		return callQuick(ctx, func(cfg *C.MsbConfig) *C.MsbError { return C.msb_image_remove(cfg, k) })
	})
}

// List returns every loaded image.
func (imageFactory) List(ctx context.Context) ([]ImageInfo, error) {
	var out *C.char
	if err := callQuick(ctx, func(cfg *C.MsbConfig) *C.MsbError { return C.msb_image_list(cfg, &out) }); err != nil {
		return nil, err
	}
	var infos []ImageInfo
	return infos, decodeJSON(out, &infos)
}
