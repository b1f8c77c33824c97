package microsandbox

// Test hooks of the C ABI, for this package's tests and any binding
// checking its error path: they are not part of the snapshot API.

/*
#include <stdlib.h>
#include "microsandbox.h"
*/
import "C"

import "unsafe"

// TestHookErrorOfKind returns an error of kind built by the core and converted
// exactly as real errors are (a test hook).
func TestHookErrorOfKind(kind string) error {
	k := C.CString(kind)
	defer C.free(unsafe.Pointer(k))
	return takeError(nil, C.msb_test_error_of_kind(k))
}

// TestHookPanic makes the C ABI panic inside an export; the panic comes back as
// an error of kind Runtime (a test hook).
func TestHookPanic() error {
	return takeError(nil, C.msb_test_panic())
}
