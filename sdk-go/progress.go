package microsandbox

// Progress: verify, export, import and image load report the core's
// progress events to the func of WithProgress. The func crosses into C as
// a runtime/cgo.Handle and comes back through the exported trampoline.

/*
#include "microsandbox.h"
*/
import "C"

import (
	"context"
	"runtime/cgo"
	"unsafe"
)

// ProgressEvent is one report of a long call: DoneBytes of TotalBytes are
// finished. Events come in order; the last has DoneBytes == TotalBytes.
type ProgressEvent struct {
	// Phase is "hash" (verify), "export", "import", "load" (image load), "pull" or "push" (registry).
	Phase string
	// DoneBytes is the work finished so far.
	DoneBytes uint64
	// TotalBytes is the work in all.
	TotalBytes uint64
}

type progressKey struct{}

// WithProgress returns a context whose verify, export, import, image
// load and registry (pull, push) calls report to fn (called from other threads, one event at a time).
func WithProgress(ctx context.Context, fn func(ProgressEvent)) context.Context {
	return context.WithValue(ctx, progressKey{}, fn)
}

//export msbGoProgress
func msbGoProgress(user unsafe.Pointer, event *C.MsbProgressEvent) {
	fn := cgo.Handle(uintptr(user)).Value().(func(ProgressEvent))
	fn(ProgressEvent{
		Phase:      C.GoString(event.phase),
		DoneBytes:  uint64(event.done_bytes),
		TotalBytes: uint64(event.total_bytes),
	})
}
