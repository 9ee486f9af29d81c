package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// engineProcs are the processes whose CPU time is the engine's: the daemon,
// containerd and its shims, and the fuse-overlayfs mounts of that storage
// driver.
var engineProcs = []string{"dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "fuse-overlayfs"}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on every
// Linux architecture Go supports).
const clockTicks = 100

// engineCPU returns the CPU time (user + system) the engine's processes
// have used so far, and whether any was found (a remote engine is not).
func engineCPU() (time.Duration, bool) {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var ticks int64
	found := false
	for _, p := range stats {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(data)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		comm := s[open+1 : end]
		match := false
		for _, n := range engineProcs {
			match = match || comm == n
		}
		if !match {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 13 {
			continue
		}
		// Fields 14 and 15 of stat (utime, stime), 12 and 13 after the comm.
		u, err1 := strconv.ParseInt(f[11], 10, 64)
		st, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		ticks += u + st
		found = true
	}
	return time.Duration(ticks) * time.Second / clockTicks, found
}

// cpuSampler records the engine's CPU time every 50 ms, so that the CPU it
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
		c, _ := engineCPU()
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
