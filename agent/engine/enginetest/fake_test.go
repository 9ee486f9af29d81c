package enginetest_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pullship/pullship/agent/engine"
	"github.com/pullship/pullship/agent/engine/enginetest"
)

func TestFake(t *testing.T) {
	ctx := t.Context()
	f := enginetest.NewFake()
	var tarball bytes.Buffer
	id, err := enginetest.WriteImage(&tarball, enginetest.PingImage([]byte("not run by the fake"), "fake"))
	if err != nil {
		t.Fatal(err)
	}
	other := "sha256:" + string(bytes.Repeat([]byte("0"), 64))
	var mm *engine.ImageMismatchError
	if err := f.LoadImage(ctx, bytes.NewReader(tarball.Bytes()), other, engine.LoadOptions{}); !errors.As(err, &mm) {
		t.Fatalf("load with wrong ID: %v", err)
	}
	if err := f.LoadImage(ctx, bytes.NewReader(tarball.Bytes()), id, engine.LoadOptions{}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.HasImage(ctx, id); !ok {
		t.Fatal("image missing after load")
	}

	evctx, cancel := context.WithCancel(ctx)
	events, errs := f.Events(evctx)
	f.ExecFunc = enginetest.PingsrvExec
	spec := engine.ContainerSpec{Name: "n1", Image: id, Labels: map[string]string{engine.LabelNode: "n1"}}
	if _, err := f.Run(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Run(ctx, spec); err == nil {
		t.Fatal("duplicate name accepted")
	}
	if ev := <-events; ev.Action != "start" || ev.Name != "n1" {
		t.Fatalf("event %+v", ev)
	}
	if res, err := f.Exec(ctx, "n1", []string{"/pingsrv", "ping"}, time.Second); err != nil || string(res.Output) != "pong\n" {
		t.Fatalf("exec = %q, %v", res.Output, err)
	}
	if res, err := f.Exec(ctx, "n1", []string{"pingsrv", "exit", "3"}, time.Second); err != nil || res.ExitCode != 3 {
		t.Fatalf("exec exit 3 through PATH=/ = %d %q, %v", res.ExitCode, res.Output, err)
	}
	// As through runc: a program the image lacks is exit code 126, not an error.
	if res, err := f.Exec(ctx, "n1", []string{"/nonexistent"}, time.Second); err != nil || res.ExitCode != 126 {
		t.Fatalf("exec of a missing program = %d %q, %v", res.ExitCode, res.Output, err)
	}
	if res, err := f.Exec(ctx, "n1", []string{"/pingsrv", "spew", "100000"}, time.Second); err != nil || len(res.Output) != engine.MaxExecOutput || !res.Truncated {
		t.Fatalf("exec spew = %d bytes truncated=%v %v", len(res.Output), res.Truncated, err)
	}
	if _, err := f.Exec(ctx, "n1", []string{"/pingsrv", "sleep"}, 50*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("exec sleep = %v, want a timeout", err)
	}
	if err := f.EnsureNetwork(ctx, "net", "10.99.0.0/24"); err != nil {
		t.Fatal(err)
	}
	if err := f.ConnectNetwork(ctx, "net", "n1", "10.99.0.5"); err != nil {
		t.Fatal(err)
	}
	if err := f.Restart(ctx, "n1", time.Second); err != nil {
		t.Fatal(err)
	}
	if ip, ok, _ := f.Connected(ctx, "n1", "net"); !ok || ip != "10.99.0.5" {
		t.Fatalf("address after restart = %q %v", ip, ok)
	}
	if err := f.RemoveImage(ctx, id); err == nil {
		t.Fatal("removed an image in use")
	}
	if err := f.Rename(ctx, "n1", "n1"+engine.PrevSuffix); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := f.Inspect(ctx, "n1"); ok {
		t.Fatal("old name present after rename")
	}
	f.Fail = func(method, object string) error {
		if method == "Start" {
			return errors.New("boom")
		}
		return nil
	}
	if err := f.Start(ctx, "n1"+engine.PrevSuffix); err == nil {
		t.Fatal("fault injection ignored")
	}
	cancel()
	for range events {
	}
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("events error %v", err)
	}
}
