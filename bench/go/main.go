// Command bench-go times the Go SDK on the work of SDK.md "Speed" beside
// the same work done from Rust in the same run (bench-sdk-baseline, on the
// same data): open + verify of Case A (target ≤ 1.1× Rust), List of 10,000
// snapshots including conversion to Go values (≤ 1.5×), 1,000 Get by name
// (≤ 1.5×). Run it with `make bench-go` (release build).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	m "github.com/superradcompany/microsandbox/sdk/go"
)

func main() {
	baseline := flag.String("baseline", "", "path of the bench-sdk-baseline binary")
	data := flag.String("data", "", "data directory (made once)")
	runs := flag.Int("runs", 7, "timed runs per measure (median)")
	flag.Parse()
	if err := run(*baseline, *data, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench-go:", err)
		os.Exit(1)
	}
}

func timeRuns(runs int, work func() error) (time.Duration, error) {
	if err := work(); err != nil {
		return 0, err
	}
	times := make([]time.Duration, runs)
	for i := range times {
		start := time.Now()
		if err := work(); err != nil {
			return 0, err
		}
		times[i] = time.Since(start)
	}
	sort.Slice(times, func(a, b int) bool { return times[a] < times[b] })
	return times[runs/2], nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

func run(baseline, data string, runs int) error {
	if baseline == "" || data == "" {
		return fmt.Errorf("--baseline and --data are required")
	}
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	prep := exec.Command(baseline, "prepare", "--data", data)
	prep.Stdout, prep.Stderr = os.Stderr, os.Stderr
	if err := prep.Run(); err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	out, err := exec.Command(baseline, "measure", "--data", data, "--runs", fmt.Sprint(runs)).Output()
	if err != nil {
		return fmt.Errorf("rust baseline: %w", err)
	}
	var rust struct {
		Verify float64 `json:"verify_case_a_ms"`
		List   float64 `json:"list_10000_ms"`
		Get    float64 `json:"get_1000_ms"`
	}
	if err := json.Unmarshal(out, &rust); err != nil {
		return err
	}

	ctx := m.WithConfig(context.Background(), m.Config{Home: filepath.Join(data, "home")})
	caseA := filepath.Join(data, "case-a")
	verify, err := timeRuns(runs, func() error {
		snap, err := m.Snapshot.Open(ctx, caseA)
		if err != nil {
			return err
		}
		_, err = snap.Verify(ctx)
		return err
	})
	if err != nil {
		return err
	}
	list, err := timeRuns(runs, func() error {
		handles, err := m.Snapshot.List(ctx)
		if err == nil && len(handles) != 10000 {
			err = fmt.Errorf("%d handles", len(handles))
		}
		return err
	})
	if err != nil {
		return err
	}
	gets, err := timeRuns(runs, func() error {
		for i := 0; i < 1000; i++ {
			if _, err := m.Snapshot.Get(ctx, fmt.Sprintf("snap-%05d", i*10)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("Go SDK beside Rust, same data, median of %d runs\n", runs)
	fmt.Printf("%-34s %10s %10s %8s %8s\n", "what", "Go", "Rust", "ratio", "target")
	for _, row := range []struct {
		what   string
		goMs   float64
		rustMs float64
		target float64
	}{
		{"open + verify Case A", ms(verify), rust.Verify, 1.1},
		{"List() of 10,000 (+ conversion)", ms(list), rust.List, 1.5},
		{"1,000 Get by name", ms(gets), rust.Get, 1.5},
	} {
		ratio := row.goMs / row.rustMs
		verdict := "ok"
		if ratio > row.target {
			verdict = "OVER"
		}
		fmt.Printf("%-34s %7.2f ms %7.2f ms %7.2fx %7.1fx %s\n", row.what, row.goMs, row.rustMs, ratio, row.target, verdict)
	}
	return nil
}
