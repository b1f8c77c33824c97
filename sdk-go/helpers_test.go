package microsandbox_test

// Helpers shared by the suites: a temporary home per test (under TMPDIR,
// never ~), the path of the checkout, artifacts made without a VM (a
// sparse upper and its manifest), and VM cleanup.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	m "github.com/superradcompany/microsandbox/sdk/go"
)

// unscopedHome cannot be created: a call that escapes its test's home fails.
const unscopedHome = "/proc/self/msb-go-test-call-outside-a-test-home"

const imageDigest = "sha256:abababababababababababababababababababababababababababababababab"

func TestMain(mt *testing.M) {
	if err := m.SetDefaultConfig(m.Config{Home: unscopedHome}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(mt.Run())
}

// repoRoot is the checkout holding this module.
func repoRoot(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	if _, err := os.Stat(filepath.Join(root, "core")); err != nil {
		t.Skipf("not inside the microsandbox checkout: %v", err)
	}
	return root
}

// testHome is a temporary home with the guest assets of MSB_KERNEL_DIR.
type testHome struct {
	dir string
	ctx context.Context
}

func newHome(t testing.TB) *testHome {
	dir := t.TempDir()
	cfg := m.Config{Home: dir, GuestAssetsDir: os.Getenv("MSB_KERNEL_DIR")}
	return &testHome{dir: dir, ctx: m.WithConfig(context.Background(), cfg)}
}

func (h *testHome) snapshotsDir() string { return filepath.Join(h.dir, "snapshots") }

// needVMs skips unless the guest assets are there (`make test` installs them).
func needVMs(t testing.TB) {
	if os.Getenv("MSB_KERNEL_DIR") == "" {
		t.Skip("MSB_KERNEL_DIR is not set: run through `make test-go`")
	}
}

// removeSandboxesAtEnd removes every sandbox of h when the test ends,
// passed or failed, so no VM outlives it.
func removeSandboxesAtEnd(t testing.TB, h *testHome) {
	t.Cleanup(func() {
		ctx := h.ctx
		list, err := m.ListSandboxes(ctx)
		if err != nil {
			t.Errorf("listing sandboxes to remove: %v", err)
			return
		}
		for _, sb := range list {
			if err := m.RemoveSandbox(ctx, sb.Name()); err != nil {
				t.Errorf("removing %s: %v", sb.Name(), err)
			}
		}
	})
}

// manifestJSON is a manifest in the canonical field order of the core.
func manifestJSON(size uint64, createdAt string, algorithm, digest string) string {
	integrity := "null"
	if algorithm != "" {
		integrity = fmt.Sprintf(`{"algorithm":%q,"digest":%q}`, algorithm, digest)
	}
	return fmt.Sprintf(`{"schema":1,"format":"raw","fstype":"ext4","image":{"ref":"local/busybox:test","manifest_digest":%q},`+
		`"parent":null,"created_at":%q,"labels":{"origin":"test"},"upper":{"file":"upper.ext4","size_bytes":%d,"integrity":%s},"source_sandbox":"api"}`,
		imageDigest, createdAt, size, integrity)
}

// writeSparseArtifact writes dir/upper.ext4 (sparse, apparent size size)
// and a manifest without integrity.
func writeSparseArtifact(t testing.TB, dir string, size uint64, createdAt string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "upper.ext4"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(manifestJSON(size, createdAt, "", "")), 0o644); err != nil {
		t.Fatal(err)
	}
}

// msbCLI is the `msb` binary cargo built (MSB_CLI overrides).
func msbCLI(t testing.TB) string {
	if p := os.Getenv("MSB_CLI"); p != "" {
		return p
	}
	p := filepath.Join(repoRoot(t), "target", "debug", "msb")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("msb CLI not built (%v): run through `make test-go`", err)
	}
	return p
}

// makeCaseA writes Case A into dir: a 4 GiB sparse upper.ext4 made with
// `mkfs.ext4 -d` over 8 MiB of random content, its integrity recorded with
// msb-sparse-sha256-v1 (digest from `msb upper digest`).
func makeCaseA(t testing.TB, dir string) {
	content := filepath.Join(t.TempDir(), "content")
	if err := os.MkdirAll(content, 0o755); err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 8<<20)
	f, err := os.Open("/dev/urandom")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Read(random); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.WriteFile(filepath.Join(content, "random.bin"), random, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	upper := filepath.Join(dir, "upper.ext4")
	const size = 4 << 30
	if err := os.WriteFile(upper, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(upper, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", content, upper).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	out, err := exec.Command(msbCLI(t), "upper", "digest", "--algorithm", "msb-sparse-sha256-v1", "--json", upper).Output()
	if err != nil {
		t.Fatalf("msb upper digest: %v", err)
	}
	var digest struct{ Algorithm, Digest string }
	if err := json.Unmarshal(out, &digest); err != nil {
		t.Fatal(err)
	}
	manifest := manifestJSON(size, "2026-11-20T10:00:00Z", digest.Algorithm, digest.Digest)
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
}

// tree lists every path under root, to prove a call left nothing behind.
func tree(t testing.TB, root string) []string {
	var out []string
	err := filepath.Walk(root, func(path string, _ os.FileInfo, err error) error {
		if err == nil {
			out = append(out, strings.TrimPrefix(path, root))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// kindOf is the kind of a *m.Error, or "" for anything else.
func kindOf(err error) string {
	if e, ok := err.(*m.Error); ok {
		return e.Kind
	}
	return ""
}
