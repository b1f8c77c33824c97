// Command bench-go times the Go SDK on the work of SDK.md "Speed" beside
// the same work done from Rust in the same run (bench-sdk-baseline, on the
// same data): open + verify of Case A (target ≤ 1.1× Rust), List of 10,000
// snapshots including conversion to Go values (≤ 1.5×), 1,000 Get by name
// (≤ 1.5×, one after another: sequential latency), and beside it the same
// 1,000 Get issued at once from 1,000 goroutines (concurrent throughput;
// no target, extra information). Run it with `make bench-go` (release
// build); `--json FILE` also writes the medians for `make bench-sdk`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	m "github.com/superradcompany/microsandbox/sdk/go"
)

func main() {
	baseline := flag.String("baseline", "", "path of the bench-sdk-baseline binary")
	data := flag.String("data", "", "data directory (made once)")
	runs := flag.Int("runs", 5, "timed rounds (median)")
	jsonOut := flag.String("json", "", "also write the medians here (for make bench-sdk)")
	flag.Parse()
	if err := run(*baseline, *data, *runs, *jsonOut); err != nil {
		fmt.Fprintln(os.Stderr, "bench-go:", err)
		os.Exit(1)
	}
}

func median(times []float64) float64 {
	sort.Float64s(times)
	return times[len(times)/2]
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// measures is one round of the three measures, in milliseconds.
type measures struct {
	Verify float64 `json:"verify_case_a_ms"`
	List   float64 `json:"list_10000_ms"`
	Get    float64 `json:"get_1000_ms"`
	// GetConcurrent is the same 1,000 Get issued at once.
	GetConcurrent float64 `json:"get_1000_concurrent_ms"`
}

// getName is the name of the i-th of the 1,000 lookups, as on the Rust side.
func getName(i int) string { return fmt.Sprintf("snap-%05d", i*10) }

// perRound is how many timed calls of each measure a round makes (after
// one warm-up), on each side; a round reports their median.
const perRound = 3

// rustRound runs the Rust side's round in its own process.
func rustRound(baseline, data string) (measures, error) {
	var r measures
	out, err := exec.Command(baseline, "measure", "--data", data, "--runs", fmt.Sprint(perRound), "--warmup", "1").Output()
	if err != nil {
		return r, fmt.Errorf("rust baseline: %w", err)
	}
	return r, json.Unmarshal(out, &r)
}

// timedAfterWarmup is the median of perRound timed calls of work after
// one untimed call, as the Rust side does each measure.
func timedAfterWarmup(work func() error) (float64, error) {
	if err := work(); err != nil {
		return 0, err
	}
	times := make([]float64, perRound)
	for i := range times {
		start := time.Now()
		if err := work(); err != nil {
			return 0, err
		}
		times[i] = ms(time.Since(start))
	}
	return median(times), nil
}

// goRound runs the same work through the Go SDK.
func goRound(ctx context.Context, caseA string) (r measures, err error) {
	if r.Verify, err = timedAfterWarmup(func() error {
		snap, err := m.Snapshot.Open(ctx, caseA)
		if err == nil {
			_, err = snap.Verify(ctx)
		}
		return err
	}); err != nil {
		return r, err
	}
	if r.List, err = timedAfterWarmup(func() error {
		handles, err := m.Snapshot.List(ctx)
		if err == nil && len(handles) != 10000 {
			err = fmt.Errorf("%d handles", len(handles))
		}
		return err
	}); err != nil {
		return r, err
	}
	if r.Get, err = timedAfterWarmup(func() error {
		for i := 0; i < 1000; i++ {
			if _, err := m.Snapshot.Get(ctx, getName(i)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return r, err
	}
	r.GetConcurrent, err = timedAfterWarmup(func() error {
		var wg sync.WaitGroup
		errs := make([]error, 1000)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = m.Snapshot.Get(ctx, getName(i))
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		return nil
	})
	return r, err
}

func run(baseline, data string, runs int, jsonOut string) error {
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
	ctx := m.WithConfig(context.Background(), m.Config{Home: filepath.Join(data, "home")})
	caseA := filepath.Join(data, "case-a")
	// Rounds alternate Rust and Go so that both see the same machine load;
	// each side warms each measure up once per round.
	var rust, gos []measures
	for round := 0; round < runs; round++ {
		r, err := rustRound(baseline, data)
		if err != nil {
			return err
		}
		g, err := goRound(ctx, caseA)
		if err != nil {
			return err
		}
		rust, gos = append(rust, r), append(gos, g)
	}
	values := func(ms []measures, f func(measures) float64) []float64 {
		out := make([]float64, len(ms))
		for i, x := range ms {
			out[i] = f(x)
		}
		return out
	}
	pick := func(ms []measures, f func(measures) float64) float64 { return median(values(ms, f)) }
	best := func(ms []measures, f func(measures) float64) float64 { return slices.Min(values(ms, f)) }
	fmt.Printf("Go SDK beside Rust, same data: %d alternating rounds of %d timed calls per measure and side;\n", runs, perRound)
	fmt.Printf("medians over the rounds (best round of each side in brackets)\n")
	fmt.Printf("%-40s %11s %11s %7s %7s %-5s %s\n", "what", "Go", "Rust", "ratio", "target", "", "(best: Go / Rust = ratio)")
	for _, row := range []struct {
		what   string
		field  func(measures) float64
		target float64
	}{
		{"open + verify Case A", func(x measures) float64 { return x.Verify }, 1.1},
		{"List() of 10,000 (+ conversion)", func(x measures) float64 { return x.List }, 1.5},
		{"1,000 Get by name (sequential)", func(x measures) float64 { return x.Get }, 1.5},
		{"1,000 Get by name (concurrent, no target)", func(x measures) float64 { return x.GetConcurrent }, 0},
	} {
		goMs, rustMs := pick(gos, row.field), pick(rust, row.field)
		goBest, rustBest := best(gos, row.field), best(rust, row.field)
		verdict, target := "ok", fmt.Sprintf("%.1fx", row.target)
		if row.target == 0 {
			verdict, target = "", "-"
		} else if goMs/rustMs > row.target {
			verdict = "OVER"
		}
		fmt.Printf("%-40s %8.2f ms %8.2f ms %6.2fx %7s %-5s (%.2f / %.2f = %.2fx)\n", row.what, goMs, rustMs,
			goMs/rustMs, target, verdict, goBest, rustBest, goBest/rustBest)
	}
	if jsonOut == "" {
		return nil
	}
	all := func(ms []measures) measures {
		return measures{
			Verify:        pick(ms, func(x measures) float64 { return x.Verify }),
			List:          pick(ms, func(x measures) float64 { return x.List }),
			Get:           pick(ms, func(x measures) float64 { return x.Get }),
			GetConcurrent: pick(ms, func(x measures) float64 { return x.GetConcurrent }),
		}
	}
	out, err := json.Marshal(map[string]any{"sdk": "Go", "sdk_ms": all(gos), "rust_ms": all(rust)})
	if err != nil {
		return err
	}
	return os.WriteFile(jsonOut, append(out, '\n'), 0o644)
}
