package microsandbox

// The guest assets that travel with this module: the core is linked into
// the user's program, so "next to the native library" is the module's own
// directory, registered once with the core (docs/config.md, place 4).

/*
#include <stdlib.h>
#include "microsandbox.h"
*/
import "C"

import (
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"unsafe"
)

var registerAssets sync.Once

// ShippedAssetsDir is the microsandbox-guest/ directory of this module (as
// compiled), whether or not it exists.
func ShippedAssetsDir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return ""
	}
	return filepath.Join(filepath.Dir(file), "microsandbox-guest")
}

func ensureShippedAssets() {
	registerAssets.Do(func() {
		dir := ShippedAssetsDir()
		if dir == "" {
			return
		}
		if info, err := os.Stat(dir); err != nil || !info.IsDir() {
			return
		}
		c := C.CString(dir)
		defer C.free(unsafe.Pointer(c))
		_ = takeError(nil, C.msb_register_shipped_assets_dir(c))
	})
}
