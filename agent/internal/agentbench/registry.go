package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pullship/pullship/bundler/shared/repo/gittest"
)

// registry is the reference registry (distribution's `registry serve`) on
// loopback with filesystem storage in its own directory, behind a counting
// proxy: the engine is given the proxy's address, so every byte docker push
// and docker pull move is counted. The engine allows a registry on
// 127.0.0.0/8 without TLS.
type registry struct {
	cmd    *exec.Cmd
	exited chan struct{}
	dir    string
	proxy  *gittest.Proxy
}

// startRegistry runs bin with its storage and configuration in dir (a new
// directory, removed by Close); its log goes to log.
func startRegistry(bin, dir string, env []string, log io.Writer) (*registry, error) {
	if err := os.MkdirAll(filepath.Join(dir, "storage"), 0o755); err != nil {
		return nil, err
	}
	// The registry takes an address, not a listener: pick a free port.
	// Another process could take it in between; then the start fails
	// clearly below.
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := pl.Addr().String()
	pl.Close()
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: pullship-bench
`, filepath.Join(dir, "storage"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	r := &registry{dir: dir, exited: make(chan struct{})}
	r.cmd = exec.Command(bin, "serve", cfgPath)
	// No telemetry exporter: nothing leaves loopback.
	r.cmd.Env = append(env, "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none")
	r.cmd.Stdout, r.cmd.Stderr = log, log
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start registry: %w", err)
	}
	go func() { r.cmd.Wait(); close(r.exited) }()
	if err := r.ready(addr, 30*time.Second); err != nil {
		r.cmd.Process.Kill()
		<-r.exited
		return nil, err
	}
	if r.proxy, err = gittest.NewProxy(addr); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// ready waits until the registry answers GET /v2/ with 200.
func (r *registry) ready(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		select {
		case <-r.exited:
			return fmt.Errorf("registry on %s exited at start (see its log)", addr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("registry on %s: not ready after %s: %w", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Addr is the proxy's address, the one image references name.
func (r *registry) Addr() string { return r.proxy.Addr }

// Close stops the proxy and the registry and removes its storage.
func (r *registry) Close() {
	if r.proxy != nil {
		r.proxy.Close()
	}
	r.cmd.Process.Kill()
	<-r.exited
	os.RemoveAll(r.dir)
}

// wire is what a proxy counted over one step.
type wire struct {
	conns    int64
	up, down int64
}

func (w wire) total() int64 { return w.up + w.down }

// mark returns a function that reports what passed through p since mark
// was called.
func mark(p *gittest.Proxy) func() wire {
	since := p.Mark()
	return func() wire {
		t := since()
		return wire{t.Conns, t.Up, t.Down}
	}
}

// fileServer serves one file to every connection (the sending host of a
// `docker save | zstd | ssh host 'zstd -d | docker load'` pipe), behind a
// counting proxy.
type fileServer struct {
	l     net.Listener
	path  atomic.Value // string
	proxy *gittest.Proxy
}

func newFileServer() (*fileServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &fileServer{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				f, err := os.Open(s.path.Load().(string))
				if err != nil {
					return
				}
				defer f.Close()
				io.Copy(c, f)
			}()
		}
	}()
	if s.proxy, err = gittest.NewProxy(l.Addr().String()); err != nil {
		l.Close()
		return nil, err
	}
	return s, nil
}

func (s *fileServer) serve(path string) { s.path.Store(path) }

// Port is the proxy's port, for bash's /dev/tcp/127.0.0.1/PORT.
func (s *fileServer) Port() string {
	_, port, _ := net.SplitHostPort(s.proxy.Addr)
	return port
}

func (s *fileServer) Close() {
	s.proxy.Close()
	s.l.Close()
}

// rssSampler records the peak resident set of one process (the engine's
// daemon: docker pull and docker load do their work there, not in the CLI)
// every 20 ms, from /proc/PID/status.
type rssSampler struct {
	pid     int
	peak    atomic.Int64 // KiB
	stop    chan struct{}
	stopped chan struct{}
}

// dockerdPID is the local engine daemon's process id, or 0.
func dockerdPID() int {
	comms, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, p := range comms {
		data, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(data)) == "dockerd" {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	return 0
}

// vmRSS is VmRSS of pid in KiB.
func vmRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range bytes.Split(data, []byte("\n")) {
		if v, ok := bytes.CutPrefix(l, []byte("VmRSS:")); ok {
			f := strings.Fields(string(v))
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, errors.New("no VmRSS line")
}

// sampleRSS starts sampling pid (0: samples nothing, Stop returns 0).
func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{pid: pid, stop: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(s.stopped)
		if pid == 0 {
			<-s.stop
			return
		}
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if k, err := vmRSS(pid); err == nil && k > s.peak.Load() {
				s.peak.Store(k)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends sampling and returns the peak in KiB.
func (s *rssSampler) Stop() int64 {
	close(s.stop)
	<-s.stopped
	return s.peak.Load()
}

// procCPU is the CPU time pid and the children it reaped have used (utime,
// stime, cutime and cstime of /proc/PID/stat); 0 for pid 0.
func procCPU(pid int) (time.Duration, error) {
	if pid == 0 {
		return 0, nil
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count fields
	// from the last ")". Field 3 (state) is then the first; utime is 14.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 15 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(f))
	}
	var ticks int64
	for _, v := range f[11:15] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// hasChildren reports whether pid has a child process (not yet reaped):
// one whose /proc/N/stat names pid as its parent.
func hasChildren(pid int) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		data, err := os.ReadFile(p)
		i := bytes.LastIndexByte(data, ')')
		if err != nil || i < 0 {
			continue
		}
		if f := strings.Fields(string(data[i+1:])); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			return true
		}
	}
	return false
}
