// Command flow is the packaging test's program: built in a fresh module
// outside the checkout against the Go dist directory (a replace
// directive), with no Rust toolchain and no MSB_KERNEL_DIR, it runs the
// typical flow on a real VM with the guest assets shipped in the module,
// then captures that VM whole, resumes it and forks it, and moves the
// snapshot through a registry into a third home.
//
// Usage: flow HOME1 HOME2 HOME3 WORKDIR REGISTRY
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	m "github.com/superradcompany/microsandbox/sdk/go"
)

const image = "local/busybox:flow"

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: flow HOME1 HOME2 HOME3 WORKDIR REGISTRY")
		os.Exit(2)
	}
	home1, home2, home3, work, registry := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	ctx1 := m.WithConfig(context.Background(), m.Config{Home: home1})
	ctx2 := m.WithConfig(context.Background(), m.Config{Home: home2})
	err := run(ctx1, ctx2, work)
	if err == nil {
		ctx3 := m.WithConfig(context.Background(), m.Config{Home: home3})
		err = throughRegistry(ctx1, ctx3, registry)
	}
	// Whatever happened, no VM outlives the program.
	for _, ctx := range []context.Context{ctx1, ctx2} {
		if list, lerr := m.ListSandboxes(ctx); lerr == nil {
			for _, sb := range list {
				_ = m.RemoveSandbox(ctx, sb.Name())
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "flow:", err)
		os.Exit(1)
	}
	fmt.Println("flow: ok")
}

func run(ctx1, ctx2 context.Context, work string) error {
	archive := filepath.Join(work, "busybox.tar")
	if err := m.Image.BuildBusybox(ctx1, "", image, archive); err != nil {
		return err
	}
	if _, err := m.Image.Load(ctx1, archive, image); err != nil {
		return err
	}
	sb, err := m.CreateSandbox(ctx1, "baseline", m.WithImage(image))
	if err != nil {
		return err
	}
	if out, err := sb.Exec(ctx1, "sh", []string{"-c", "echo packaged > /root/note.txt"}); err != nil || out.ExitCode != 0 {
		return fmt.Errorf("write: %v %+v", err, out)
	}
	if err := sb.Stop(ctx1); err != nil {
		return err
	}
	_ = sb.Close()
	snap, err := m.Snapshot.Create(ctx1, "baseline", m.SnapshotCreateOptions{Name: "after-note", RecordIntegrity: true})
	if err != nil {
		return err
	}
	report, err := snap.Verify(ctx1)
	if err != nil {
		return err
	}
	if report.Upper.Kind != "verified" {
		return fmt.Errorf("verify: %+v", report)
	}
	out := filepath.Join(work, "snap.tar.zst")
	if err := m.Snapshot.Export(ctx1, "after-note", out, m.SnapshotExportOptions{WithImage: true}); err != nil {
		return err
	}
	if _, err := m.Snapshot.Import(ctx2, out, ""); err != nil {
		return err
	}
	sb2, err := m.CreateSandbox(ctx2, "worker", m.WithSnapshot("after-note"))
	if err != nil {
		return err
	}
	defer sb2.Close()
	got, err := sb2.Exec(ctx2, "cat", []string{"/root/note.txt"})
	if err != nil {
		return err
	}
	if string(got.Stdout) != "packaged\n" {
		return fmt.Errorf("read back %q", got.Stdout)
	}
	// Full-VM snapshot of the running sandbox, resume, fork, exec in the fork.
	full, err := sb2.SnapshotFull(ctx2)
	if err != nil {
		return err
	}
	if err := sb2.Resume(ctx2); err != nil {
		return err
	}
	fork, err := full.Restore(ctx2, "worker-fork")
	if err != nil {
		return err
	}
	defer fork.Close()
	got, err = fork.Exec(ctx2, "sh", []string{"-c", "cat /root/note.txt; hostname"})
	if err != nil {
		return err
	}
	if string(got.Stdout) != "packaged\nworker-fork\n" {
		return fmt.Errorf("the fork read %q", got.Stdout)
	}
	return nil
}

// throughRegistry pushes the snapshot to the registry and pulls it into
// another home: the same snapshot arrives.
func throughRegistry(from, to context.Context, registry string) error {
	ref := registry + "/snaps/after-note:1"
	if _, err := m.Snapshot.Push(from, "after-note", ref); err != nil {
		return err
	}
	pulled, err := m.Snapshot.Pull(to, ref, m.SnapshotPullOptions{})
	if err != nil {
		return err
	}
	sent, err := m.Snapshot.Get(from, "after-note")
	if err != nil {
		return err
	}
	if pulled.Digest() != sent.Digest() {
		return fmt.Errorf("pulled %s, pushed %s", pulled.Digest(), sent.Digest())
	}
	return nil
}
