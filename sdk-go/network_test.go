package microsandbox_test

// Guest networking through the Go SDK (docs/network.md) on real VMs: a
// sandbox under "none" has only lo, a published port answers from the
// host's loopback, and bad network options fail before any VM starts,
// leaving no sandbox behind.

import (
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	m "github.com/superradcompany/microsandbox/sdk/go"
)

// freePort is a host port nothing listens on: bound on port 0, then closed.
func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return uint16(port)
}

func TestNetworkNoneHasOnlyLoopback(t *testing.T) {
	h := vmHome(t)
	sb, err := m.CreateSandbox(h.ctx, "offline", m.WithImage(busyboxRef), m.WithNetwork("none"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := sb.Exec(h.ctx, "sh", []string{"-c", "tail -n +3 /proc/net/dev | cut -d: -f1"})
	if err != nil || out.ExitCode != 0 {
		t.Fatalf("exec: %+v %v", out, err)
	}
	if got := strings.Fields(string(out.Stdout)); len(got) != 1 || got[0] != "lo" {
		t.Fatalf("interfaces under none: %q", got)
	}
}

func TestNetworkPublishedPortAnswersFromTheHost(t *testing.T) {
	h := vmHome(t)
	hostPort := freePort(t)
	sb, err := m.CreateSandbox(h.ctx, "server", m.WithImage(busyboxRef),
		m.WithNetwork("public"), m.WithPort(hostPort, 8080))
	if err != nil {
		t.Fatal(err)
	}
	out, err := sb.Exec(h.ctx, "sh", []string{"-c",
		"setsid nc -ll -p 8080 -e echo hi-from-guest </dev/null >/dev/null 2>&1 &"})
	if err != nil || out.ExitCode != 0 {
		t.Fatalf("starting the server: %+v %v", out, err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(hostPort)))
	var answer string
	// The server may not listen yet: msb-netd then closes the connection
	// with nothing read, and the next try reaches it.
	for try := 0; try < 30 && answer == ""; try++ {
		if try > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			continue
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		data, _ := io.ReadAll(conn)
		_ = conn.Close()
		answer = string(data)
	}
	if answer != "hi-from-guest\n" {
		t.Fatalf("answer through the published port: %q", answer)
	}
}

func TestNetworkBadOptionsFailBeforeAnyVM(t *testing.T) {
	h := vmHome(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := uint16(taken.Addr().(*net.TCPAddr).Port)
	cases := map[string][]m.SandboxOption{
		"unknown-policy": {m.WithNetwork("everything")},
		"host-bits-set":  {m.WithAllow("10.0.0.1/8")},
		"taken-port":     {m.WithPort(takenPort, 8080)},
		"port-zero":      {m.WithPort(0, 8080)},
	}
	for name, opts := range cases {
		opts = append(opts, m.WithImage(busyboxRef))
		_, err := m.CreateSandbox(h.ctx, name, opts...)
		if !errors.Is(err, m.ErrInvalidConfig) {
			t.Fatalf("%s: want InvalidConfig, got %v", name, err)
		}
		if _, err := m.GetSandbox(h.ctx, name); !errors.Is(err, m.ErrSandboxNotFound) {
			t.Fatalf("%s: the sandbox is still recorded: %v", name, err)
		}
	}
	if list, err := m.ListSandboxes(h.ctx); err != nil || len(list) != 0 {
		t.Fatalf("sandboxes left: %v %v", list, err)
	}
}
