package microsandbox

// Sandboxes: create (from an image or a snapshot), get, list, remove; a
// running Sandbox and the registry's SandboxHandle, which snapshots a
// stopped sandbox's disk, or a running one whole (SnapshotFull, Resume).

/*
#include <stdlib.h>
#include "microsandbox.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"runtime"
	"sync"
	"unsafe"
)

// SandboxOption configures CreateSandbox.
type SandboxOption func(*sandboxOptions)

type sandboxOptions struct {
	image, snapshot string
	memoryMiB, cpus uint32
	upperSizeBytes  uint64
	env             map[string]string
	instant         C.int32_t // negative: the core's default
	network         string    // empty: the core's default, "public"
	allow           []string
	portHosts       []C.uint16_t
	portGuests      []C.uint16_t
}

// The states of a sandbox, as State and Status report them.
const (
	SandboxStateRunning = "running"
	// SandboxStatePaused: its VM is up but paused by SnapshotFull, until Resume.
	SandboxStatePaused  = "paused"
	SandboxStateStopped = "stopped"
	SandboxStateCrashed = "crashed"
)

// WithImage boots the sandbox from an image reference or manifest digest.
func WithImage(ref string) SandboxOption { return func(o *sandboxOptions) { o.image = ref } }

// WithSnapshot boots the sandbox from a snapshot (bare name, digest or path).
func WithSnapshot(pathOrName string) SandboxOption {
	return func(o *sandboxOptions) { o.snapshot = pathOrName }
}

// WithMemory sets the guest memory in MiB.
func WithMemory(mib uint32) SandboxOption { return func(o *sandboxOptions) { o.memoryMiB = mib } }

// WithCPUs sets the number of virtual CPUs.
func WithCPUs(n uint32) SandboxOption { return func(o *sandboxOptions) { o.cpus = n } }

// WithUpperSize sets the apparent size of the sandbox's writable disk.
func WithUpperSize(bytes uint64) SandboxOption {
	return func(o *sandboxOptions) { o.upperSizeBytes = bytes }
}

// WithEnv adds an environment variable of the sandbox's commands.
func WithEnv(key, value string) SandboxOption {
	return func(o *sandboxOptions) {
		if o.env == nil {
			o.env = map[string]string{}
		}
		o.env[key] = value
	}
}

// WithInstant sets instant create (docs/full-snapshots.md): on (the
// core's default), a create may fork a cached base full snapshot of a
// freshly booted guest of the same shape instead of booting; false always
// boots cold.
func WithInstant(on bool) SandboxOption {
	return func(o *sandboxOptions) {
		o.instant = 0
		if on {
			o.instant = 1
		}
	}
}

// WithNetwork sets the network policy (docs/network.md): "public" (the
// default: public addresses only), "all" (the host's loopback included) or
// "none" (no network card, only lo). Another name fails CreateSandbox with
// ErrInvalidConfig.
func WithNetwork(policy string) SandboxOption {
	return func(o *sandboxOptions) { o.network = policy }
}

// WithAllow also allows a host name, address or CIDR (e.g. "10.0.0.0/8")
// whatever the policy's ranges say. Repeatable.
func WithAllow(hostOrCIDR string) SandboxOption {
	return func(o *sandboxOptions) { o.allow = append(o.allow, hostOrCIDR) }
}

// WithPort publishes guest TCP port guest on the host's 127.0.0.1 port
// host. Repeatable; a taken host port fails CreateSandbox with
// ErrInvalidConfig before any VM starts.
func WithPort(host, guest uint16) SandboxOption {
	return func(o *sandboxOptions) {
		o.portHosts = append(o.portHosts, C.uint16_t(host))
		o.portGuests = append(o.portGuests, C.uint16_t(guest))
	}
}

// Sandbox is a running sandbox. Close releases the Go handle (the VM keeps
// running until Stop or RemoveSandbox).
type Sandbox struct {
	mu     sync.Mutex
	ptr    *C.MsbSandbox
	handle *SandboxHandle
}

// SandboxHandle is a sandbox as recorded in the registry.
type SandboxHandle struct {
	ptr  *C.MsbSandboxHandle
	view sandboxView
}

type sandboxView struct {
	Name                string            `json:"name"`
	State               string            `json:"state"`
	ImageRef            string            `json:"image_ref"`
	ImageManifestDigest string            `json:"image_manifest_digest"`
	MemoryMiB           uint32            `json:"memory_mib"`
	CPUs                uint32            `json:"cpus"`
	Env                 map[string]string `json:"env"`
	WorkingDir          string            `json:"working_dir"`
	CreatedAt           string            `json:"created_at"`
	Path                string            `json:"path"`
}

// newSandboxHandle takes ownership of p.
func newSandboxHandle(p *C.MsbSandboxHandle) (*SandboxHandle, error) {
	var text *C.char
	if err := takeError(nil, C.msb_sandbox_handle_json(p, &text)); err != nil {
		C.msb_sandbox_handle_free(p)
		return nil, err
	}
	h := &SandboxHandle{ptr: p}
	if err := json.Unmarshal([]byte(takeString(text)), &h.view); err != nil {
		C.msb_sandbox_handle_free(p)
		return nil, &Error{Kind: ErrRuntime.Kind, Message: "cannot decode the sandbox view: " + err.Error()}
	}
	runtime.SetFinalizer(h, func(h *SandboxHandle) { C.msb_sandbox_handle_free(h.ptr) })
	return h, nil
}

// newSandbox takes ownership of p.
func newSandbox(p *C.MsbSandbox) (*Sandbox, error) {
	var hp *C.MsbSandboxHandle
	if err := takeError(nil, C.msb_sandbox_handle(p, &hp)); err != nil {
		C.msb_sandbox_free(p)
		return nil, err
	}
	h, err := newSandboxHandle(hp)
	if err != nil {
		C.msb_sandbox_free(p)
		return nil, err
	}
	sb := &Sandbox{ptr: p, handle: h}
	runtime.SetFinalizer(sb, (*Sandbox).Close)
	return sb, nil
}

// CreateSandbox creates the sandbox name and boots it: WithImage or
// WithSnapshot (exactly one), plus any other options.
func CreateSandbox(ctx context.Context, name string, opts ...SandboxOption) (*Sandbox, error) {
	o := sandboxOptions{instant: -1}
	for _, opt := range opts {
		opt(&o)
	}
	n, img, snap := C.CString(name), optCString(o.image), optCString(o.snapshot)
	defer C.free(unsafe.Pointer(n))
	defer C.free(unsafe.Pointer(img))
	defer C.free(unsafe.Pointer(snap))
	keys, values, count, free := cPairs(o.env)
	defer free()
	network := optCString(o.network)
	defer C.free(unsafe.Pointer(network))
	allow, freeAllow := cStrings(o.allow)
	defer freeAllow()
	var portHosts, portGuests *C.uint16_t
	if len(o.portHosts) > 0 {
		// Go memory without pointers: cgo may pass it for the call.
		portHosts, portGuests = &o.portHosts[0], &o.portGuests[0]
	}
	var out *C.MsbSandbox
	err := call(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel) *C.MsbError {
		return C.msb_sandbox_create(cfg, tok, n, img, snap, C.uint32_t(o.memoryMiB), C.uint32_t(o.cpus),
			C.uint64_t(o.upperSizeBytes), keys, values, count, o.instant,
			network, allow, C.size_t(len(o.allow)), portHosts, portGuests, C.size_t(len(o.portHosts)), &out)
	})
	if err != nil {
		return nil, err
	}
	return newSandbox(out)
}

// GetSandbox returns the sandbox called name (ErrSandboxNotFound otherwise).
func GetSandbox(ctx context.Context, name string) (*SandboxHandle, error) {
	var out *C.MsbSandboxHandle
	err := withCString(name, func(n *C.char) error {
		return callQuick(ctx, func(cfg *C.MsbConfig) *C.MsbError { return C.msb_sandbox_get(cfg, n, &out) })
	})
	if err != nil {
		return nil, err
	}
	return newSandboxHandle(out)
}

// ListSandboxes returns every sandbox, by name.
func ListSandboxes(ctx context.Context) ([]*SandboxHandle, error) {
	var list *C.MsbSandboxHandleList
	if err := callQuick(ctx, func(cfg *C.MsbConfig) *C.MsbError { return C.msb_sandbox_list(cfg, &list) }); err != nil {
		return nil, err
	}
	defer C.msb_sandbox_handle_list_free(list)
	n := int(C.msb_sandbox_handle_list_count(list))
	out := make([]*SandboxHandle, 0, n)
	for i := 0; i < n; i++ {
		var p *C.MsbSandboxHandle
		if err := takeError(nil, C.msb_sandbox_handle_list_get(list, C.size_t(i), &p)); err != nil {
			return nil, err
		}
		h, err := newSandboxHandle(p)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

// RemoveSandbox stops (if running) and deletes the sandbox called name.
func RemoveSandbox(ctx context.Context, name string) error {
	return withCString(name, func(n *C.char) error {
		return callQuick(ctx, func(cfg *C.MsbConfig) *C.MsbError { return C.msb_sandbox_remove(cfg, n) })
	})
}

// Name is the sandbox's name.
func (sb *Sandbox) Name() string { return sb.handle.view.Name }

// Handle is the sandbox's registry handle.
func (sb *Sandbox) Handle() *SandboxHandle { return sb.handle }

// Stop shuts the sandbox down cleanly (forced after a timeout).
func (sb *Sandbox) Stop(ctx context.Context) error { return sb.handle.Stop(ctx) }

// SnapshotFull captures the running sandbox whole (memory, CPU and device
// state, disk) as a full snapshot and leaves it paused until Resume. The
// artifact lives until SaveNamed or until this sandbox is removed.
// ErrSandboxNotRunning unless it runs (or is already paused).
func (sb *Sandbox) SnapshotFull(ctx context.Context) (*SnapshotArtifact, error) {
	return sb.handle.SnapshotFull(ctx)
}

// Resume continues the sandbox paused by SnapshotFull from exactly where it
// was. ErrSandboxNotPaused unless it is paused.
func (sb *Sandbox) Resume(ctx context.Context) error { return sb.handle.Resume(ctx) }

// Close releases the Go handle of the sandbox; the VM is not stopped.
func (sb *Sandbox) Close() error {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.ptr != nil {
		C.msb_sandbox_free(sb.ptr)
		sb.ptr = nil
	}
	return nil
}

// Name is the sandbox's name.
func (h *SandboxHandle) Name() string { return h.view.Name }

// State is "running", "paused", "stopped" or "crashed" (SandboxState…)
// when the handle was read (see Status).
func (h *SandboxHandle) State() string { return h.view.State }

// ImageRef is the image reference the sandbox was created from.
func (h *SandboxHandle) ImageRef() string { return h.view.ImageRef }

// ImageManifestDigest is the pinned image manifest digest.
func (h *SandboxHandle) ImageManifestDigest() string { return h.view.ImageManifestDigest }

// MemoryMiB is the guest memory.
func (h *SandboxHandle) MemoryMiB() uint32 { return h.view.MemoryMiB }

// CPUs is the number of virtual CPUs.
func (h *SandboxHandle) CPUs() uint32 { return h.view.CPUs }

// Env is the commands' environment (a copy).
func (h *SandboxHandle) Env() map[string]string {
	out := make(map[string]string, len(h.view.Env))
	for k, v := range h.view.Env {
		out[k] = v
	}
	return out
}

// WorkingDir is the commands' working directory.
func (h *SandboxHandle) WorkingDir() string { return h.view.WorkingDir }

// CreatedAt is the RFC 3339 creation time.
func (h *SandboxHandle) CreatedAt() string { return h.view.CreatedAt }

// Path is the sandbox directory.
func (h *SandboxHandle) Path() string { return h.view.Path }

// Status reads the sandbox's current state.
func (h *SandboxHandle) Status(ctx context.Context) (string, error) {
	var out *C.char
	err := callQuick(ctx, func(cfg *C.MsbConfig) *C.MsbError { return C.msb_sandbox_handle_status(cfg, h.ptr, &out) })
	runtime.KeepAlive(h)
	if err != nil {
		return "", err
	}
	return takeString(out), nil
}

// Start boots a stopped or crashed sandbox again.
func (h *SandboxHandle) Start(ctx context.Context) (*Sandbox, error) {
	var out *C.MsbSandbox
	err := call(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel) *C.MsbError {
		return C.msb_sandbox_handle_start(cfg, tok, h.ptr, &out)
	})
	runtime.KeepAlive(h)
	if err != nil {
		return nil, err
	}
	return newSandbox(out)
}

// Stop shuts the sandbox down cleanly (forced after a timeout); not cancellable.
func (h *SandboxHandle) Stop(ctx context.Context) error {
	err := callQuick(ctx, func(cfg *C.MsbConfig) *C.MsbError { return C.msb_sandbox_handle_stop(cfg, h.ptr) })
	runtime.KeepAlive(h)
	return err
}

// Remove stops the VM if it runs and deletes the sandbox.
func (h *SandboxHandle) Remove(ctx context.Context) error {
	err := callQuick(ctx, func(cfg *C.MsbConfig) *C.MsbError { return C.msb_sandbox_handle_remove(cfg, h.ptr) })
	runtime.KeepAlive(h)
	return err
}

// Snapshot snapshots this stopped (or crashed) sandbox under a bare name.
func (h *SandboxHandle) Snapshot(ctx context.Context, name string) (*SnapshotArtifact, error) {
	var out *C.MsbSnapshot
	err := withCString(name, func(n *C.char) error {
		return call(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel) *C.MsbError {
			return C.msb_sandbox_handle_snapshot(cfg, tok, h.ptr, n, &out)
		})
	})
	runtime.KeepAlive(h)
	return artifactResult(out, err)
}

// SnapshotTo snapshots this stopped (or crashed) sandbox to an explicit
// artifact directory.
func (h *SandboxHandle) SnapshotTo(ctx context.Context, path string) (*SnapshotArtifact, error) {
	var out *C.MsbSnapshot
	err := withCString(path, func(p *C.char) error {
		return call(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel) *C.MsbError {
			return C.msb_sandbox_handle_snapshot_to(cfg, tok, h.ptr, p, &out)
		})
	})
	runtime.KeepAlive(h)
	return artifactResult(out, err)
}

// SnapshotFull captures this running sandbox whole; see Sandbox.SnapshotFull.
func (h *SandboxHandle) SnapshotFull(ctx context.Context) (*SnapshotArtifact, error) {
	var out *C.MsbSnapshot
	err := call(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel) *C.MsbError {
		return C.msb_sandbox_handle_snapshot_full(cfg, tok, h.ptr, &out)
	})
	runtime.KeepAlive(h)
	return artifactResult(out, err)
}

// Resume continues this paused sandbox; see Sandbox.Resume. Not cancellable.
func (h *SandboxHandle) Resume(ctx context.Context) error {
	err := callQuick(ctx, func(cfg *C.MsbConfig) *C.MsbError { return C.msb_sandbox_handle_resume(cfg, h.ptr) })
	runtime.KeepAlive(h)
	return err
}
