package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"sync/atomic"
	"time"

	"github.com/pullship/pullship/bundler/bundlertest"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/agent/config"
	"github.com/pullship/pullship/agent/engine"
)

// profile applies the current release once more, in this process (agent.New
// and Once on a fresh state directory, the image and container removed
// first), under a CPU profile and an execution trace (FILE.trace: where
// goroutines wait, `go tool trace -pprof=sync FILE.trace`); a heap profile
// (allocations) follows. The engine is wrapped to time LoadImage, the
// rebuilt docker-save stream going into the engine.
func (b *bench) profile(agentToml string) error {
	exec.Command("docker", "rm", "-f", b.container(), b.container()+engine.PrevSuffix).Run()
	if err := b.quiet(b.c.work, "docker", "rmi", "-f", b.imageID); err != nil {
		return err
	}
	data, err := os.ReadFile(agentToml)
	if err != nil {
		return err
	}
	profToml := filepath.Join(b.c.work, "agent-profile.toml")
	data = regexp.MustCompile(`(?m)^state_dir = .*$`).ReplaceAll(data, []byte(fmt.Sprintf("state_dir = %q", filepath.Join(b.c.work, "state-profile"))))
	if err := os.WriteFile(profToml, data, 0o644); err != nil {
		return err
	}
	cfg, err := config.Load(profToml)
	if err != nil {
		return err
	}
	docker, err := engine.NewDocker()
	if err != nil {
		return err
	}
	defer docker.Close()
	logf, err := os.Create(filepath.Join(b.c.work, "agent-profile.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	eng := &timedEngine{Engine: docker}
	a, err := agent.New(cfg, agent.Options{Engine: eng, Logger: slog.New(slog.NewTextHandler(logf, nil))})
	if err != nil {
		return err
	}
	defer a.Close()
	pf, err := os.Create(b.c.cpuProfile)
	if err != nil {
		return err
	}
	defer pf.Close()
	if err := pprof.StartCPUProfile(pf); err != nil {
		return err
	}
	tf, err := os.Create(b.c.cpuProfile + ".trace")
	if err != nil {
		return err
	}
	defer tf.Close()
	if err := trace.Start(tf); err != nil {
		return err
	}
	start := time.Now()
	out, err := a.Once(context.Background())
	wall := time.Since(start)
	trace.Stop()
	pprof.StopCPUProfile()
	if err != nil {
		return fmt.Errorf("in-process once: %w", err)
	}
	if out != agent.Converged {
		return fmt.Errorf("in-process once: %s, want converged", out)
	}
	hf, err := os.Create(b.c.cpuProfile + ".heap")
	if err != nil {
		return err
	}
	defer hf.Close()
	runtime.GC()
	if err := pprof.Lookup("allocs").WriteTo(hf, 0); err != nil {
		return err
	}
	if _, _, err := b.srv.take(10 * time.Second); err != nil {
		return err
	}
	sc := "1 new image (in-process, profiled)"
	b.add(bundlertest.Row(sc, "whole Once", secs(wall), "-", "-", "-", "-"))
	if eng.loadEnd.IsZero() {
		return nil
	}
	b.add(bundlertest.Row(sc, "  start → LoadImage called", secs(eng.loadStart.Sub(start)), "-", "-", "-", "-"))
	b.add(bundlertest.Row(sc, "  LoadImage (rebuild → dockerd)", secs(eng.loadEnd.Sub(eng.loadStart)), "-", "-", "-", "-"))
	b.add(bundlertest.Row(sc, "  stream into the engine", fmt.Sprintf("%s at %.0f MiB/s", mib(eng.read.Load()),
		float64(eng.read.Load())/(1<<20)/eng.loadEnd.Sub(eng.loadStart).Seconds()), "-", "-", "-", "-"))
	fmt.Printf("CPU profile: %s (go tool pprof -top %s), allocations: %s.heap\n", b.c.cpuProfile, b.c.cpuProfile, b.c.cpuProfile)
	return nil
}

// timedEngine times the one LoadImage of a pass and counts its bytes.
type timedEngine struct {
	engine.Engine
	loadStart, loadEnd time.Time
	read               atomic.Int64
}

func (e *timedEngine) LoadImage(ctx context.Context, r io.Reader, wantID string, opts engine.LoadOptions) error {
	e.loadStart = time.Now()
	err := e.Engine.LoadImage(ctx, &countingReader{r: r, n: &e.read}, wantID, opts)
	e.loadEnd = time.Now()
	return err
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
