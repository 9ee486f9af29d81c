package engine

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func sendBuffer(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		n, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return n
}

// The transport of NewDocker's client asks for engineSendBuffer on a unix
// socket (the local engine) and leaves TCP connections to the kernel's
// autotuning.
func TestDockerClientSendBuffer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "engine.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	t.Setenv("DOCKER_HOST", "unix://"+sock)
	cli, tr, err := dockerClient()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	c, err := tr.DialContext(context.Background(), "tcp", "ignored:2375")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*net.UnixConn); !ok {
		t.Fatalf("dialled %T, want a unix socket", c)
	}
	// Linux allocates twice what is asked; without CAP_NET_ADMIN, at most
	// twice net.core.wmem_max.
	want := 2 * engineSendBuffer
	if !netAdmin(t) {
		data, err := os.ReadFile("/proc/sys/net/core/wmem_max")
		if err != nil {
			t.Fatal(err)
		}
		max, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil {
			t.Fatal(err)
		}
		want = 2 * min(engineSendBuffer, max)
	}
	if got := sendBuffer(t, c); got != want {
		t.Errorf("unix socket send buffer %d bytes, want %d", got, want)
	}

	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	t.Setenv("DOCKER_HOST", "tcp://"+tl.Addr().String())
	cli2, tr2, err := dockerClient()
	if err != nil {
		t.Fatal(err)
	}
	defer cli2.Close()
	tc, err := tr2.DialContext(context.Background(), "tcp", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	plain, err := net.Dial("tcp", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if got, def := sendBuffer(t, tc), sendBuffer(t, plain); got != def {
		t.Errorf("tcp send buffer %d bytes, want the kernel's %d", got, def)
	}
}

// netAdmin reports whether this process has CAP_NET_ADMIN (bit 12 of its
// effective capabilities), which lets it pass net.core.wmem_max.
func netAdmin(t *testing.T) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if hex, ok := strings.CutPrefix(l, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				t.Fatalf("CapEff %q: %v", hex, err)
			}
			return caps&(1<<12) != 0
		}
	}
	t.Fatal("no CapEff line in /proc/self/status")
	return false
}
