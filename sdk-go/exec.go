package microsandbox

// Commands in a running sandbox: Exec (buffered) and ExecStream (stdin
// from an io.Reader, stdout/stderr to io.Writers, Signal, Wait; ctx kills
// it). See docs/exec.md.

/*
#include <stdlib.h>
#include "microsandbox.h"
*/
import "C"

import (
	"context"
	"io"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// ExecOptions configures a command.
type ExecOptions struct {
	// Env is added to (and overrides) the sandbox's environment.
	Env map[string]string
	// Cwd is the working directory ("": the sandbox's).
	Cwd string
	// Timeout kills the command's process group (0: none).
	Timeout time.Duration
	// OutputLimit keeps at most this many bytes of each output (Exec; 0: the
	// core's default, 64 MiB; math.MaxUint64: no limit).
	OutputLimit uint64
	// Stdin is copied to the command's stdin, then closed (ExecStream; nil: empty).
	Stdin io.Reader
	// Stdout receives the command's stdout (ExecStream; nil: dropped).
	Stdout io.Writer
	// Stderr receives the command's stderr (ExecStream; nil: dropped).
	Stderr io.Writer
}

// ExecOutput is a finished command's buffered result.
type ExecOutput struct {
	// ExitCode is the exit status, or 128 + signal.
	ExitCode int
	// Signal is the signal that killed it, or nil.
	Signal *int
	// TimedOut says the timeout killed it.
	TimedOut bool
	// Stdout and Stderr are the outputs (cut at OutputLimit).
	Stdout, Stderr []byte
	// StdoutTruncated and StderrTruncated say the limit cut them.
	StdoutTruncated, StderrTruncated bool
}

// ExitStatus is how a streamed command ended.
type ExitStatus struct {
	// Code is the exit status, or 128 + signal.
	Code int
	// Signal is the signal that killed it (0: none).
	Signal int
	// TimedOut says the timeout killed it.
	TimedOut bool
}

// Success reports a zero exit code.
func (s ExitStatus) Success() bool { return s.Code == 0 && s.Signal == 0 }

// cExecOptions builds the C options of opts; free releases them.
func cExecOptions(opts []ExecOptions) (*C.MsbExecOptions, ExecOptions, func()) {
	var o ExecOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	c := (*C.MsbExecOptions)(C.calloc(1, C.size_t(unsafe.Sizeof(C.MsbExecOptions{}))))
	keys, values, n, freePairs := cPairs(o.Env)
	c.env_keys, c.env_values, c.env_count = keys, values, n
	c.cwd = optCString(o.Cwd)
	if o.Timeout > 0 {
		ms := o.Timeout.Milliseconds()
		if ms == 0 {
			ms = 1
		}
		c.timeout_ms = C.uint64_t(ms)
	}
	if o.OutputLimit > 0 {
		c.output_limit, c.has_output_limit = C.uint64_t(o.OutputLimit), true
	}
	return c, o, func() {
		freePairs()
		C.free(unsafe.Pointer(c.cwd))
		C.free(unsafe.Pointer(c))
	}
}

// Exec runs cmd with args and waits for it; stdin is empty.
func (sb *Sandbox) Exec(ctx context.Context, cmd string, args []string, opts ...ExecOptions) (*ExecOutput, error) {
	return sb.handle.Exec(ctx, cmd, args, opts...)
}

// ExecStream starts cmd with args and returns at once; see Process.
func (sb *Sandbox) ExecStream(ctx context.Context, cmd string, args []string, opts ...ExecOptions) (*Process, error) {
	return sb.handle.ExecStream(ctx, cmd, args, opts...)
}

// Exec runs cmd with args in this (running) sandbox and waits for it.
func (h *SandboxHandle) Exec(ctx context.Context, cmd string, args []string, opts ...ExecOptions) (*ExecOutput, error) {
	c, a := C.CString(cmd), args
	defer C.free(unsafe.Pointer(c))
	argv, freeArgv := cStrings(a)
	defer freeArgv()
	copts, _, freeOpts := cExecOptions(opts)
	defer freeOpts()
	var out *C.MsbExecOutput
	err := call(ctx, func(cfg *C.MsbConfig, tok *C.MsbCancel) *C.MsbError {
		return C.msb_exec(cfg, tok, h.ptr, c, argv, C.size_t(len(a)), copts, &out)
	})
	runtime.KeepAlive(h)
	if err != nil {
		return nil, err
	}
	defer C.msb_exec_output_free(out)
	var v C.MsbExecOutputView
	if err := takeError(nil, C.msb_exec_output_view(out, &v)); err != nil {
		return nil, err
	}
	res := &ExecOutput{
		ExitCode:        int(v.exit_code),
		TimedOut:        bool(v.timed_out),
		Stdout:          []byte(goStr(v.stdout)),
		Stderr:          []byte(goStr(v.stderr)),
		StdoutTruncated: bool(v.stdout_truncated),
		StderrTruncated: bool(v.stderr_truncated),
	}
	if v.has_signal {
		sig := int(v.signal)
		res.Signal = &sig
	}
	return res, nil
}

// Process is a streamed command: its output goes to the writers of its
// ExecOptions as it comes; Wait returns its exit.
type Process struct {
	mu       sync.Mutex
	refs     int // the pump, the stdin copier: the stream is freed when both end
	stream   *C.MsbExecStream
	tok      *C.MsbCancel
	stopWait func()
	done     chan struct{}
	status   ExitStatus
	err      error
}

// ExecStream starts cmd with args in this (running) sandbox.
func (h *SandboxHandle) ExecStream(ctx context.Context, cmd string, args []string, opts ...ExecOptions) (*Process, error) {
	c := C.CString(cmd)
	defer C.free(unsafe.Pointer(c))
	argv, freeArgv := cStrings(args)
	defer freeArgv()
	copts, o, freeOpts := cExecOptions(opts)
	defer freeOpts()
	ensureShippedAssets()
	if err := ctx.Err(); err != nil {
		return nil, cancelledBefore(err)
	}
	cfg, err := configOf(ctx)
	if err != nil {
		return nil, err
	}
	// The token outlives this call: it kills the command when ctx ends.
	tok := C.msb_cancel_new()
	stopWatch := watchContext(ctx, tok)
	var stream *C.MsbExecStream
	err = takeError(ctx, C.msb_exec_stream(cfg, tok, h.ptr, c, argv, C.size_t(len(args)), copts, &stream))
	runtime.KeepAlive(h)
	if err != nil {
		stopWatch()
		C.msb_cancel_free(tok)
		return nil, err
	}
	p := &Process{refs: 2, stream: stream, tok: tok, stopWait: stopWatch, done: make(chan struct{})}
	go p.pump(ctx, o.Stdout, o.Stderr)
	go p.copyStdin(o.Stdin)
	return p, nil
}

func (p *Process) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refs--
	if p.refs == 0 {
		C.msb_exec_stream_free(p.stream)
		p.stream = nil
		p.stopWait()
		C.msb_cancel_free(p.tok)
	}
}

