package microsandbox

// Errors: every kind of the core's list has its sentinel here; a test
// walks the list the core reports at run time (Kinds) and checks each.

/*
#include "microsandbox.h"
*/
import "C"

import (
	"context"
	"fmt"
)

// Error is every error of the SDK: the core's stable kind and its message.
// Compare with errors.Is against the sentinels (ErrSnapshotNotFound, …).
// A cancelled call's error (kind Cancelled) also unwraps to the context's
// error, so errors.Is(err, context.Canceled) holds.
type Error struct {
	// Kind is the stable kind string, identical in every SDK.
	Kind string
	// Message says what went wrong.
	Message string
	cause   error
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "microsandbox: " + e.Kind
	}
	return fmt.Sprintf("microsandbox: %s: %s", e.Kind, e.Message)
}

// Is reports whether target is the sentinel of e's kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Kind == e.Kind
}

// Unwrap returns the context error that cancelled the call, if any.
func (e *Error) Unwrap() error { return e.cause }

func sentinel(kind string) *Error { return &Error{Kind: kind} }

// The sentinels, one per kind of the core.
var (
	ErrSnapshotAlreadyExists         = sentinel("SnapshotAlreadyExists")
	ErrSnapshotNotFound              = sentinel("SnapshotNotFound")
	ErrSnapshotSandboxRunning        = sentinel("SnapshotSandboxRunning")
	ErrSnapshotIntegrity             = sentinel("SnapshotIntegrity")
	ErrManifestInvalid               = sentinel("ManifestInvalid")
	ErrIntegrityAlgorithmUnsupported = sentinel("IntegrityAlgorithmUnsupported")
	ErrArchiveInvalid                = sentinel("ArchiveInvalid")
	ErrSnapshotHasChildren           = sentinel("SnapshotHasChildren")
	ErrInvalidConfig                 = sentinel("InvalidConfig")
	ErrSandboxNotFound               = sentinel("SandboxNotFound")
	ErrSandboxAlreadyExists          = sentinel("SandboxAlreadyExists")
	ErrSandboxNotRunning             = sentinel("SandboxNotRunning")
	ErrSandboxNotPaused              = sentinel("SandboxNotPaused")
	ErrSnapshotIncompatible          = sentinel("SnapshotIncompatible")
	ErrImageNotFound                 = sentinel("ImageNotFound")
	ErrImageInUse                    = sentinel("ImageInUse")
	ErrRegistry                      = sentinel("Registry")
	ErrRuntime                       = sentinel("Runtime")
	ErrCancelled                     = sentinel("Cancelled")
	ErrIo                            = sentinel("Io")
)

var sentinels = map[string]*Error{}

func init() {
	for _, s := range []*Error{
		ErrSnapshotAlreadyExists, ErrSnapshotNotFound, ErrSnapshotSandboxRunning,
		ErrSnapshotIntegrity, ErrManifestInvalid, ErrIntegrityAlgorithmUnsupported,
		ErrArchiveInvalid, ErrSnapshotHasChildren, ErrInvalidConfig, ErrSandboxNotFound,
		ErrSandboxAlreadyExists, ErrSandboxNotRunning, ErrSandboxNotPaused,
		ErrSnapshotIncompatible, ErrImageNotFound, ErrImageInUse, ErrRegistry, ErrRuntime,
		ErrCancelled, ErrIo,
	} {
		sentinels[s.Kind] = s
	}
}

// Sentinel returns the sentinel of kind, or nil for a kind this SDK does
// not know.
func Sentinel(kind string) *Error { return sentinels[kind] }

// Kinds returns every error kind of the linked core, in its order.
func Kinds() []string {
	n := int(C.msb_error_kinds_count())
	kinds := make([]string, n)
	for i := range kinds {
		kinds[i] = C.GoString(C.msb_error_kind_at(C.size_t(i)))
	}
	return kinds
}

// takeError converts (and releases) an error of the C ABI: the one path
// every error takes. A Cancelled error of a call whose ctx is done wraps
// ctx's error.
func takeError(ctx context.Context, e *C.MsbError) error {
	if e == nil {
		return nil
	}
	err := &Error{
		Kind:    C.GoString(C.msb_error_kind(e)),
		Message: C.GoString(C.msb_error_message(e)),
	}
	C.msb_error_free(e)
	if err.Kind == ErrCancelled.Kind && ctx != nil {
		err.cause = ctx.Err()
	}
	return err
}

// cancelledBefore is the error of a call whose ctx was done before it began.
func cancelledBefore(cause error) error {
	return &Error{Kind: ErrCancelled.Kind, Message: "the operation was cancelled", cause: cause}
}
