package main

import (
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// The proxy's counts are the bench's bytes on the wire: each direction
// exactly, and complete as soon as the client has read what it got.
func TestCountingProxyCountsEveryByte(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const up, down = 300_001, 1<<20 + 7
	got := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
		c.Write(bytes.Repeat([]byte{'d'}, down))
	}()
	p, err := newCountingProxy(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	count := p.mark()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(bytes.Repeat([]byte{'u'}, up)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	n, err := io.Copy(io.Discard, c)
	if err != nil || n != down {
		t.Fatalf("client read %d bytes (%v), want %d", n, err, down)
	}
	if n := <-got; n != up {
		t.Fatalf("server read %d bytes, want %d", n, up)
	}
	w := count()
	if w.up != up || w.down != down || w.conns != 1 {
		t.Errorf("proxy counted %+v, want 1 connection, %d up, %d down", w, up, down)
	}
}

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
