package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// engineProcs are the engine's long-lived processes: the daemon,
// containerd and its shims, and the fuse-overlayfs mounts of that storage
// driver.
var engineProcs = []string{"dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "fuse-overlayfs"}

// clockTicks is USER_HZ, the unit of /proc times (100 on every Linux
// architecture Go supports).
const clockTicks = 100

// engineLocal reports whether the engine's processes run on this machine (a
// remote engine's do not, and this machine's CPU time says nothing of it).
func engineLocal() bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, p := range stats {
		data, err := os.ReadFile(p)
		if err == nil && slices.Contains(engineProcs, strings.TrimSpace(string(data))) {
			return true
		}
	}
	return false
}

// busyCPU returns the CPU time this machine's cores have spent busy since
// boot (user, nice, system, irq, softirq and steal in /proc/stat): every
// process counts, the engine's short-lived unpackers and the git server as
// much as the agent.
func busyCPU() (time.Duration, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: first line %q, want cpu and 8 counters", line)
	}
	var ticks int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// cpuSampler records the machine's busy CPU time every 50 ms, so that the CPU it
// used up to a moment known only afterwards (a log line's time stamp) can be
// read off.
type cpuSampler struct {
	mu      sync.Mutex
	times   []time.Time
	cpu     []time.Duration
	stop    chan struct{}
	stopped chan struct{}
}

func startCPUSampler() *cpuSampler {
	s := &cpuSampler{stop: make(chan struct{}), stopped: make(chan struct{})}
	sample := func() {
		c, _ := busyCPU() // run checked that it reads
		s.mu.Lock()
		s.times, s.cpu = append(s.times, time.Now()), append(s.cpu, c)
		s.mu.Unlock()
	}
	sample()
	go func() {
		defer close(s.stopped)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				sample()
				return
			case <-t.C:
				sample()
			}
		}
	}()
	return s
}

func (s *cpuSampler) Stop() { close(s.stop); <-s.stopped }

// until returns the CPU time used from the first sample to the last sample
// taken no later than t.
func (s *cpuSampler) until(t time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	last := s.cpu[0]
	for i, at := range s.times {
		if at.After(t) {
			break
		}
		last = s.cpu[i]
	}
	return last - s.cpu[0]
}
