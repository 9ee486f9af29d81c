package main

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestProcCPUAndChildren(t *testing.T) {
	// This process's CPU time grows while it works.
	c0, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for x := 0; ; x++ {
		c, err := procCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if c > c0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time stayed at %s for a minute of work", c)
		}
		for i := 0; i < 1e6; i++ {
			x ^= i
		}
	}
	if c, err := procCPU(0); c != 0 || err != nil {
		t.Errorf("procCPU(0) = %s, %v; want 0, nil", c, err)
	}

	if hasChildren(os.Getpid()) {
		t.Fatal("a child before any was started")
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if !hasChildren(os.Getpid()) {
		t.Error("the running sleep is not seen as a child")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if hasChildren(os.Getpid()) {
		t.Error("a child after the only one was reaped")
	}
}
