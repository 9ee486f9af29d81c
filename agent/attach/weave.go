package attach

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

// MaxToolOutput caps what is read from an attachment tool's stdout or
// stderr; the rest is discarded.
const MaxToolOutput = 64 << 10

// Weave drives the Weave Net CLI (`weave ps`, `weave attach`).
type Weave struct {
	// Path is the weave executable; default "weave" from $PATH.
	Path string
	// Env, when non-nil, is the command's environment (as for exec.Cmd).
	Env []string
	// Timeout bounds one weave command; default 30s.
	Timeout time.Duration
}

// PSEntry is one line of `weave ps`: the container (12-hex id prefix, or a
// name such as "weave:expose"), its MAC on the weave bridge and its
// addresses (none when weave lost them).
type PSEntry struct {
	Container string
	MAC       string
	Addresses []netip.Prefix
}

var psNameRE = regexp.MustCompile(`^(?:[0-9a-f]{12}|weave:expose|[a-zA-Z0-9][a-zA-Z0-9_.-]*)$`)

var macRE = regexp.MustCompile(`^(?:[0-9a-f]{2}:){5}[0-9a-f]{2}$`)

// MaxPSLines bounds how many lines ParsePS accepts.
const MaxPSLines = 4096

// ParsePS parses `weave ps` output: one line per container,
// `<id12 or name> <mac> [<cidr>...]`, fields separated by single spaces.
// Empty output (a stopped or unknown container) yields no entries. Anything
// else — a bad MAC, an address without prefix, stray spaces — is an error.
func ParsePS(out []byte) ([]PSEntry, error) {
	if len(out) > MaxToolOutput {
		return nil, fmt.Errorf("parse weave ps: %d bytes exceeds %d", len(out), MaxToolOutput)
	}
	text := strings.TrimSuffix(string(out), "\n")
	if text == "" {
		return nil, nil
	}
	lines := strings.Split(text, "\n")
	if len(lines) > MaxPSLines {
		return nil, fmt.Errorf("parse weave ps: %d lines exceeds %d", len(lines), MaxPSLines)
	}
	entries := make([]PSEntry, 0, len(lines))
	for i, line := range lines {
		f := strings.Split(line, " ")
		if len(f) < 2 {
			return nil, fmt.Errorf("parse weave ps: line %d: want `<container> <mac> [<cidr>...]`, got %q", i+1, clip([]byte(line)))
		}
		if !psNameRE.MatchString(f[0]) {
			return nil, fmt.Errorf("parse weave ps: line %d: invalid container %q", i+1, clip([]byte(f[0])))
		}
		if !macRE.MatchString(f[1]) {
			return nil, fmt.Errorf("parse weave ps: line %d: invalid MAC %q", i+1, clip([]byte(f[1])))
		}
		e := PSEntry{Container: f[0], MAC: f[1]}
		for _, c := range f[2:] {
			p, err := netip.ParsePrefix(c)
			if err != nil || p.String() != c {
				return nil, fmt.Errorf("parse weave ps: line %d: invalid address %q", i+1, clip([]byte(c)))
			}
			e.Addresses = append(e.Addresses, p)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// Check runs `weave ps <container>`: Attached when it lists an address.
func (w Weave) Check(ctx context.Context, container string) (Attachment, error) {
	if err := checkContainer(container); err != nil {
		return Attachment{}, err
	}
	a, _, err := w.ps(ctx, container)
	if err != nil {
		return Attachment{}, fmt.Errorf("weave check %s: %w", container, err)
	}
	return a, nil
}

// ps returns the attachment and whether weave lists the container at all.
func (w Weave) ps(ctx context.Context, container string) (Attachment, []netip.Prefix, error) {
	out, err := w.run(ctx, "ps", container)
	if err != nil {
		return Attachment{}, nil, err
	}
	entries, err := ParsePS(out)
	if err != nil {
		return Attachment{}, nil, err
	}
	if len(entries) > 1 {
		return Attachment{}, nil, fmt.Errorf("weave ps %s listed %d containers, want at most 1", container, len(entries))
	}
	var a Attachment
	var addrs []netip.Prefix
	if len(entries) == 1 {
		addrs = entries[0].Addresses
		for _, p := range addrs {
			a.Addresses = append(a.Addresses, p.String())
		}
		if len(a.Addresses) > 0 {
			a.Address, a.Attached = a.Addresses[0], true
		}
	}
	return a, addrs, nil
}

// Ensure runs `weave ps`; when cidr is missing, `weave attach cidr
// container`, then `weave ps` again to verify. Attachment.Address is cidr
// once attached.
func (w Weave) Ensure(ctx context.Context, container, cidr string) (Attachment, error) {
	if err := checkContainer(container); err != nil {
		return Attachment{}, err
	}
	want, err := parseCIDR(cidr)
	if err != nil {
		return Attachment{}, fmt.Errorf("weave attach %s: %w", container, err)
	}
	a, addrs, err := w.ps(ctx, container)
	if err != nil {
		return Attachment{}, fmt.Errorf("weave attach %s: %w", container, err)
	}
	if hasPrefix(addrs, want) {
		a.Address, a.Attached = want.String(), true
		return a, nil
	}
	out, err := w.run(ctx, "attach", want.String(), container)
	if err != nil {
		return Attachment{}, fmt.Errorf("weave attach %s %s: %w", want, container, err)
	}
	if !hasField(out, want.Addr().String()) {
		return Attachment{}, fmt.Errorf("weave attach %s %s: printed %q, not the address", want, container, clip(bytes.TrimSpace(out)))
	}
	a, addrs, err = w.ps(ctx, container)
	if err != nil {
		return Attachment{}, fmt.Errorf("weave attach %s %s: verify: %w", want, container, err)
	}
	if !hasPrefix(addrs, want) {
		// Raced with a restart or stop: the caller retries on the next start.
		return a, fmt.Errorf("weave attach %s %s: weave ps does not list the address after attaching (container restarted?)", want, container)
	}
	a.Address, a.Attached = want.String(), true
	return a, nil
}

// hasField reports whether out, split on white space, holds s.
func hasField(out []byte, s string) bool {
	for _, f := range bytes.Fields(out) {
		if string(f) == s {
			return true
		}
	}
	return false
}

func hasPrefix(list []netip.Prefix, p netip.Prefix) bool {
	for _, x := range list {
		if x == p {
			return true
		}
	}
	return false
}

// Messages of the real weave script that map to sentinel errors.
var (
	notRunningRE = regexp.MustCompile(`container \S+ not running|No such container`)
	routerDownRE = regexp.MustCompile(`bridge "weave" not present; did you launch weave\?|weave container is not present`)
)

// run runs weave with args; stdout is returned, a failure carries the first
// line of stderr (or stdout) and wraps a sentinel when one applies.
func (w Weave) run(ctx context.Context, args ...string) ([]byte, error) {
	timeout := w.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	path := w.Path
	if path == "" {
		path = "weave"
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = w.Env
	// An endless writer is killed at once instead of at the timeout.
	stdout := &capped{max: MaxToolOutput, onOver: cancel}
	stderr := &capped{max: MaxToolOutput, onOver: cancel}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if stdout.over || stderr.over {
		return nil, fmt.Errorf("weave %s: output exceeds %d bytes", args[0], MaxToolOutput)
	}
	if err == nil {
		return stdout.buf.Bytes(), nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("weave %s: %w", args[0], ctx.Err())
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		return nil, fmt.Errorf("run weave: %w", err)
	}
	msg := bytes.TrimSpace(stderr.buf.Bytes())
	if len(msg) == 0 {
		msg = bytes.TrimSpace(stdout.buf.Bytes())
	}
	if i := bytes.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	switch {
	case routerDownRE.Match(msg):
		return nil, fmt.Errorf("weave %s: %s: %w (hint: run `weave launch <peers>` on this host)", args[0], clip(msg), ErrRouterDown)
	case notRunningRE.Match(msg):
		return nil, fmt.Errorf("weave %s: %s: %w", args[0], clip(msg), ErrNotRunning)
	}
	return nil, fmt.Errorf("weave %s: exit %d: %s", args[0], exitErr.ExitCode(), clip(msg))
}

// capped is a bounded output buffer: it keeps the first max bytes, and on
// more it records the overflow and calls onOver.
type capped struct {
	buf    bytes.Buffer
	max    int
	over   bool
	onOver func()
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room < len(p) {
		if !c.over && c.onOver != nil {
			c.onOver()
		}
		c.over = true
		c.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return c.buf.Write(p)
}

var _ io.Writer = (*capped)(nil)
