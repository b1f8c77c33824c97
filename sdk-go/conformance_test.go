package microsandbox_test

// Every case of tests/conformance/cases through the public API, as
// tests/conformance/README.md describes (mirrors core/tests/conformance.rs).

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	m "github.com/superradcompany/microsandbox/sdk/go"
)

type confWrite struct {
	Offset  int64  `json:"offset"`
	Pattern string `json:"pattern"`
	Len     int    `json:"len"`
}

type confStep struct {
	Op     string `json:"op"`
	Target *string
	Expect struct {
		Ok *struct {
			Digest    *string `json:"digest"`
			SizeBytes *uint64 `json:"size_bytes"`
			Upper     json.RawMessage
		} `json:"ok"`
		Error *string `json:"error"`
	} `json:"expect"`
	confWrite
}

type confCase struct {
	Name     string `json:"name"`
	Artifact *struct {
		Location *struct {
			Name string `json:"name"`
		} `json:"location"`
		ManifestBytes *string `json:"manifest_bytes"`
		Upper         *struct {
			Size   int64       `json:"size"`
			Writes []confWrite `json:"writes"`
		} `json:"upper"`
	} `json:"artifact"`
	Steps []confStep `json:"steps"`
}

func writeAt(t *testing.T, path string, w confWrite) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := []byte(strings.Repeat(w.Pattern, w.Len/max(len(w.Pattern), 1)+1))[:w.Len]
	if _, err := f.WriteAt(data, w.Offset); err != nil {
		t.Fatal(err)
	}
}

func runCase(t *testing.T, h *testHome, c confCase) error {
	dir := filepath.Join(t.TempDir(), "artifact")
	if a := c.Artifact; a != nil {
		if a.Location != nil {
			dir = filepath.Join(h.snapshotsDir(), a.Location.Name)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if a.ManifestBytes != nil {
			if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(*a.ManifestBytes), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if a.Upper != nil {
			upper := filepath.Join(dir, "upper.ext4")
			if err := os.WriteFile(upper, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(upper, a.Upper.Size); err != nil {
				t.Fatal(err)
			}
			for _, w := range a.Upper.Writes {
				writeAt(t, upper, w)
			}
		}
	}
	checkErr := func(i int, err error, want *string) error {
		switch {
		case want == nil:
			return fmt.Errorf("step %d: unexpected error %v", i, err)
		case kindOf(err) != *want:
			return fmt.Errorf("step %d: want %s, got %v", i, *want, err)
		}
		return nil
	}
	var opened *m.SnapshotArtifact
	for i, step := range c.Steps {
		switch step.Op {
		case "open":
			target := dir
			if step.Target != nil {
				target = *step.Target
			}
			snap, err := m.Snapshot.Open(h.ctx, target)
			if err != nil {
				return checkErr(i, err, step.Expect.Error)
			}
			ok := step.Expect.Ok
			if ok == nil {
				return fmt.Errorf("step %d: want error %v, open succeeded", i, *step.Expect.Error)
			}
			if ok.Digest != nil && *ok.Digest != snap.Digest() {
				return fmt.Errorf("step %d: digest %s != %s", i, snap.Digest(), *ok.Digest)
			}
			if ok.SizeBytes != nil && *ok.SizeBytes != snap.SizeBytes() {
				return fmt.Errorf("step %d: size %d != %d", i, snap.SizeBytes(), *ok.SizeBytes)
			}
			opened = snap
		case "verify":
			if opened == nil {
				return fmt.Errorf("step %d: verify needs a successful open first", i)
			}
			report, err := opened.Verify(h.ctx)
			if err != nil {
				if e := checkErr(i, err, step.Expect.Error); e != nil {
					return e
				}
				continue
			}
			if step.Expect.Ok == nil {
				return fmt.Errorf("step %d: want error %s, verify succeeded", i, *step.Expect.Error)
			}
			var want map[string]string
			if err := json.Unmarshal(step.Expect.Ok.Upper, &want); err != nil {
				t.Fatal(err)
			}
			got := map[string]string{"kind": report.Upper.Kind}
			if report.Upper.Kind == "verified" {
				got["algorithm"], got["digest"] = report.Upper.Algorithm, report.Upper.Digest
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("step %d: upper %v != %v", i, got, want)
			}
		case "write_upper":
			writeAt(t, filepath.Join(dir, "upper.ext4"), step.confWrite)
		case "delete_upper":
			if err := os.Remove(filepath.Join(dir, "upper.ext4")); err != nil {
				t.Fatal(err)
			}
		default:
			return fmt.Errorf("unknown op %s", step.Op)
		}
	}
	return nil
}

func TestEveryConformanceCasePasses(t *testing.T) {
	casesDir := filepath.Join(repoRoot(t), "tests", "conformance", "cases")
	files, err := filepath.Glob(filepath.Join(casesDir, "*.json"))
	if err != nil || len(files) < 3 {
		t.Fatalf("case files missing in %s: %v %v", casesDir, files, err)
	}
	sort.Strings(files)
	h := newHome(t)
	ran := 0
	for _, file := range files {
		var doc struct {
			Format string     `json:"format"`
			Cases  []confCase `json:"cases"`
		}
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Format != "microsandbox-conformance-v1" {
			t.Fatalf("%s: format %q", file, doc.Format)
		}
		for _, c := range doc.Cases {
			if err := runCase(t, h, c); err != nil {
				t.Errorf("%s / %s: %v", filepath.Base(file), c.Name, err)
			}
			ran++
		}
	}
	if ran < 58 {
		t.Fatalf("only %d cases ran", ran)
	}
	t.Logf("%d conformance cases ran", ran)
}
