package microsandbox

// The C side of the progress trampoline (kept apart from the //export
// file, whose preamble may only declare).

/*
#include <stdint.h>
#include "microsandbox.h"
extern void msbGoProgress(void *user, MsbProgressEvent *event);
static MsbProgressFn msb_go_progress_fn(void) { return (MsbProgressFn)msbGoProgress; }
static void *msb_go_user(uintptr_t handle) { return (void *)handle; }
*/
import "C"

import (
	"context"
	"runtime/cgo"
	"unsafe"
)

// progressArgs returns the callback and user data for ctx's progress func
// (none when ctx has none); release frees the handle after the call.
func progressArgs(ctx context.Context) (fn C.MsbProgressFn, user unsafe.Pointer, release func()) {
	f, ok := ctx.Value(progressKey{}).(func(ProgressEvent))
	if !ok || f == nil {
		return nil, nil, func() {}
	}
	h := cgo.NewHandle(f)
	return C.msb_go_progress_fn(), C.msb_go_user(C.uintptr_t(h)), h.Delete
}

// callWithProgress is call for the calls that report progress: f also
// gets the callback and user data of ctx's progress func.
func callWithProgress(ctx context.Context, f func(cfg *C.MsbConfig, tok *C.MsbCancel, fn C.MsbProgressFn, user unsafe.Pointer) *C.MsbError) error {
	fn, user, release := progressArgs(ctx)
	defer release()
	return call(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel) *C.MsbError { return f(cfg, tok, fn, user) })
}