func (p *Process) pump(ctx context.Context, stdout, stderr io.Writer) {
	defer close(p.done)
	defer p.release()
	for {
		var ev C.MsbExecEvent
		if err := takeError(ctx, C.msb_exec_next(p.stream, p.tok, &ev)); err != nil {
			p.err = err
			return
		}
		switch ev.kind {
		case C.MSB_EXEC_EVENT_KIND_STDOUT, C.MSB_EXEC_EVENT_KIND_STDERR:
			w := stdout
			if ev.kind == C.MSB_EXEC_EVENT_KIND_STDERR {
				w = stderr
			}
			if w != nil {
				_, _ = w.Write(unsafe.Slice((*byte)(unsafe.Pointer(ev.data)), int(ev.len)))
			}
			C.msb_bytes_free(ev.data, ev.len)
		case C.MSB_EXEC_EVENT_KIND_EXIT:
			p.status = ExitStatus{Code: int(ev.code), TimedOut: bool(ev.timed_out)}
			if ev.has_signal {
				p.status.Signal = int(ev.signal)
			}
		default:
			return
		}
	}
}

func (p *Process) copyStdin(r io.Reader) {
	defer p.release()
	if r != nil {
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				// Go memory may not be held by C past the call; a C copy is.
				data := C.CBytes(buf[:n])
				werr := C.msb_exec_write_stdin(p.stream, (*C.uint8_t)(data), C.size_t(n))
				C.free(data)
				if werr != nil {
					C.msb_error_free(werr)
					break
				}
			}
			if err != nil {
				break
			}
		}
	}
	if err := C.msb_exec_close_stdin(p.stream); err != nil {
		C.msb_error_free(err)
	}
}

// Signal sends sig (a syscall.Signal, e.g. syscall.SIGINT) to the
// command's process group; a no-op after it exited.
func (p *Process) Signal(sig os.Signal) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return &Error{Kind: ErrInvalidConfig.Kind, Message: "not a syscall.Signal: " + sig.String()}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stream == nil {
		return nil
	}
	return takeError(nil, C.msb_exec_signal(p.stream, C.int32_t(s)))
}

// Wait waits for the command to exit and returns how it ended. A done ctx
// kills the command and Wait returns its error (kind Cancelled).
func (p *Process) Wait() (ExitStatus, error) {
	<-p.done
	return p.status, p.err
}
