package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Runner runs one command inside the service's container. The agent adapts
// container exec to it. exitCode is the command's exit status; err is set
// only when the command could not be run or did not finish within timeout.
// Implementations should cap out (Parse rejects more than MaxOutput bytes).
type Runner interface {
	Exec(ctx context.Context, argv []string, timeout time.Duration) (out []byte, exitCode int, err error)
}

// Spec says how to read and repair one node's cluster membership.
type Spec struct {
	Show   []string   // e.g. ["vmq-admin", "cluster", "show", "--format=json"]
	Format string     // Parse format of Show's output: "vmq-table", "vmq-json" or "auto"
	Join   [][]string // fully rendered join commands, one per peer, in preference order
	Self   string     // this node's name as it appears in the view, e.g. "VerneMQ@10.0.0.1"

	// Timeout bounds each command; 0 means DefaultTimeout.
	Timeout time.Duration
}

// DefaultTimeout bounds one show or join command when Spec.Timeout is 0.
const DefaultTimeout = 30 * time.Second

// View is a node's cluster view. Joined is true when Self is a member
// together with at least one other node; a view holding only Self (or not
// holding Self at all) is not joined.
type View struct {
	Members []Member
	Joined  bool
}

// Running counts the members the node currently reaches.
func (v View) Running() int {
	n := 0
	for _, m := range v.Members {
		if m.Running {
			n++
		}
	}
	return n
}

// ErrNotJoined is returned (wrapped, with the last failure) by Ensure when
// every round of join attempts failed.
var ErrNotJoined = errors.New("node did not join the cluster")

// Check runs spec.Show and parses its output into a View.
func Check(ctx context.Context, r Runner, spec Spec) (View, error) {
	if len(spec.Show) == 0 {
		return View{}, errors.New("cluster check: no show command configured")
	}
	out, code, err := r.Exec(ctx, spec.Show, spec.timeout())
	if err != nil {
		return View{}, fmt.Errorf("cluster check %s: run %q: %w", spec.Self, spec.Show[0], err)
	}
	if code != 0 {
		return View{}, fmt.Errorf("cluster check %s: %q exited %d: %s", spec.Self, strings.Join(spec.Show, " "), code, firstLine(out))
	}
	members, err := Parse(spec.Format, out)
	if err != nil {
		return View{}, fmt.Errorf("cluster check %s: %w", spec.Self, err)
	}
	v := View{Members: members}
	for _, m := range members {
		if m.Node == spec.Self {
			v.Joined = len(members) > 1
		}
	}
	return v, nil
}

// Backoff paces Ensure's rounds: round i waits a random duration in
// [d/2, d] with d = min(Initial·2^i, Max) (jitter keeps a fleet of nodes
// that lost the same peer from retrying in lockstep). Zero fields take the
// defaults noted.
type Backoff struct {
	Initial time.Duration // first wait; default 1s
	Max     time.Duration // cap on one wait; default 30s
	Rounds  int           // rounds of join attempts; default 5

	// Sleep waits d or until ctx is done (tests inject a fake clock);
	// default a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Rand returns a number in [0, 1); default math/rand/v2.
	Rand func() float64
}

// delay is the wait after round i (0-based).
func (b Backoff) delay(i int) time.Duration {
	initial, max := b.Initial, b.Max
	if initial <= 0 {
		initial = time.Second
	}
	if max <= 0 {
		max = 30 * time.Second
	}
	d := initial
	for ; i > 0 && d < max; i-- {
		d *= 2
	}
	d = min(d, max)
	rnd := rand.Float64
	if b.Rand != nil {
		rnd = b.Rand
	}
	return d/2 + time.Duration(rnd()*float64(d/2))
}

func (b Backoff) sleep(ctx context.Context, d time.Duration) error {
	if b.Sleep != nil {
		return b.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ensure makes sure the node is in a cluster with others. When Check says it
// is not joined, it runs the join commands one by one until one succeeds
// (exit 0 and a "Done" line), then checks again; a round where no join
// sticks is followed by a backoff wait. With no join commands a node alone
// is left alone (a one-node cluster) and its view is returned without error.
// It returns the last view; after b.Rounds failed rounds the error wraps
// ErrNotJoined and the last failure. ctx cancels waits and commands.
func Ensure(ctx context.Context, r Runner, spec Spec, b Backoff) (View, error) {
	rounds := b.Rounds
	if rounds <= 0 {
		rounds = 5
	}
	var (
		view View
		last error
	)
	for round := 0; round < rounds; round++ {
		if round > 0 {
			if err := b.sleep(ctx, b.delay(round-1)); err != nil {
				return view, fmt.Errorf("cluster join %s: %w (last failure: %v)", spec.Self, err, last)
			}
		}
		v, err := Check(ctx, r, spec)
		if err != nil {
			// The service may still be starting: retry like a failed join.
			last = err
			continue
		}
		view = v
		if v.Joined || len(spec.Join) == 0 {
			return v, nil
		}
		for _, join := range spec.Join {
			if err := runJoin(ctx, r, spec, join); err != nil {
				last = err
				continue
			}
			v, err := Check(ctx, r, spec)
			if err != nil {
				last = err
				continue
			}
			view = v
			if v.Joined {
				return v, nil
			}
			last = fmt.Errorf("%q succeeded but %s is still alone in the view", strings.Join(join, " "), spec.Self)
		}
		if err := ctx.Err(); err != nil {
			return view, fmt.Errorf("cluster join %s: %w (last failure: %v)", spec.Self, err, last)
		}
	}
	return view, fmt.Errorf("cluster join %s: %w after %d rounds: %w", spec.Self, ErrNotJoined, rounds, last)
}

// runJoin runs one join command; success is exit 0 with a "Done" line.
func runJoin(ctx context.Context, r Runner, spec Spec, join []string) error {
	if len(join) == 0 {
		return errors.New("empty join command")
	}
	cmd := strings.Join(join, " ")
	out, code, err := r.Exec(ctx, join, spec.timeout())
	if err != nil {
		return fmt.Errorf("run %q: %w", cmd, err)
	}
	if code != 0 {
		return fmt.Errorf("%q exited %d: %s", cmd, code, firstLine(out))
	}
	for _, line := range bytes.Split(out, []byte("\n")) {
		if string(bytes.TrimSpace(line)) == "Done" {
			return nil
		}
	}
	return fmt.Errorf("%q exited 0 without printing Done: %s", cmd, firstLine(out))
}

func (s Spec) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultTimeout
}

// firstLine quotes the first line of a command's output for an error.
func firstLine(out []byte) string {
	out = bytes.TrimSpace(out)
	if i := bytes.IndexByte(out, '\n'); i >= 0 {
		out = out[:i]
	}
	if len(out) == 0 {
		return "(no output)"
	}
	return fmt.Sprintf("%q", clip(out))
}
