package microsandbox_test

// The Go reference page is the contract: every Go example on it compiles
// against this package (extracted, wrapped, `go vet`ed), and every method
// signature it shows is the package's own (checked as a typed method
// value). A copy of the page lives in internal/reference so that a fresh
// clone is self-contained; it must equal ../shared/seeds/ when present.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

const modulePath = "github.com/superradcompany/microsandbox/sdk/go"

func sdkDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

func referencePage(t *testing.T) string {
	data, err := os.ReadFile(filepath.Join(sdkDir(), "internal", "reference", "snapshots-go.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestTheReferenceCopyMatchesTheSharedSeed(t *testing.T) {
	shared := filepath.Join(sdkDir(), "..", "..", "shared", "seeds", "snapshots-go.txt")
	want, err := os.ReadFile(shared)
	if os.IsNotExist(err) {
		t.Skip("no ../shared/seeds here (a fresh clone): the copy stands alone")
	}
	if err != nil {
		t.Fatal(err)
	}
	if referencePage(t) != string(want) {
		t.Fatalf("internal/reference/snapshots-go.txt differs from %s", shared)
	}
}

var (
	codeLine      = regexp.MustCompile(`^(import |//|_ = |\s+\S|[A-Za-z_]\w*(, [A-Za-z_]\w*)* :?= |if |for |return\b|fmt\.|\}|\))`)
	signatureLine = regexp.MustCompile(`^func \(([^)]*)\) (\w+)\((.*?)\) ?(.*)$`)
	declaration   = regexp.MustCompile(`^\s*(?:for\s+)?([A-Za-z_]\w*(?:, [A-Za-z_]\w*)*) :=`)
	packageType   = regexp.MustCompile(`(^|[^.\w])((?:Snapshot|Sandbox)\w*)\b`)
)

// extractGo splits the page into example fragments and signature lines.
func extractGo(page string) (fragments [][]string, signatures []string) {
	var current []string
	flush := func() {
		for len(current) > 0 && strings.TrimSpace(current[len(current)-1]) == "" {
			current = current[:len(current)-1]
		}
		if len(current) > 0 {
			fragments = append(fragments, current)
		}
		current = nil
	}
	for _, line := range strings.Split(page, "\n") {
		switch {
		case signatureLine.MatchString(line):
			flush()
			signatures = append(signatures, line)
		case codeLine.MatchString(line):
			current = append(current, line)
		case strings.TrimSpace(line) == "" && len(current) > 0:
			current = append(current, line)
		default:
			flush()
		}
	}
	flush()
	return fragments, signatures
}

func qualify(s string) string { return packageType.ReplaceAllString(s, "${1}m.${2}") }

// wrapFragment makes a function of a fragment: its free variables become
// parameters, the variables it declares are used.
func wrapFragment(t *testing.T, i int, lines []string) string {
	var body []string
	for _, line := range lines {
		if strings.HasPrefix(line, "import ") {
			if !strings.Contains(line, `m "`+modulePath+`"`) {
				t.Errorf("the reference imports %q, not this module as m", line)
			}
			continue
		}
		body = append(body, line)
	}
	text := strings.Join(body, "\n")
	declared := map[string]bool{}
	var uses []string
	for _, line := range body {
		if d := declaration.FindStringSubmatch(line); d != nil {
			for _, name := range strings.Split(d[1], ", ") {
				if name != "_" && !declared[name] {
					declared[name] = true
					if !strings.HasPrefix(strings.TrimSpace(line), "for ") && line == strings.TrimLeft(line, " \t") {
						uses = append(uses, "_ = "+name)
					}
				}
			}
		}
	}
	freeTypes := map[string]string{"ctx": "context.Context", "sb": "*m.Sandbox", "snap": "*m.SnapshotArtifact", "h": "*m.SnapshotHandle"}
	if strings.Contains(text, "h.Snapshot(") || strings.Contains(text, "h.SnapshotTo(") {
		freeTypes["h"] = "*m.SandboxHandle"
	}
	var params []string
	for _, name := range []string{"ctx", "sb", "snap", "h"} {
		word := regexp.MustCompile(`\b` + name + `\b`)
		for _, line := range body {
			if !word.MatchString(line) {
				continue
			}
			d := declaration.FindStringSubmatch(line)
			if d == nil || !strings.Contains(", "+d[1]+", ", ", "+name+", ") {
				params = append(params, name+" "+freeTypes[name])
			}
			break
		}
	}
	return fmt.Sprintf("func example%d(%s) error {\n%s\n%s\nreturn nil\n}\n", i, strings.Join(params, ", "), text, strings.Join(uses, "\n"))
}

// checkSignature makes a typed method value of a signature line.
func checkSignature(t *testing.T, i int, line string) string {
	s := signatureLine.FindStringSubmatch(line)
	receiver, name, params, results := s[1], s[2], qualify(s[3]), qualify(s[4])
	if receiver == "snapshotFactory" {
		return fmt.Sprintf("var signature%d func(%s) %s = m.Snapshot.%s\n", i, params, results, name)
	}
	fields := strings.Fields(qualify(receiver))
	recvType := fields[len(fields)-1]
	if params != "" {
		params = ", " + params
	}
	return fmt.Sprintf("var signature%d func(recv %s%s) %s = (%s).%s\n", i, recvType, params, results, recvType, name)
}

func TestEveryGoExampleOfTheReferenceCompiles(t *testing.T) {
	fragments, signatures := extractGo(referencePage(t))
	if len(fragments) < 15 || len(signatures) < 30 {
		t.Fatalf("extracted only %d fragments and %d signatures", len(fragments), len(signatures))
	}
	var src bytes.Buffer
	src.WriteString("// Code extracted from the Go reference page by reference_test.go.\n\npackage main\n\n")
	src.WriteString("import (\n\t\"context\"\n\t\"fmt\"\n\t\"time\"\n\n\tm \"" + modulePath + "\"\n)\n\n")
	src.WriteString("var _ = fmt.Sprint\nvar _ context.Context\nvar _ time.Time\n\nfunc main() {}\n\n")
	for i, f := range fragments {
		src.WriteString(wrapFragment(t, i, f) + "\n")
	}
	for i, s := range signatures {
		src.WriteString(checkSignature(t, i, s))
	}
	dir := t.TempDir()
	gomod := fmt.Sprintf("module refcheck\n\ngo 1.22\n\nrequire %s v0.0.0\n\nreplace %s => %s\n", modulePath, modulePath, sdkDir())
	for name, content := range map[string]string{"go.mod": gomod, "main.go": src.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"fmt", "main.go"}, {"vet", "./..."}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s of the extracted examples: %v\n%s\n--- main.go ---\n%s", args[0], err, out, src.String())
		}
	}
	t.Logf("%d examples and %d signatures of the reference compile", len(fragments), len(signatures))
}
